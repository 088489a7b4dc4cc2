"""The JSON API, health check, page headers and error statuses, through TestClient (no network)."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from digitrec.runtime import load_classifier

PREDICT = "/api/v1/predict"


def blank_png(width: int = 200, height: int = 200) -> bytes:
    ok, data = cv2.imencode(".png", np.full((height, width), 255, np.uint8))
    assert ok
    return data.tobytes()


# --- Reading digits --------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", [0, 2, 7, 9], ids=lambda label: f"digit-{label}")
def test_predict_reads_an_uploaded_digit(client: TestClient, digit_png: Callable[[int], bytes], label: int) -> None:
    response = client.post(PREDICT, files={"file": ("digit.png", digit_png(label), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["digit"] == label
    assert body["number"] == str(label)
    assert 0.5 < body["confidence"] <= 1
    assert body["low_confidence"] is False
    [digit] = body["digits"]
    assert digit["digit"] == label
    assert len(digit["probabilities"]) == 10
    assert sum(digit["probabilities"]) == pytest.approx(1, abs=1e-3)
    assert int(np.argmax(digit["probabilities"])) == label
    x, y, w, h = digit["box"]
    assert 0 <= x < x + w <= body["width"] and 0 <= y < y + h <= body["height"]
    assert digit["image"] is None  # only with ?images=true
    assert body["timing_ms"] > 0


@pytest.mark.parametrize(("query", "with_images", "mode"),
                         [("images=yes", True, "digit"), ("images=1&mode=digit", True, "digit"),
                          ("images=off", False, "digit"), ("mode=number&images=false&mode=digit", False, "digit"),
                          ("unrelated=1", False, "digit")],
                         ids=["yes", "one", "off", "last-mode-wins", "unknown-ignored"])
def test_query_parameters_are_read_as_fastapi_reads_them(client: TestClient, digit_png: Callable[[int], bytes],
                                                         query: str, with_images: bool, mode: str) -> None:
    response = client.post(f"{PREDICT}?{query}", files={"file": ("d.png", digit_png(4), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mode"] == mode and body["digit"] == 4
    assert (body["digits"][0]["image"] or "").startswith("data:image/png;base64,") is with_images


def test_predict_takes_the_image_as_a_raw_body(client: TestClient, digit_png: Callable[[int], bytes]) -> None:
    response = client.post(PREDICT, content=digit_png(3), headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    assert response.json()["digit"] == 3


def test_predict_reads_a_number(client: TestClient, number_png: Callable[[str], bytes]) -> None:
    response = client.post(PREDICT, params={"mode": "number"}, files={"file": ("n.png", number_png("4096"))})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["number"] == "4096"
    assert body["digit"] is None
    assert [digit["digit"] for digit in body["digits"]] == [4, 0, 9, 6]
    lefts = [digit["box"][0] for digit in body["digits"]]
    assert lefts == sorted(lefts)


def test_predict_finds_no_digit_in_a_blank_image(client: TestClient) -> None:
    response = client.post(PREDICT, files={"file": ("blank.png", blank_png())})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["digits"] == []
    assert body["digit"] is None and body["number"] is None and body["confidence"] is None
    assert body["low_confidence"] is True


def test_predict_returns_what_the_model_saw(client: TestClient, digit_png: Callable[[int], bytes]) -> None:
    response = client.post(PREDICT, params={"images": "true"}, files={"file": ("d.png", digit_png(5))})
    assert response.status_code == 200, response.text
    url = response.json()["digits"][0]["image"]
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    image = cv2.imdecode(np.frombuffer(base64.b64decode(url[len(prefix):]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert image.shape == (28, 28)
    assert image.max() > 200 and image[0, 0] < 50  # white digit on black, as MNIST


# --- Model, health, page, docs ---------------------------------------------------------------------------


def test_model_describes_the_model(client: TestClient) -> None:
    response = client.get("/api/v1/model")
    assert response.status_code == 200
    body = response.json()
    assert body["runtime"] == "litert"
    assert body["input_format"]["shape"] == [28, 28, 1]
    assert body["classes"] == list(range(10))
    assert isinstance(body["version"], str)
    assert "/" not in str(body.get("architecture") or "")  # no file system paths leak out


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_is_answered_ahead_of_routing_and_dependencies(client: TestClient) -> None:
    """Under load every step waits behind the event loop's other work: /healthz is answered by the outermost
    middleware, so it needs none of the route's dependencies (here, one removed makes the route fail)."""
    routed = client.get("/healthz")
    del client.app.state.classifier  # what the /healthz route's dependency reads
    for method in ("GET", "HEAD"):
        response = client.request(method, "/healthz")
        assert response.status_code == 200
        assert response.content == (routed.content if method == "GET" else b"")
        assert response.headers["content-length"] == routed.headers["content-length"]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_a_prediction_the_server_has_no_room_for_is_refused_ahead_of_the_route(
        client: TestClient, digit_png: Callable[[int], bytes]) -> None:
    """Refusals under a flood cost the event loop next to nothing: answered by the outermost middleware, they
    need none of the route's state (here, removed, so that the route would fail)."""
    admission = client.app.state.admission
    assert admission.work.try_take(admission.work.capacity)  # every recognition slot taken
    served = client.app.state.served
    del client.app.state.served
    try:
        response = client.post(PREDICT, files={"file": ("d.png", digit_png(2), "image/png")})
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert "busy" in response.json()["detail"] and response.headers["x-content-type-options"] == "nosniff"
        client.app.state.served = served
        assert admission.upload_bytes.try_take(admission.upload_bytes.capacity)  # and every upload byte
        too_large = client.post(PREDICT, content=b"\0" * 10_000_001, headers={"content-type": "image/png"})
        assert too_large.status_code == 413  # what it is, busy or not (the route's answer)
        admission.upload_bytes.give(admission.upload_bytes.capacity)
    finally:
        client.app.state.served = served
        admission.work.give(admission.work.capacity)
    assert client.post(PREDICT, files={"file": ("d.png", digit_png(2), "image/png")}).json()["digit"] == 2


def test_page_is_served_with_security_headers(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<canvas" in response.text
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "access-control-allow-origin" not in response.headers
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200


def test_page_script_never_writes_html() -> None:
    from digitrec.server.pages import STATIC_DIR

    script = (STATIC_DIR / "app.js").read_text()
    assert "innerHTML" not in script.replace("never innerHTML", "")
    assert "outerHTML" not in script and "insertAdjacentHTML" not in script and "document.write" not in script


def test_openapi_documents_the_api(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/api/v1/predict"]["post"]
    assert "multipart/form-data" in predict["requestBody"]["content"]
    assert {"413", "415", "422"} <= set(predict["responses"])
    assert "/api/v1/model" in spec["paths"] and "/healthz" in spec["paths"]


def test_cors_is_off_unless_configured(make_client: Callable[..., TestClient]) -> None:
    preflight = {"origin": "https://example.org", "access-control-request-method": "POST"}
    closed = make_client()
    assert "access-control-allow-origin" not in closed.options(PREDICT, headers=preflight).headers
    opened = make_client(cors_origins=("https://example.org",))
    response = opened.options(PREDICT, headers=preflight)
    assert response.headers["access-control-allow-origin"] == "https://example.org"


# --- Model loading ---------------------------------------------------------------------------------------


def test_model_is_loaded_in_lifespan_not_when_the_app_is_built(model_path: Any) -> None:
    from digitrec.server.app import create_app
    from digitrec.server.settings import ServerSettings

    loads: list[Any] = []

    def loader(path: Any) -> Any:
        loads.append(path)
        return load_classifier(path)

    app = create_app(ServerSettings(model_path=model_path), loader)
    assert loads == []
    with TestClient(app) as client:
        assert loads == [model_path]
        assert client.get("/healthz").status_code == 200


# --- Concurrency -----------------------------------------------------------------------------------------


def test_concurrent_requests_get_the_same_answers_as_sequential_ones(
    make_client: Callable[..., TestClient], digit_png: Callable[[int], bytes], number_png: Callable[[str], bytes]
) -> None:
    client = make_client(inference_threads=8, max_queue_wait_s=60)  # a loaded CI machine must not see 503s
    images = [digit_png(label) for label in range(10)] + [number_png("31"), number_png("805"), blank_png()]

    def ask(image: bytes) -> dict[str, Any]:
        response = client.post(PREDICT, files={"file": ("x.png", image)})
        assert response.status_code == 200, response.text
        return {key: value for key, value in response.json().items() if key != "timing_ms"}

    expected = [ask(image) for image in images]
    jobs = images * 6
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(ask, jobs))
    for index, answer in enumerate(answers):
        assert answer == expected[index % len(images)]
    assert [answer["digit"] for answer in expected[:10]] == list(range(10))


# --- Errors: one test per status -------------------------------------------------------------------------


def test_413_for_a_body_over_the_limit(client: TestClient) -> None:
    response = client.post(PREDICT, content=b"\0" * 10_000_001, headers={"content-type": "image/png"})
    assert response.status_code == 413
    assert "10 MB" in response.json()["detail"]


def test_413_for_a_streamed_body_over_the_limit(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_body_bytes=1000)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while reading
        for _ in range(10):
            yield b"\0" * 500

    response = client.post(PREDICT, content=chunks(), headers={"content-type": "image/png"})
    assert response.status_code == 413
    assert response.json()["detail"].startswith("request body over")


def test_413_for_an_image_over_the_pixel_limit(client: TestClient, png_bomb) -> None:
    bomb = png_bomb(8000, 6000)  # 48 megapixels in a file of a few hundred bytes
    response = client.post(PREDICT, files={"file": ("bomb.png", bomb, "image/png")})
    assert response.status_code == 413
    assert "pixels" in response.json()["detail"]


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b"just some text", "text/plain"), (b"%PDF-1.4 not an image", "application/pdf"), (b"\x89PNG\r\n", "image/png")],
    ids=["text", "pdf", "truncated-png"],
)
def test_415_for_something_that_is_not_an_image(client: TestClient, content: bytes, content_type: str) -> None:
    response = client.post(PREDICT, files={"file": ("upload", content, content_type)})
    assert response.status_code == 415
    assert "not an image" in response.json()["detail"]


@pytest.mark.parametrize(
    ("request_args", "message"),
    [
        ({"data": {"other": "x"}, "files": {"upload": ("x.png", b"x")}}, "missing multipart field 'file'"),
        ({"data": {"file": "not a file"}, "files": {"other": ("x.png", b"x")}}, "must be a file"),
        ({"content": b""}, "no image in the request"),
        ({"params": {"mode": "letters"}, "content": b"x"}, "query parameter 'mode'"),
        ({"params": {"images": "perhaps"}, "content": b"x"}, "query parameter 'images'"),
    ],
    ids=["missing-file", "file-as-text", "empty-body", "bad-mode", "bad-images-flag"],
)
def test_422_for_a_missing_image_or_bad_parameters(client: TestClient, request_args: dict[str, Any],
                                                   message: str) -> None:
    response = client.post(PREDICT, **request_args)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, str) and message in detail


class ExplodingClassifier:
    """Loads fine, then fails on every image: stands in for a bug."""

    def __init__(self, inner: Any) -> None:
        self.source = inner.source
        self.warm_up_calls = 2  # the warm-up's one digit: one call, or two when it is unsure and its cuts are read

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        if self.warm_up_calls > 0:
            self.warm_up_calls -= 1
            return np.full((len(images), 10), 0.1, np.float32)
        raise RuntimeError("secret internal state /etc/passwd")


def test_500_is_json_without_internals(make_client: Callable[..., TestClient],
                                       digit_png: Callable[[int], bytes]) -> None:
    client = make_client(loader=lambda path: ExplodingClassifier(load_classifier(path)),
                         raise_server_exceptions=False)
    response = client.post(PREDICT, files={"file": ("d.png", digit_png(1))})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error; the server log has the details"}
    assert "secret" not in response.text and "Traceback" not in response.text


class SlowClassifier:
    def __init__(self, inner: Any, seconds: float) -> None:
        self.source, self.inner, self.seconds = inner.source, inner, seconds

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        time.sleep(self.seconds)
        return self.inner.predict_proba(images)


def test_503_when_a_request_runs_past_the_time_limit(make_client: Callable[..., TestClient],
                                                     digit_png: Callable[[int], bytes]) -> None:
    client = make_client(loader=lambda path: SlowClassifier(load_classifier(path), 0.5), request_timeout_s=0.2)
    started = time.monotonic()
    response = client.post(PREDICT, files={"file": ("d.png", digit_png(1))})
    assert response.status_code == 503
    assert "longer than 0.2 s" in response.json()["detail"]
    assert time.monotonic() - started < 0.45  # answered at the limit, not when the work finished


def test_serving_never_imports_tensorflow(model_path: Any, digit_png: Callable[[int], bytes]) -> None:
    """The CLI, the app and a prediction import neither TensorFlow nor Keras (checked in a fresh interpreter)."""
    code = """if True:
        import sys
        from pathlib import Path
        import digitrec.cli
        from fastapi.testclient import TestClient
        from digitrec.server.app import create_app
        from digitrec.server.settings import ServerSettings
        with TestClient(create_app(ServerSettings(model_path=Path(sys.argv[1])))) as client:
            response = client.post("/api/v1/predict", content=sys.stdin.buffer.read())
            assert response.status_code == 200, response.text
        print(sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras", "tf_keras")))
    """
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", code, str(model_path)], input=digit_png(4),
                            capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert result.stdout.decode().strip() == "[]"


@pytest.mark.parametrize("path", ["/static/../settings.py", "/static/%2e%2e/settings.py", "/static/..%2fapi.py",
                                  "/api/v1/model/../../../etc/passwd"])
def test_no_path_reaches_files_outside_static(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert "ServerSettings" not in response.text and "router" not in response.text
