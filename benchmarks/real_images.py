"""Benchmark: digits as users photograph them, read by the original pipeline and by ours.

USPS digits (other writers, another scanner, never used in training) are rendered as a user's images --
clean scans, phone photos, numbers of 2-5 digits, and harder cases -- encoded to PNG/JPEG bytes and read
back, as an upload would be. Each condition is a fixed-seed sample, so runs are comparable.

    .venv/bin/python benchmarks/real_images.py                      # seed model, 1000 per condition
    .venv/bin/python benchmarks/real_images.py --model runs/x --n 300 --show /tmp/failures

The "original" pipeline is the seed project's: grayscale, invert, resize to 28x28, contrast x2,
threshold at 128, divide by 255. Not a test: pytest never collects this folder.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------- data


def load_usps(shared: Path) -> tuple[np.ndarray, np.ndarray]:
    """zip.train.gz -> (images (N, 16, 16) float32 ink in [0, 1], labels (N,) int)."""
    with gzip.open(shared / "usps" / "zip.train.gz", "rt") as file:
        rows = [line.split() for line in file if line.strip()]
    labels = np.array([int(float(row[0])) for row in rows])
    values = np.array([[float(value) for value in row[1:257]] for row in rows], np.float32)
    return ((values.reshape(-1, 16, 16) + 1.0) / 2.0).clip(0, 1), labels


# ----------------------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Style:
    """How one image is drawn and photographed; every field drawn at random per image."""

    photo: bool = True  # paper tone, lighting, noise, blur, JPEG
    rotate: float = 0.0  # max degrees
    stroke: str = "pen"  # pen, marker, ballpoint, pencil, chalk
    ruled: bool = False
    small_in_big: bool = False  # a ~40 px digit in a 1000 px photo
    transparent: bool = False  # a canvas drawing saved as RGBA PNG with transparent background
    # The pen's colour as a share of the paper's, per channel (R, G, B), instead of the stroke's own: faint
    # pens (light pencil, yellow, light blue) at a chosen contrast (benchmarks/faint_ink.py). None: the stroke's.
    pen: tuple[float, float, float] | None = None


def digit_ink(usps: np.ndarray, height: int, rng: np.random.Generator, style: Style) -> np.ndarray:
    """(16, 16) USPS ink -> (height, w) ink in [0, 1] as drawn with the style's pen."""
    width = max(2, round(height * rng.uniform(0.75, 1.0)))
    ink = cv2.resize(usps, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    if style.rotate:
        angle = rng.uniform(-style.rotate, style.rotate)
        pad = height // 3
        ink = np.pad(ink, pad)
        matrix = cv2.getRotationMatrix2D((ink.shape[1] / 2, ink.shape[0] / 2), angle, 1.0)
        ink = cv2.warpAffine(ink, matrix, (ink.shape[1], ink.shape[0]), flags=cv2.INTER_LINEAR)
    unit = max(1, height // 16)  # one USPS pixel
    if style.stroke == "marker":
        ink = cv2.dilate(ink, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * unit + 1, 2 * unit + 1)))
    elif style.stroke in ("ballpoint", "pencil"):
        ink = cv2.erode(ink, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (unit | 1, unit | 1)))
        ink = np.where(ink > 0.5, 1.0, ink * 0.5).astype(np.float32)
    if style.stroke in ("pencil", "chalk"):  # grainy strokes
        ink = ink * rng.uniform(0.55, 1.0, ink.shape).astype(np.float32)
    return ink.astype(np.float32)


def number_ink(images: list[np.ndarray], height: int, rng: np.random.Generator, style: Style) -> np.ndarray:
    """Several digits' ink side by side with random gaps (some touching) and baseline jitter."""
    inks = [digit_ink(image, round(height * rng.uniform(0.9, 1.1)), rng, style) for image in images]
    tall = max(ink.shape[0] for ink in inks) + height // 5
    gaps = [round(height * rng.uniform(-0.05, 0.35)) for _ in inks]
    width = sum(ink.shape[1] for ink in inks) + sum(max(gap, 0) for gap in gaps) + height
    canvas = np.zeros((tall, width), np.float32)
    x = height // 2
    for ink, gap in zip(inks, gaps, strict=True):
        y = rng.integers(0, tall - ink.shape[0] + 1)
        h, w = ink.shape
        canvas[y : y + h, x : x + w] = np.maximum(canvas[y : y + h, x : x + w], ink)
        x += w + gap
    cols = np.nonzero(canvas.any(axis=0))[0]
    return canvas[:, cols[0] : cols[-1] + 1]


def photograph(ink: np.ndarray, rng: np.random.Generator, style: Style) -> bytes:
    """Ink (h, w) in [0, 1] -> encoded image bytes of paper (or board) holding it, as a user's file."""
    ih, iw = ink.shape
    if style.small_in_big:
        size_w = size_h = 1000
    elif style.photo:
        scale = rng.uniform(1.3, 3.0)
        size_w, size_h = max(iw + 8, round(iw * scale)), max(ih + 8, round(ih * scale * rng.uniform(0.8, 1.3)))
    else:  # a clean, centred scan: the digit fills the middle ~70%
        size_w = size_h = round(max(ih, iw) / 0.7)
    if style.photo:
        x, y = rng.integers(0, size_w - iw + 1), rng.integers(0, size_h - ih + 1)
    else:
        x, y = (size_w - iw) // 2, (size_h - ih) // 2
    alpha = np.zeros((size_h, size_w), np.float32)
    alpha[y : y + ih, x : x + iw] = ink
    if style.transparent:
        colour = 0 if rng.random() < 0.5 else 255
        rgba = np.zeros((size_h, size_w, 4), np.uint8)
        rgba[..., :3] = colour
        rgba[..., 3] = (alpha * 255).round().astype(np.uint8)
        return encode(rgba, "PNG", rng)
    if style.stroke == "chalk":
        paper = np.array([0.18, 0.25, 0.2]) * rng.uniform(0.6, 1.2)
        pen = np.array([0.92, 0.92, 0.9])
    else:
        tone = rng.uniform(0.72, 0.98) if style.photo else 1.0
        paper = tone * (1 - rng.uniform(0, 0.12, 3)) if style.photo else np.ones(3)
        pens = {"pen": [0.08, 0.08, 0.12], "marker": [0.05, 0.05, 0.05], "ballpoint": [0.1, 0.15, 0.55],
                "pencil": [0.45, 0.45, 0.47]}
        pen = np.array(pens[style.stroke]) * (rng.uniform(0.6, 1.4) if style.photo else 1.0)
        if style.pen is not None:  # after the draw above, so every other condition's images stay the same
            pen = paper * np.asarray(style.pen)
    rgb = np.ones((size_h, size_w, 3), np.float32) * paper.astype(np.float32)
    if style.ruled:
        spacing = max(8, round(ih * rng.uniform(0.5, 0.9)))
        offset = rng.integers(0, spacing)
        line = np.array([0.55, 0.7, 0.9], np.float32) * paper
        for row in range(offset, size_h, spacing):
            rgb[row : row + max(1, ih // 40)] = line
    rgb = rgb * (1 - alpha[..., None]) + pen.astype(np.float32) * alpha[..., None]
    if style.photo:
        # lighting: a gradient in a random direction and a soft shadow
        yy, xx = np.mgrid[0:size_h, 0:size_w].astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * xx / size_w + np.sin(angle) * yy / size_h)
        light = 1.0 - rng.uniform(0.1, 0.4) * (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
        rgb = rgb * light[..., None]
        sigma = rng.uniform(0.3, 1.2) * max(1.0, ih / 80)  # focus blur, relative to the writing's size
        rgb = cv2.GaussianBlur(rgb, (0, 0), sigma)
        rgb = rgb + rng.normal(0, rng.uniform(0.005, 0.03), rgb.shape).astype(np.float32)
    image = (rgb.clip(0, 1) * 255).round().astype(np.uint8)
    return encode(image, "JPEG" if style.photo else "PNG", rng)


def encode(array: np.ndarray, fmt: str, rng: np.random.Generator) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(array).save(buffer, "JPEG", quality=int(rng.integers(55, 92)))
    else:
        Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


CONDITIONS: dict[str, tuple[str, Style]] = {  # name -> (kind, style); kind: digit or number
    "scan": ("digit", Style(photo=False)),
    "photo": ("digit", Style()),
    "number": ("number", Style()),
    "rotated": ("digit", Style(rotate=15)),
    "marker": ("digit", Style(stroke="marker")),
    "ballpoint": ("digit", Style(stroke="ballpoint")),
    "pencil": ("digit", Style(stroke="pencil")),
    "ruled": ("digit", Style(ruled=True)),
    "ruled number": ("number", Style(ruled=True)),
    "small in big": ("digit", Style(small_in_big=True)),
    "chalkboard": ("digit", Style(stroke="chalk")),
    "canvas RGBA": ("digit", Style(photo=False, transparent=True)),
}


def make_cases(kind: str, style: Style, images: np.ndarray, labels: np.ndarray, count: int,
               seed: int) -> list[tuple[bytes, str]]:
    """`count` (encoded image, expected string) pairs for one condition."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        if kind == "digit":
            index = int(rng.integers(len(images)))
            height = 40 if style.small_in_big else int(rng.integers(28, 120))
            ink, truth = digit_ink(images[index], height, rng, style), str(labels[index])
        else:
            picks = rng.integers(len(images), size=int(rng.integers(2, 6)))
            ink = number_ink([images[i] for i in picks], int(rng.integers(28, 90)), rng, style)
            truth = "".join(str(labels[i]) for i in picks)
        cases.append((photograph(ink, rng, style), truth))
    return cases


# ------------------------------------------------------------------------------------------ readers


def original_pipeline(data: bytes) -> np.ndarray:
    """The seed web app's preprocessing -> (28, 28) float32."""
    from PIL import Image, ImageEnhance, ImageOps

    image = Image.open(io.BytesIO(data)).convert("L")
    image = ImageOps.invert(image).resize((28, 28))
    image = ImageEnhance.Contrast(image).enhance(2.0)
    array = np.asarray(image)
    return np.where(array > 128, 255, 0).astype(np.float32) / 255.0


class KerasDirect:
    """A Keras model called directly (no `predict` overhead: ~1 ms, not ~30 ms, per small batch)."""

    def __init__(self, path: Path) -> None:
        from digitrec.bundle import resolve_model
        from digitrec.runtime import load_keras_model, temperature_of

        self.source = resolve_model(path)
        self.model = load_keras_model(path)
        self.temperature = temperature_of(self.source)

    def predict_scores(self, images: np.ndarray):
        """Scores as the runtime makes them (10- or 11-output model, calibration temperature applied)."""
        from digitrec.runtime import as_model_batch, scores_from_outputs

        batch = as_model_batch(images)
        width = int(self.model.output_shape[-1])
        outputs = np.asarray(self.model(batch, training=False), np.float32) if len(batch) else np.zeros((0, width))
        return scores_from_outputs(outputs, self.temperature)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return self.predict_scores(images).probabilities  # (N, 10)


def load_model(path: Path):
    if path.suffix in (".h5", ".keras"):
        return KerasDirect(path)
    from digitrec.runtime import load_classifier

    return load_classifier(path)


# ------------------------------------------------------------------------------------------ measure


def run_condition(cases, classifier, kind: str, show: Path | None, name: str) -> dict[str, float]:
    from digitrec.recognize import recognize

    originals = np.stack([original_pipeline(data) for data, _ in cases]) if kind == "digit" else None
    original_hits = 0.0
    if originals is not None:
        predicted = classifier.predict_proba(originals).argmax(axis=1)
        original_hits = float(np.mean([str(p) == truth for p, (_, truth) in zip(predicted, cases, strict=True)]))
    hits, confidences = 0, []
    for number, (data, truth) in enumerate(cases):
        result = recognize(data, classifier, mode="auto")
        read = result.number or ""
        hits += read == truth
        confidences.extend((digit.confidence, digit.digit == int(truth)) for digit in result.digits
                           if kind == "digit" and len(result.digits) == 1)
        if show is not None and read != truth and number < 400:
            save_failure(show / name.replace(" ", "_"), number, data, truth, result)
    return {"ours": hits / len(cases), "original": original_hits, "confidences": confidences}


def save_failure(folder: Path, number: int, data: bytes, truth: str, result) -> None:
    """The input with boxes, and the 28x28s the model saw, side by side, for looking at failures."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    image = Image.open(io.BytesIO(data)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for digit in result.digits:
        x, y, w, h = digit.box
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=(255, 0, 0))
    if max(image.size) > 400 and result.digits:  # a big photo: show the part around what was read
        x0 = min(d.box[0] for d in result.digits) - 60
        y0 = min(d.box[1] for d in result.digits) - 60
        x1 = max(d.box[0] + d.box[2] for d in result.digits) + 60
        y1 = max(d.box[1] + d.box[3] for d in result.digits) + 60
        image = image.crop((max(0, x0), max(0, y0), min(image.width, x1), min(image.height, y1)))
        image = image.resize((image.width * 2, image.height * 2))
    tiles = [Image.fromarray((digit.image * 255).astype(np.uint8)).resize((84, 84)) for digit in result.digits]
    height = max(image.height, 84)
    sheet = Image.new("RGB", (image.width + 88 * max(1, len(tiles)), height), (40, 40, 40))
    sheet.paste(image, (0, 0))
    for index, tile in enumerate(tiles):
        sheet.paste(tile.convert("RGB"), (image.width + 4 + 88 * index, 0))
    read = result.number or "none"
    sheet.save(folder / f"{number:04d}_true{truth}_read{read}.png")


def calibration(confidences: list[tuple[float, bool]]) -> None:
    """Print how a low-confidence threshold would split right and wrong single-digit answers."""
    if not confidences:
        return
    scores = np.array([c for c, _ in confidences])
    right = np.array([r for _, r in confidences])
    print("\nlow-confidence threshold (single digits, ours): flagged / errors caught / error rate if not flagged")
    for threshold in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
        flagged = scores < threshold
        caught = (~right & flagged).sum() / max(1, (~right).sum())
        unflagged_error = (~right & ~flagged).sum() / max(1, (~flagged).sum())
        print(f"  {threshold:.2f}: {flagged.mean():6.1%} flagged, {caught:6.1%} of errors caught, "
              f"{unflagged_error:6.2%} error among the rest")


def time_big_photo(images: np.ndarray, labels: np.ndarray, seed: int) -> None:
    """Preprocess + segment of a 1000x1000 photo of a number (decode and model excluded)."""
    from digitrec.imageio import decode_image
    from digitrec.preprocess import find_ink, render_digit
    from digitrec.recognize import original_box
    from digitrec.segment import group_mask, segment_ink

    rng = np.random.default_rng(seed)
    ink = number_ink([images[i] for i in rng.integers(len(images), size=4)], 250, rng, Style())
    canvas = np.zeros((1000, 1000), np.float32)
    canvas[300 : 300 + ink.shape[0], 100 : 100 + min(ink.shape[1], 850)] = ink[:, :850]
    grey = decode_image(photograph(canvas, rng, Style(small_in_big=True)))
    times = []
    for _ in range(30):
        start = time.perf_counter()
        found = find_ink(grey)
        segmentation = segment_ink(found)
        for group in segmentation.groups:
            render_digit(grey, found, original_box(group, found.scale, grey.shape), group_mask(segmentation, group))
        times.append(time.perf_counter() - start)
    print(f"\npreprocess + segment + render, 1000x1000 photo of a number: median {np.median(times) * 1000:.1f} ms, "
          f"max {np.max(times) * 1000:.1f} ms (decode and model excluded)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO / ".." / "shared",
                        help="the shared data folder (default: ../shared from the repo root)")
    parser.add_argument("--model", type=Path, default=None, help="another model to compare (default: none)")
    parser.add_argument("--n", type=int, default=1000, help="images per condition (default: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--only", nargs="*", default=None, help="conditions to run (default: all)")
    parser.add_argument("--show", type=Path, default=None, help="write failures as PNGs here (default: off)")
    args = parser.parse_args()

    images, labels = load_usps(args.shared)
    # Timed first: once TensorFlow is loaded its idle thread pools disturb a 2-core machine's timings.
    time_big_photo(images, labels, args.seed)
    seed_path = args.shared / "seed" / "mnist_cnn_model.h5"
    models = {"seed": load_model(seed_path)}
    if args.model is not None:
        models[args.model.name] = load_model(args.model)
    names = args.only or list(CONDITIONS)
    width = max(16, *(len(m) + 7 for m in models))
    header = f"{'condition':<14}" + "".join(f"{m + ' orig':>{width}}{m + ' ours':>{width}}" for m in models)
    print(f"USPS rendered as users' images, {args.n} per condition, seed {args.seed}\n{header}")
    confidences: list[tuple[float, bool]] = []
    calibrated = list(models)[-1]  # the threshold is set for the model that ships: the last one given
    for name in names:
        kind, style = CONDITIONS[name]
        cases = make_cases(kind, style, images, labels, args.n, args.seed * 1000 + list(CONDITIONS).index(name))
        row = f"{name:<14}"
        for model_name, classifier in models.items():
            start = time.perf_counter()
            show = args.show / model_name if args.show else None
            scores = run_condition(cases, classifier, kind, show, name)
            original = f"{scores['original']:.1%}" if kind == "digit" else "0.0%*"
            row += f"{original:>{width}}{scores['ours']:>{width}.1%}"
            if model_name == calibrated:
                confidences += scores["confidences"]
            print(f"  ({name}, {model_name}: {time.perf_counter() - start:.1f} s)", file=sys.stderr)
        print(row, flush=True)
    print("* the original pipeline reads one digit per image: no number of several digits can be right")
    print(f"\ncalibrated on: {calibrated}")
    calibration(confidences)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
