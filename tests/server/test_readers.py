"""Big images are read in child processes (server/readers.py): the same answers as a thread gives, their CPU
stopped at the request's deadline, and a full big lane refused before a body is read."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw
from test_limits import PREDICT, SlowClassifier, in_background, raw_request, read_status, slow_server, upload_head

from digitrec.imageio import ImageError
from digitrec.recognize import recognize
from digitrec.runtime import load_classifier
from digitrec.server.readers import KILL_GRACE_S, ReaderPool, ReaderTimedOut

__all__ = ["slow_server"]  # the fixture, imported for the tests below


def wait_for_idle_reader(pool: ReaderPool, seconds: float = 180) -> Any:
    deadline = time.monotonic() + seconds
    while not pool._idle:
        assert time.monotonic() < deadline, "no reader process started"
        time.sleep(0.05)
    return pool._idle[0]


def costly_png() -> bytes:
    """A legitimate 30-megapixel RGBA PNG (a stroke, a transparent corner): ~1.2 s of CPU to read, ~200 kB."""
    image = Image.new("RGB", (6000, 5000), (255, 255, 255))
    ImageDraw.Draw(image).line([(2000, 1500), (3000, 3500)], fill=(0, 0, 0), width=60)
    alpha = Image.new("L", image.size, 255)
    ImageDraw.Draw(alpha).rectangle([0, 0, 600, 500], fill=0)
    image.putalpha(alpha)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def test_a_costly_image_still_being_read_at_its_deadline_is_killed(model_path: Path) -> None:
    """A thread would have read it to the end (seconds of CPU after its 503); its child process is killed
    KILL_GRACE_S after the deadline, and a fresh one takes its place."""
    pool = ReaderPool(1)
    try:
        reader = wait_for_idle_reader(pool)
        source = load_classifier(model_path).source
        data = costly_png()
        deadline = time.monotonic() + 0.1
        with pytest.raises(ReaderTimedOut):
            pool.recognize(data, source, "auto", max_pixels=40_000_000, deadline=deadline)
        assert time.monotonic() - deadline < KILL_GRACE_S + 1.0  # within about a second of the deadline
        assert not reader.process.is_alive() and pool.killed == 1
        replacement = wait_for_idle_reader(pool)
        assert replacement is not reader and replacement.alive()
    finally:
        pool.shutdown()


def test_a_child_that_refused_an_image_reads_the_next_one(model_path: Path) -> None:
    """A refusal (415, 413) is an answer like any other: the same child goes back to work (one was dropped,
    alive, and the next image waited ~1 s for a new one to start)."""
    pool = ReaderPool(1)
    try:
        reader = wait_for_idle_reader(pool)
        source = load_classifier(model_path).source
        for _ in range(3):
            with pytest.raises(ImageError):
                pool.recognize(b"not an image", source, "auto", max_pixels=40_000_000,
                               deadline=time.monotonic() + 60)
            assert pool._idle == [reader]
    finally:
        pool.shutdown()
    assert not reader.alive()


def test_a_big_upload_is_read_in_a_child_with_the_same_answer(live_server: str, digit_png: Any,
                                                              model_path: Path) -> None:
    photo = Image.open(io.BytesIO(digit_png(3))).convert("RGB").resize((1200, 1000))
    buffer = io.BytesIO()
    photo.save(buffer, "BMP")  # ~3.6 MB: the big lane, so a child process
    big = buffer.getvalue()
    response = httpx.post(live_server + PREDICT, files={"file": ("b.bmp", big)}, timeout=120)
    assert response.status_code == 200, response.text
    expected = recognize(big, load_classifier(model_path), "auto")
    answer = response.json()
    assert answer["number"] == expected.number and answer["digit"] == expected.digit == 3
    assert answer["confidence"] == pytest.approx(expected.confidence, abs=1e-6)
    assert [d["box"] for d in answer["digits"]] == [list(d.box) for d in expected.digits]


def test_a_full_big_lane_refuses_an_upload_before_its_body_is_sent(slow_server: Any, digit_png: Any) -> None:
    """One big image reading, two waiting: a fourth 5 MB upload is answered 503 from its headers alone,
    rather than read into memory to be refused (or to wait until its deadline)."""
    url, classifier = slow_server(3.0, inference_threads=2)
    assert isinstance(classifier, SlowClassifier)  # not LiteRT: read in threads, the lanes are the same
    photo = Image.open(io.BytesIO(digit_png(1))).convert("RGB").resize((1200, 1000))
    buffer = io.BytesIO()
    photo.save(buffer, "BMP")
    big = buffer.getvalue()
    floods = [in_background(lambda: httpx.post(url + PREDICT, files={"file": ("b.bmp", big)}, timeout=30))
              for _ in range(3)]
    deadline = time.monotonic() + 10
    while classifier.running == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.5)  # the other two are read and queued behind it
    started = time.monotonic()
    with raw_request(url, upload_head(5_000_000)) as sock:  # headers only: not a byte of the body
        status, head = read_status(sock)
    assert status == 503 and b"retry-after: 1" in head.lower() and time.monotonic() - started < 2.0
    # A chunked body has no length to judge its lane by: it is read (up to the limit) and gets its 413.
    chunks = (b"\0" * 500_000 for _ in range(21))  # 10.5 MB
    too_large = httpx.post(url + PREDICT, content=chunks, headers={"content-type": "image/png"}, timeout=30)
    assert too_large.status_code == 413
    classifier.slow = False
    for thread, _ in floods:
        thread.join(30)
