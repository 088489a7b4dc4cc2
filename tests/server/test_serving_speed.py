"""What the server does to answer small images faster must not change an answer: OpenCV runs on one thread
per caller in a serving process, and its results (every recognition's JSON) are the same as with its pool."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from fastapi.testclient import TestClient

from digitrec.idx import read_idx
from digitrec.recognize import recognize
from digitrec.runtime import load_classifier


def test_a_serving_app_runs_opencv_on_one_thread(make_client: Callable[..., TestClient]) -> None:
    cv2.setNumThreads(2)
    try:
        client = make_client()
        assert client.get("/healthz").status_code == 200
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(-1)  # OpenCV's default again, for the tests that follow


def test_opencv_threads_change_no_answer(model_path: Path, mnist_dir: Path) -> None:
    classifier = load_classifier(model_path)
    images = list(read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")[:150])
    page = np.full((500, 900), 230, np.uint8)  # a number on a page: big enough for OpenCV to split its work
    cv2.putText(page, "4096", (80, 330), cv2.FONT_HERSHEY_SIMPLEX, 6, 40, 14)
    rng = np.random.default_rng(1)
    images += [page, *(rng.integers(0, 256, (60, 60), dtype=np.uint8) for _ in range(10))]

    def answers() -> list[str]:
        out = []
        for image in images:
            answer = recognize(cv2.imencode(".png", image)[1].tobytes(), classifier).to_json()
            answer.pop("steps")
            out.append(json.dumps(answer))
        return out

    try:
        cv2.setNumThreads(2)
        pooled = answers()
        cv2.setNumThreads(1)
        assert answers() == pooled
    finally:
        cv2.setNumThreads(-1)
    assert json.loads(pooled[-11])["number"] == "4096"
