"""Fuzzing the whole read path (decode -> ink -> segment -> render -> classify) with the bundled model.

Whatever arrives, `recognize` either raises an `ImageError` with a message for the person who sent it, or
returns a `Recognition` whose fields agree with each other. Inputs: random bytes, mangled image files,
valid images of every Pillow mode in every format that can hold it (animated too), in shapes from 1x1 to
very wide and very tall, and raw arrays of every dtype and layout `recognize` takes.

A crash found here becomes a file in `tests/regressions/` (bytes as `.bin`/image suffix, arrays as `.npy`),
and `test_saved_regressions_stay_fixed` reads every file there.
"""

from __future__ import annotations

import functools
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from digitrec.imageio import ImageError
from digitrec.recognize import MAX_DIGITS, Recognition, recognize
from digitrec.runtime import Classifier, load_classifier

# Pillow warns (UserWarning) about corrupt metadata it then skips or refuses; outside pytest's "error" filter
# that is a log line, not a failure. Everything else (numpy's RuntimeWarnings included) still fails a test.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.*")

REGRESSIONS = Path(__file__).parent / "regressions"
MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]
FORMATS = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]
ANIMATED = {"GIF", "PNG", "WEBP", "TIFF"}  # formats Pillow writes with several frames (save_all)
MAX_PIXELS = 2_000_000  # bounds each example's work; the limit itself is tested in test_imageio.py


def fuzz(max_examples: int) -> settings:
    """Bounded runs (the whole file in well under a minute on 2 cores); no deadline: CPU is shared."""
    return settings(max_examples=max_examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    """The model digitrec ships with, through LiteRT (as the server and CLI run it)."""
    return load_classifier()


# --- The invariants --------------------------------------------------------------------------------------


def check_recognition(result: Recognition, width: int | None = None, height: int | None = None) -> None:
    """Every field of a `Recognition` agrees with the others and with the image it came from."""
    assert isinstance(result, Recognition)
    if width is not None:
        assert (result.width, result.height) == (width, height)
    assert result.mode in ("digit", "number")
    assert len(result.digits) <= MAX_DIGITS
    if result.mode == "digit":
        assert len(result.digits) <= 1
    if not result.digits:
        assert result.digit is None and result.number is None and result.confidence is None
    else:
        assert "".join(line.text for line in result.lines) == "".join(str(digit.digit) for digit in result.digits)
        assert result.number == (result.lines[0].text if len(result.lines) == 1 else None)
        assert result.digit == (result.digits[0].digit if len(result.digits) == 1 else None)
        # the digits' confidences multiplied, times the segmentation's certainty (<= 1)
        assert 0 <= result.confidence <= math.prod(digit.confidence for digit in result.digits) + 1e-9
    for digit in result.digits:
        assert 0 <= digit.digit <= 9
        x, y, w, h = digit.box
        assert w >= 1 and h >= 1 and x >= 0 and y >= 0
        assert x + w <= result.width and y + h <= result.height
        probabilities = np.asarray(digit.probabilities)
        assert probabilities.shape == (10,) and np.isfinite(probabilities).all() and (probabilities >= 0).all()
        assert probabilities.sum() == pytest.approx(1.0, abs=1e-3)
        assert digit.digit == int(np.argmax(probabilities)) and digit.confidence == probabilities.max()
        assert digit.image.shape == (28, 28) and digit.image.dtype == np.float32
        assert np.isfinite(digit.image).all() and digit.image.min() >= 0 and digit.image.max() <= 1
    # The flag is a threshold on confidence (the model's own, from its model.json): every flagged digit is
    # less sure than every unflagged one.
    flagged = [digit.confidence for digit in result.digits if digit.low_confidence]
    sure = [digit.confidence for digit in result.digits if not digit.low_confidence]
    assert not flagged or not sure or max(flagged) < min(sure)
    json.dumps(result.to_json(), allow_nan=False)  # what `predict --json` prints must be valid JSON


def read_or_refuse(data: bytes, classifier: Classifier, mode: str) -> Recognition | None:
    """recognize(data): a consistent Recognition, or None after an ImageError with a message."""
    try:
        result = recognize(data, classifier, mode, max_pixels=MAX_PIXELS)
    except ImageError as error:
        assert str(error).strip(), "an ImageError must say what is wrong"
        return None
    check_recognition(result)
    return result


# --- Random valid images of every mode, format and shape ---------------------------------------------------


def encode(image: Image.Image, fmt: str, frames: list[Image.Image] | None = None) -> bytes:
    buffer = io.BytesIO()
    if frames:
        image.save(buffer, fmt, save_all=True, append_images=frames)
    else:
        image.save(buffer, fmt)
    return buffer.getvalue()


@functools.cache
def writable_pairs() -> tuple[tuple[str, str], ...]:
    """The (mode, format) pairs this Pillow can write: probed, so a Pillow upgrade widens the fuzzing."""
    pairs = []
    for mode in MODES:
        for fmt in FORMATS:
            try:
                encode(as_mode(np.full((3, 5), 100, np.uint8), np.full((3, 5), 255, np.uint8), mode, 1.0), fmt)
            except (OSError, ValueError, KeyError):
                continue
            pairs.append((mode, fmt))
    return tuple(pairs)


def as_mode(grey: np.ndarray, alpha: np.ndarray, mode: str, scale: float) -> Image.Image:
    """(H, W) uint8 grey and alpha -> a Pillow image of `mode` (scale stretches the I and F ranges)."""
    luminance = Image.fromarray(grey)
    if mode == "I;16":
        return Image.fromarray(grey.astype(np.uint16) * 257)
    if mode == "I":
        return Image.fromarray((grey.astype(np.int64) * scale).clip(-(2**31), 2**31 - 1).astype(np.int32))
    if mode == "F":
        return Image.fromarray(grey.astype(np.float32) / 255 * np.float32(scale))
    if mode in ("LA", "RGBA", "PA"):
        rgba = Image.merge("RGBA", (luminance, luminance.point(lambda v: 255 - v // 2), luminance,
                                    Image.fromarray(alpha)))
        return rgba.convert("LA") if mode == "LA" else rgba.convert("PA") if mode == "PA" else rgba
    if mode in ("RGB", "CMYK"):
        rgb = Image.merge("RGB", (luminance, luminance.point(lambda v: min(255, v + 40)), luminance))
        return rgb.convert(mode)
    return luminance.convert(mode)  # 1, L, P


def picture(rng: np.random.Generator, height: int, width: int, kind: str) -> np.ndarray:
    """(H, W) uint8: flat paper, noise, or pen strokes on paper (the kind that reaches segmentation)."""
    if kind == "flat":
        return np.full((height, width), rng.integers(0, 256), np.uint8)
    if kind == "noise":
        return rng.integers(0, 256, (height, width), dtype=np.uint8)
    paper, ink = (235, 30) if rng.random() < 0.7 else (20, 220)
    canvas = np.full((height, width), paper, np.uint8)
    for _ in range(int(rng.integers(1, 12))):
        points = rng.integers(0, [max(width, 1), max(height, 1)], size=(int(rng.integers(2, 6)), 2))
        thickness = int(rng.integers(1, max(2, min(height, width) // 8 + 2)))
        cv2.polylines(canvas, [points.astype(np.int32)], False, ink, thickness)
    return canvas


SIZES = st.one_of(
    st.tuples(st.integers(1, 80), st.integers(1, 80)),  # small, 1x1 included
    st.tuples(st.integers(80, 600), st.integers(80, 600)),  # photo-ish
    st.tuples(st.just(1), st.integers(1, 4000)),  # 1xN
    st.tuples(st.integers(1, 4000), st.just(1)),  # Nx1
    st.tuples(st.integers(600, 4000), st.integers(2, 40)),  # very wide
    st.tuples(st.integers(2, 40), st.integers(600, 4000)),  # very tall
)


@dataclass(frozen=True)
class EncodedImage:
    """An image file and what it holds; its repr is the description (failure reports stay readable)."""

    data: bytes
    width: int
    height: int
    description: str

    def __repr__(self) -> str:
        return f"EncodedImage({self.description}, {len(self.data)} bytes)"


@st.composite
def valid_images(draw: st.DrawFn) -> EncodedImage:
    """A random valid image file in a random mode and format."""
    mode, fmt = draw(st.sampled_from(writable_pairs()))
    width, height = draw(SIZES)
    kind = draw(st.sampled_from(["strokes", "strokes", "noise", "flat"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1.0, 257.0, 1e6, -3.0, 1e-3]))  # I and F images in odd ranges
    grey = picture(rng, height, width, kind)
    alpha = picture(rng, height, width, draw(st.sampled_from(["flat", "strokes", "noise"])))
    image = as_mode(grey, alpha, mode, scale)
    frames = None
    if fmt in ANIMATED and draw(st.booleans()):
        frames = [as_mode(picture(rng, height, width, kind), alpha, mode, scale) for _ in range(draw(
            st.integers(1, 3)))]
    try:
        data = encode(image, fmt, frames)
    except (OSError, ValueError):  # a size or frame combination this Pillow does not write: draw another
        assume(False)
    return EncodedImage(data, width, height, f"{mode} {fmt} {width}x{height} {kind} frames={1 + len(frames or [])}")


def test_every_mode_and_format_is_fuzzed() -> None:
    """The fuzzing below covers every mode and every format (fails if a Pillow change drops one)."""
    pairs = writable_pairs()
    assert {mode for mode, _ in pairs} == set(MODES)
    assert {fmt for _, fmt in pairs} == set(FORMATS)


@fuzz(800)
@given(valid_images(), st.sampled_from(["auto", "digit", "number"]))
def test_valid_images_of_every_mode_and_size_are_read(classifier: Classifier, image: EncodedImage,
                                                      mode: str) -> None:
    try:
        result = recognize(image.data, classifier, mode, max_pixels=MAX_PIXELS)
    except ImageError as error:
        pytest.fail(f"a valid image was refused ({image.description}): {error}")
    check_recognition(result, image.width, image.height)


# --- Hostile bytes ---------------------------------------------------------------------------------------

SIGNATURES = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"GIF87a", b"BM", b"II*\x00", b"MM\x00*",
              b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"\x00\x00\x00\x18ftypheic", b"P5\n", b"\x00\x00\x01\x00"]


@fuzz(1500)
@given(st.one_of(st.binary(max_size=4096),
                 st.builds(lambda head, tail: head + tail, st.sampled_from(SIGNATURES), st.binary(max_size=4096))),
       st.sampled_from(["auto", "digit", "number"]))
def test_random_bytes_are_read_or_refused(classifier: Classifier, data: bytes, mode: str) -> None:
    read_or_refuse(data, classifier, mode)


@fuzz(800)
@given(valid_images(), st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=8),
       st.one_of(st.none(), st.floats(0, 1)))
def test_mangled_image_files_are_read_or_refused(classifier: Classifier, image: EncodedImage,
                                                 edits: list[tuple[float, int]], cut: float | None) -> None:
    """A valid file with a few bytes overwritten (headers included) and perhaps cut short."""
    data = bytearray(image.data)
    for where, value in edits:
        data[min(len(data) - 1, int(where * len(data)))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    read_or_refuse(bytes(data), classifier, "auto")


# --- Arrays, as the CLI and library callers pass them ------------------------------------------------------

ARRAY_SHAPES = st.one_of(
    st.tuples(st.integers(1, 90), st.integers(1, 90)),
    st.tuples(st.integers(1, 90), st.integers(1, 90), st.sampled_from([1, 3, 4])),
    st.tuples(st.just(1), st.integers(1, 2000)),
    st.tuples(st.integers(1, 2000), st.just(1)),
)


@st.composite
def any_arrays(draw: st.DrawFn) -> np.ndarray:
    """Arrays of every dtype `recognize` takes, with NaN, infinities and out-of-range values for floats."""
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_]))
    shape = draw(ARRAY_SHAPES)
    if np.dtype(dtype).kind == "f" and draw(st.booleans()):
        elements = st.floats(allow_nan=True, allow_infinity=True, width=np.dtype(dtype).itemsize * 8)
        return draw(arrays(dtype, shape, elements=elements))
    # Mostly structured content: random bytes alone rarely hold anything digit-like.
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    grey = picture(rng, shape[0], shape[1], draw(st.sampled_from(["strokes", "noise", "flat"])))
    array = np.repeat(grey[..., None], shape[2], axis=2) if len(shape) == 3 else grey
    if dtype == np.bool_:
        return array > 127
    if np.dtype(dtype).kind == "f":
        return (array / 255).astype(dtype)
    return (array.astype(np.int64) * (np.iinfo(dtype).max // 255)).astype(dtype)


@fuzz(500)
@given(any_arrays(), st.sampled_from(["auto", "digit", "number"]))
def test_any_array_is_read_consistently(classifier: Classifier, array: np.ndarray, mode: str) -> None:
    result = recognize(array, classifier, mode)
    check_recognition(result, array.shape[1], array.shape[0])


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (7,), (5, 5, 2), (5, 5, 5), (2, 3, 4, 5), ()],
                         ids=lambda shape: "x".join(map(str, shape)) or "scalar")
def test_arrays_of_unusable_shapes_raise_value_error(classifier: Classifier, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="expected a non-empty"):
        recognize(np.zeros(shape, np.float32), classifier)


# --- Every crash ever found stays fixed --------------------------------------------------------------------


def regression_files() -> list[Path]:
    return sorted(path for path in REGRESSIONS.glob("*") if path.is_file() and path.suffix != ".md")


@pytest.mark.parametrize("path", regression_files(), ids=lambda path: path.name)
@pytest.mark.parametrize("mode", ["auto", "digit", "number"])
def test_saved_regressions_stay_fixed(classifier: Classifier, path: Path, mode: str) -> None:
    if path.suffix == ".npy":
        array = np.load(path, allow_pickle=False)
        check_recognition(recognize(array, classifier, mode), array.shape[1], array.shape[0])
    else:
        read_or_refuse(path.read_bytes(), classifier, mode)


def test_there_are_regression_inputs() -> None:
    """The folder the parametrized test reads is where this file says it is (a moved folder would test nothing)."""
    assert regression_files(), f"no inputs in {REGRESSIONS}"


def test_float32_near_its_limits_is_read_without_overflow(classifier: Classifier) -> None:
    """Hypothesis found it: float32 RGBA at -1.7e38 with part transparent overflowed in the alpha compositing's
    sums (a RuntimeWarning, an error under pytest); float32, like float64, is clipped to [-1, 2] first."""
    array = np.zeros((12, 12, 4), np.float32)
    array[::2, :, :3] = -1.7014118e38
    array[:, ::3, 3] = 1.0  # a third opaque: the drawing, whose tone is summed
    result = recognize(array, classifier, "auto")
    check_recognition(result, 12, 12)
