"""The feedback API: corrections stored, paged, shown and deleted; the token rule; hot swap while serving;
kill -9 of a real server during feedback writes loses nothing that was acknowledged."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from digitrec.bundle import default_bundle_dir
from digitrec.registry import Registry
from digitrec.store import open_store


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    return str(tmp_path / "corrections.sqlite3")


def post(client: TestClient | httpx.Client, image: bytes, label: str, **kwargs) -> httpx.Response:
    return client.post("/api/v1/feedback", files={"file": ("d.png", image, "image/png")}, data={"label": label},
                       **kwargs)


def test_a_correction_is_stored_listed_shown_and_deleted(make_client: Callable[..., TestClient], store_path: str,
                                                          digit_png: Callable[[int], bytes]) -> None:
    client = make_client(store=store_path)
    created = post(client, digit_png(7), "1")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["label"] == "1" and body["source"] == "api" and body["n_inputs"] == 1
    assert body["answer"]["number"] == "7"  # what the model said, kept beside the right reading
    assert body["model_version"] is None  # an explicit --model has no registry version
    with open_store(store_path) as store:  # committed before the 201: visible to another connection
        stored = store.get(body["id"])
        assert stored is not None and stored.inputs is not None and stored.inputs.shape == (1, 28, 28)
        assert stored.inputs.max() > 100  # the digit the model saw, not a blank
        assert stored.image == digit_png(7)
    listing = client.get("/api/v1/feedback", params={"limit": 10}).json()
    assert listing["total"] == 1 and [item["id"] for item in listing["items"]] == [body["id"]]
    shown = client.get(f"/api/v1/feedback/{body['id']}").json()
    assert shown["image"].startswith("data:") and len(shown["inputs"]) == 1
    assert client.delete(f"/api/v1/feedback/{body['id']}").status_code == 204
    assert client.get(f"/api/v1/feedback/{body['id']}").status_code == 404
    assert client.delete(f"/api/v1/feedback/{body['id']}").status_code == 404


def test_a_number_keeps_one_input_per_digit_and_the_page_is_recorded(
        make_client: Callable[..., TestClient], store_path: str, number_png: Callable[[str], bytes]) -> None:
    client = make_client(store=store_path)
    created = post(client, number_png("2026"), "2026", headers={"Sec-Fetch-Site": "same-origin"})
    assert created.status_code == 201, created.text
    assert created.json()["n_inputs"] == 4 and created.json()["source"] == "page"
    assert post(client, number_png("31"), "none").json()["label"] == "none"


@pytest.mark.parametrize(
    ("files", "data", "status", "message"),
    [({"file": ("d.png", b"png", "image/png")}, {"label": "seven"}, 422, "label must be"),
     ({"file": ("d.png", b"png", "image/png")}, {}, 422, "missing form field 'label'"),
     (None, {"label": "7"}, 422, "multipart"),
     ({"file": ("d.txt", b"hello, not an image", "text/plain")}, {"label": "7"}, 415, "not an image"),
     ({"file": ("d.png", b"png", "image/png")}, {"label": "7", "mode": "sideways"}, 422, "mode must be")],
    ids=["bad-label", "no-label", "no-file", "not-an-image", "bad-mode"],
)
def test_bad_requests_are_clear_errors(make_client: Callable[..., TestClient], store_path: str, files, data,
                                       status: int, message: str) -> None:
    client = make_client(store=store_path)
    response = client.post("/api/v1/feedback", files=files, data=data)
    assert response.status_code == status
    assert message in response.json()["detail"].lower() or message in response.json()["detail"]
    with open_store(store_path) as store:
        assert store.count() == 0


def test_the_token_rule(make_client: Callable[..., TestClient], store_path: str,
                        digit_png: Callable[[int], bytes]) -> None:
    open_client = make_client(store=store_path)
    assert open_client.get("/api/v1/model").json()["feedback"] == "open"

    exposed = make_client(store=store_path, host="0.0.0.0")
    assert exposed.get("/api/v1/model").json()["feedback"] == "off"  # the page hides its button
    refused = post(exposed, digit_png(3), "3")
    assert refused.status_code == 403 and "--api-token" in refused.json()["detail"]
    assert exposed.get("/api/v1/feedback").status_code == 403

    guarded = make_client(store=store_path, host="0.0.0.0", api_token="s3cret")
    assert guarded.get("/api/v1/model").json()["feedback"] == "token"
    assert post(guarded, digit_png(3), "3").status_code == 401
    assert post(guarded, digit_png(3), "3", headers={"Authorization": "Bearer wrong"}).status_code == 401
    accepted = post(guarded, digit_png(3), "3", headers={"Authorization": "Bearer s3cret"})
    assert accepted.status_code == 201
    assert guarded.delete(f"/api/v1/feedback/{accepted.json()['id']}").status_code == 401
    with open_store(store_path) as store:
        assert store.count() == 1  # only the request with the token got in


# --- a real `digitrec serve` process ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(log: Path, *flags: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with open(log, "wb") as output:  # a file, not a pipe: a chatty server never blocks on a full pipe
        server = subprocess.Popen([sys.executable, "-m", "digitrec", "serve", "--port", str(port),
                                   "--no-access-log", *flags], stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return server, base
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            server.wait()
            raise AssertionError(f"server did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """A registry with v1 (active) and v2: the bundled model twice, v2 marked in its model.json."""
    registry = Registry(tmp_path / "models")
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_dir(), bundle)
    registry.add(bundle)
    text = (bundle / "model.json").read_text().replace('"format"', '"marker": "second", "format"', 1)
    (bundle / "model.json").write_text(text)
    registry.add(bundle)
    registry.promote("v1")
    return registry.root


@pytest.fixture
def served(models_dir: Path, tmp_path: Path) -> Iterator[str]:
    server, base = start_server(tmp_path / "server.log", "--models-dir", str(models_dir), "--store",
                                str(tmp_path / "s.sqlite3"))
    yield base
    server.terminate()
    server.wait(timeout=30)


def wait_for_version(base: str, version: str, within_s: float = 10.0) -> float:
    started = time.monotonic()
    while httpx.get(base + "/api/v1/model").json()["model_version"] != version:
        assert time.monotonic() - started < within_s, f"{version} not served within {within_s} s"
        time.sleep(0.1)
    return time.monotonic() - started


def test_promote_and_rollback_while_answering(served: str, models_dir: Path,
                                              digit_png: Callable[[int], bytes]) -> None:
    assert httpx.get(served + "/api/v1/model").json()["model_version"] == "v1"
    failures: list[str] = []
    versions: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=served, timeout=10) as client:
            while not stop.is_set():
                try:
                    response = client.post("/api/v1/predict", files={"file": ("d.png", digit_png(4), "image/png")})
                    if response.status_code != 200 or response.json()["digit"] != 4:
                        failures.append(f"{response.status_code} {response.text[:200]}")
                    versions.add(response.headers["x-model-version"])
                except httpx.HTTPError as error:
                    failures.append(repr(error))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        subprocess.run([sys.executable, "-m", "digitrec", "models", "promote", "v2", "--models-dir",
                        str(models_dir)], check=True, capture_output=True)
        assert wait_for_version(served, "v2") < 5  # "within a few seconds", no restart
        assert httpx.get(served + "/api/v1/model").json()["feedback"] == "open"
        time.sleep(0.5)
        subprocess.run([sys.executable, "-m", "digitrec", "models", "rollback", "--models-dir", str(models_dir)],
                       check=True, capture_output=True)
        assert wait_for_version(served, "v1") < 5
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert failures == []
    assert versions == {"v1", "v2"}  # each answer says which version gave it


def test_a_correction_records_the_version_that_answered(served: str, models_dir: Path,
                                                        digit_png: Callable[[int], bytes]) -> None:
    with httpx.Client(base_url=served) as client:
        assert post(client, digit_png(2), "2").json()["model_version"] == "v1"
        Registry(models_dir).promote("v2")
        wait_for_version(served, "v2")
        assert post(client, digit_png(2), "2").json()["model_version"] == "v2"


def test_kill_9_during_feedback_writes_loses_nothing_acknowledged(store_url: str, tmp_path: Path,
                                                                   digit_png: Callable[[int], bytes]) -> None:
    server, base = start_server(tmp_path / "server.log", "--store", store_url, "--models-dir", str(tmp_path / "models"))
    acknowledged: list[int] = []
    stop = threading.Event()

    def write() -> None:
        with httpx.Client(base_url=base, timeout=10) as client:
            while not stop.is_set():
                try:
                    response = post(client, digit_png(9), "9")
                except httpx.HTTPError:
                    return  # the server is gone: this write was never acknowledged
                if response.status_code == 201:
                    acknowledged.append(response.json()["id"])

    writers = [threading.Thread(target=write) for _ in range(3)]
    try:
        for writer in writers:
            writer.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 12:
            assert time.monotonic() < deadline, "the server acknowledged too few corrections"
            time.sleep(0.01)
        os.kill(server.pid, signal.SIGKILL)  # writes in flight
    finally:
        stop.set()
        server.kill()
        server.wait(timeout=30)
        for writer in writers:
            writer.join(timeout=30)
    with open_store(store_url) as store:
        stored = {c.id: c.label for c in store.iter_all(with_data=False)}
    assert set(acknowledged) <= set(stored)
    assert all(stored[ident] == "9" for ident in acknowledged)
