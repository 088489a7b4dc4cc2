"""The Python API: read digits and numbers from images in your own program.

    import digitrec
    reader = digitrec.Reader()                      # the bundled model; or Reader("my-model")
    result = reader.read("photo.jpg")               # a path, the file's bytes, or a numpy image
    print(result.number, result.confidence)         # "0684" 0.998
    result.to_json()                                # what `digitrec predict --json` prints, less "file"
    results = reader.read_many(paths)               # many images, classifier calls batched across them

A `Reader` is thread-safe: share one between a web framework's threads. `read` returns the library's
`Recognition` (a frozen dataclass), so every field the recognition grows reaches API users, the CLI and
the Ray engine alike. `entry` builds the CLI's JSON object (`file` ... `error`) for one input: `predict`
and the Ray engine both call it, so their outputs cannot drift apart.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from digitrec.imageio import DEFAULT_MAX_PIXELS, ImageError, read_image_file
from digitrec.recognize import DigitResult, Recognition, recognize
from digitrec.runtime import Classifier, Scores, classify, load_classifier

__all__ = ["DigitResult", "ImageError", "ImageSource", "Reader", "Recognition"]

ImageSource: TypeAlias = str | os.PathLike[str] | bytes | bytearray | np.ndarray
# Keys of Recognition.to_json() that describe how it was read, not what was read: not in the CLI's output.
DEBUG_FIELDS = ("steps",)


class Reader:
    """Reads digits and numbers with one model, loaded once (None: the bundled model)."""

    def __init__(self, model: str | os.PathLike[str] | None = None, *,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.classifier: Classifier = load_classifier(None if model is None else Path(model))
        self.max_pixels = max_pixels
        self._blank: dict[str, Any] | None = None

    def read(self, image: ImageSource, mode: str = "auto") -> Recognition:
        """Read one image: a file path, the file's bytes, or an array (H, W) grey / (H, W, 3|4) RGB(A).

        mode: "digit" (all the ink is one digit), "number" (a row of digits) or "auto".
        Raises `ImageError` for data that is not a usable image, OSError for a file that cannot be read.
        """
        return recognize(self._decoded(image), self.classifier, mode, max_pixels=self.max_pixels)

    def read_many(self, images: Iterable[ImageSource], mode: str = "auto", *,
                  batch_size: int = 32) -> list[Recognition]:
        """Read many images; the crops of up to `batch_size` images go to the classifier in one call.

        Results are in input order. The first unreadable image raises (as `read` does); call `read` per
        image to carry on past bad ones.
        """
        sources = list(images)
        if not sources:
            return []
        workers = max(1, min(batch_size, len(sources)))
        batcher = BatchingClassifier(self.classifier, workers)
        queue = iter(enumerate(sources))
        lock = threading.Lock()
        results: list[Recognition | None] = [None] * len(sources)

        def work() -> None:
            try:
                while True:
                    with lock:
                        item = next(queue, None)
                    if item is None:
                        return
                    index, source = item
                    results[index] = recognize(self._decoded(source), batcher, mode, max_pixels=self.max_pixels)
            finally:
                batcher.leave()  # a thread that stops (done or failed) must not hold up the others' batch

        with ThreadPoolExecutor(workers, thread_name_prefix="digitrec-read") as pool:
            futures = [pool.submit(work) for _ in range(workers)]
            for future in futures:
                future.result()  # re-raises the first failure
        return [result for result in results if result is not None]

    def entry(self, name: str, image: ImageSource, mode: str = "auto") -> dict[str, Any]:
        """The CLI's JSON object for one input: `file`, every field of `Recognition.to_json()`, `error`.

        Never raises for a bad input: an unreadable file is an entry with `error` set and empty answers.
        """
        try:
            recognition = self.read(image, mode)
        except (ImageError, OSError) as error:
            return self.error_entry(name, describe_error(error, name))
        return result_entry(name, recognition)

    def error_entry(self, name: str, message: str) -> dict[str, Any]:
        """An entry for an input that could not be read: the same keys as a result, answers empty."""
        if self._blank is None:
            # The keys come from a real (empty) recognition, so fields added to Recognition appear here too.
            fields = recognize(np.ones((8, 8), np.float32), self.classifier, "auto").to_json()
            self._blank = {key: [] if isinstance(value, list) else None
                           for key, value in fields.items() if key not in DEBUG_FIELDS}
        return {"file": name, **self._blank, "error": message}

    def _decoded(self, image: ImageSource) -> bytes | bytearray | np.ndarray:
        if isinstance(image, str | os.PathLike):
            return read_image_file(Path(image), max_pixels=self.max_pixels)
        if isinstance(image, bytes | bytearray | np.ndarray):
            return image
        raise TypeError(f"expected a path, bytes or a numpy array, got {type(image).__name__}")


def result_entry(name: str, recognition: Recognition) -> dict[str, Any]:
    """`file`, then the recognition's JSON fields (less debug ones), then `error` (None)."""
    fields = {key: value for key, value in recognition.to_json().items() if key not in DEBUG_FIELDS}
    return {"file": name, **fields, "error": None}


def describe_error(error: Exception, name: str) -> str:
    """An exception from reading `name` -> a message without the file name repeated in front."""
    message = str(getattr(error, "strerror", None) or error)
    return message.removeprefix(f"{name}: ")


class BatchingClassifier:
    """Gathers the classify calls of `workers` threads into one call of the real classifier.

    Each reading thread calls `predict_scores` once or more per image; the call waits until every
    thread still working is waiting too, then one thread classifies all the waiting crops at once and
    hands each caller its rows. A thread that has no more images calls `leave()`. The recognition
    code stays the same for one image or many: it only sees a classifier.
    """

    def __init__(self, classifier: Classifier, workers: int) -> None:
        self.inner = classifier
        self.source = classifier.source  # decision thresholds are read from the model's metadata
        self._condition = threading.Condition()
        self._working = workers
        self._waiting: list[_Request] = []
        self.batches = 0  # how many real classifier calls were made (for tests and benchmarks)

    def predict_scores(self, images: np.ndarray) -> Scores:
        request = _Request(np.asarray(images))
        with self._condition:
            self._waiting.append(request)
            self._working -= 1
            if self._working == 0:
                self._flush()
            else:
                self._condition.wait_for(lambda: request.done)
            self._working += 1
        if request.error is not None:
            raise request.error
        assert request.scores is not None
        return request.scores

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return self.predict_scores(images).probabilities

    def leave(self) -> None:
        with self._condition:
            self._working -= 1
            if self._working == 0 and self._waiting:
                self._flush()

    def _flush(self) -> None:
        """Classify every waiting request in one batch (called with the lock held, all others waiting)."""
        waiting, self._waiting = self._waiting, []
        try:
            scores = classify(self.inner, np.concatenate([request.images for request in waiting]))
            start = 0
            for request in waiting:
                end = start + len(request.images)
                request.scores = Scores(scores.probabilities[start:end], scores.not_digit[start:end])
                start = end
        except Exception as error:  # every waiting reader gets the failure, none waits forever
            for request in waiting:
                request.error = error
        for request in waiting:
            request.done = True
        self._condition.notify_all()
        self.batches += 1


class _Request:
    def __init__(self, images: np.ndarray) -> None:
        self.images = images  # (n, 28, 28)
        self.scores: Scores | None = None
        self.error: Exception | None = None
        self.done = False
