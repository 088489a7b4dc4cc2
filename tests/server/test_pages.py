"""pages.py over HTTP: versioned asset URLs with long cache lifetimes, gzip for text, offline /docs and /redoc."""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi.testclient import TestClient

from digitrec.server.pages import IMMUTABLE


def asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:href|src)="(/(?:static|docs-assets)/[^"]+)"', html)


def test_page_names_its_assets_by_content_hash(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-cache"  # the HTML is revalidated on every visit...
    urls = asset_urls(page.text)
    assert {url.split("?")[0] for url in urls} == {"/static/favicon.svg", "/static/style.css", "/static/app.js"}
    for url in urls:  # ...and the files it names are cached for a year under a content-hashed URL
        assert re.search(r"\?v=[0-9a-f]{12}$", url), url
        asset = client.get(url)
        assert asset.status_code == 200
        assert asset.headers["cache-control"] == IMMUTABLE
    assert client.get("/static/app.js").headers["cache-control"] == "no-cache"  # an unversioned URL


def test_page_answers_304_to_its_etag(client: TestClient) -> None:
    etag = client.get("/").headers["etag"]
    again = client.get("/", headers={"if-none-match": etag})
    assert again.status_code == 304
    assert again.content == b""


def test_text_is_gzipped_images_are_not(client: TestClient, digit_png: Callable[[int], bytes]) -> None:
    for url in ["/", asset_urls(client.get("/").text)[-1], "/openapi.json"]:
        response = client.get(url, headers={"accept-encoding": "gzip"})
        assert response.headers.get("content-encoding") == "gzip", url
        assert int(response.headers["content-length"]) < len(response.content) / 2, url
    plain = client.get("/", headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers
    answer = client.post("/api/v1/predict", files={"file": ("d.png", digit_png(3), "image/png")},
                         headers={"accept-encoding": "gzip"})
    assert answer.status_code == 200  # small JSON: under the 1000-byte threshold, sent as is
    assert "content-encoding" not in answer.headers


def test_docs_and_redoc_load_only_from_this_server(client: TestClient) -> None:
    for path, needs in [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")]:
        page = client.get(path)
        assert page.status_code == 200
        assert "http://" not in page.text and "https://" not in page.text  # no CDN
        urls = asset_urls(page.text)
        assert any(needs in url for url in urls)
        for url in urls:
            assert client.get(url).status_code == 200, url
        csp = page.headers["content-security-policy"]
        assert "http" not in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
