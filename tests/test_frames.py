"""Digits written in a form's printed boxes: the frames come out of the ink, the digits are read."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from digitrec.frames import remove_frames
from digitrec.recognize import recognize
from digitrec.runtime import load_classifier


def boxed(digits: np.ndarray, *, comb: bool, box: int = 84, size: int = 60, tilt: float = 0.0,
          line: int = 2, touch: bool = False) -> bytes:
    """MNIST digits (28, 28) uint8 written in a row of printed boxes (a comb) or each in its own box ->
    PNG bytes. `touch`: each digit is shifted against its box's left side; `line` 0: no boxes."""
    count = len(digits)
    step = box if comb else box + 16
    width, height = 40 + count * step, box + 40
    page = np.ones((height, width), np.float32)
    for index, digit in enumerate(digits):
        left = 20 + index * step
        ink = cv2.resize(digit.astype(np.float32) / 255, (size, size))
        columns = np.flatnonzero(ink.max(axis=0) > 0.05)
        ink = ink[:, columns[0] : columns[-1] + 1]
        x = left + (2 if touch else (box - ink.shape[1]) // 2)
        y = 20 + (box - size) // 2
        window = page[y : y + size, x : x + ink.shape[1]]
        window[:] = np.minimum(window, 1 - ink)
        if not comb and line:
            cv2.rectangle(page, (left, 20), (left + box, 20 + box), 0.0, line)
    if comb and line:
        cv2.rectangle(page, (20, 20), (20 + count * box, 20 + box), 0.0, line)
        for index in range(1, count):
            cv2.line(page, (20 + index * box, 20), (20 + index * box, 20 + box), 0.0, line)
    if tilt:
        turn = cv2.getRotationMatrix2D((width / 2, height / 2), tilt, 1.0)
        page = cv2.warpAffine(page, turn, (width, height), borderValue=1.0)
    buffer = io.BytesIO()
    Image.fromarray((page * 255).round().astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def pick(mnist_digits, wanted: str) -> np.ndarray:
    """The first MNIST test image of each wanted digit (clear, ordinary ones)."""
    images, labels = mnist_digits
    return np.stack([images[int(np.flatnonzero(labels == int(d))[2])] for d in wanted])


@pytest.mark.parametrize(("wanted", "comb", "tilt", "touch"), [
    ("3507", True, 0.0, False),
    ("1941", True, 1.5, False),  # a scan slightly turned; 1s beside separators
    ("2868", False, 0.0, False),  # each digit in its own box
    ("4", False, -1.0, False),
    ("6209", True, 0.0, True),  # every digit touching its box's side
])
def test_digits_in_printed_boxes_are_read(mnist_digits, wanted: str, comb: bool, tilt: float, touch: bool) -> None:
    result = recognize(boxed(pick(mnist_digits, wanted), comb=comb, tilt=tilt, touch=touch), load_classifier())
    assert result.number == wanted, (result.number, result.reason)


def test_the_frame_goes_and_the_digits_stay(mnist_digits) -> None:
    from digitrec.imageio import decode_image
    from digitrec.preprocess import find_ink

    ink = find_ink(decode_image(boxed(pick(mnist_digits, "58"), comb=True)))
    cleaned, frames = remove_frames(ink.mask)
    assert frames == 1
    _count, _labels, stats, _ = cv2.connectedComponentsWithStats(cleaned.astype(np.uint8), connectivity=8)
    big = stats[1:, cv2.CC_STAT_AREA] >= 0.2 * stats[1:, cv2.CC_STAT_AREA].max()
    assert big.sum() == 2  # the two digits, nothing of the box that reads as a 1
    # What is left is the digits' ink: far less than the box held, most of what the digits alone hold.
    alone = find_ink(decode_image(boxed(pick(mnist_digits, "58"), comb=True, line=0)))
    assert 0.8 * alone.mask.sum() <= cleaned.sum() <= 1.2 * alone.mask.sum()


@pytest.mark.parametrize("wanted", ["0", "7", "1", "2", "4", "8"])
def test_a_digit_is_never_taken_for_a_frame(mnist_digits, wanted: str) -> None:
    """Handwritten digits have no four straight sides: nothing of an unboxed digit is removed."""
    from digitrec.imageio import decode_image
    from digitrec.preprocess import find_ink

    images, labels = mnist_digits
    for image in images[labels == int(wanted)][:40]:
        page = np.pad(255 - image, 10, constant_values=255)
        ink = find_ink(decode_image(png(page)))
        cleaned, frames = remove_frames(ink.mask)
        assert frames == 0 and np.array_equal(cleaned, ink.mask)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()
