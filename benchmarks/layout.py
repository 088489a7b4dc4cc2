"""Benchmark: layouts a single row of separate digits does not cover -- touching digits, two rows, the page's pen.

Digits are MNIST *test* digits (never trained on), pasted into images as a user makes them, and read back
through `digitrec.recognize` from PNG bytes. Conditions (exact string, fixed seeds so runs compare):

- touching: 2-4 digits pasted so that neighbours overlap by 0-20% of their width (dark ink on paper);
- two rows: two rows of 2-4 separate digits, one above the other; right only when `lines` is both rows
  (a reader without `lines` is scored on `number` being the two rows joined, which is kinder to it);
- page pen: 2-5 digits redrawn along their skeleton with the web page's round pen, each ~70 px tall, with
  normal handwriting gaps, on the page's 600x360 white canvas. The pen is the page's (static/app.js `PEN`):
  a tenth of the writing's height, 4-24 px;
- ten digits: "0123456789"-style strings of 8-10 digits with the page's pen, scaled to fit the canvas;
- old pen: the page pen's cases drawn with the page's former fixed 24 px pen (strokes of neighbours often
  touch, small digits blot): what the page drew before its pen followed the writing's size.

    .venv/bin/python benchmarks/layout.py --n 200 [--model PATH] [--show /tmp/layout]

Not a test: pytest never collects this folder.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
PEN_RATIO, PEN_MIN, PEN_MAX = 0.1, 4, 24  # static/app.js PEN: width = clamp(ratio x writing height), canvas px
OLD_PEN = 24  # the page's former fixed pen, canvas px
CANVAS = (360, 600)  # the page's canvas (height, width)


def load_test_digits(shared: Path) -> tuple[np.ndarray, np.ndarray]:
    from digitrec.data import DataConfig, load_split

    split = load_split("test", DataConfig(data_dir=shared / "mnist"))
    return split.images.astype(np.float32) / 255.0, split.labels.astype(int)


def tight(ink: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(ink > 0.05)
    return ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def scaled(digit: np.ndarray, height: int) -> np.ndarray:
    crop = tight(digit)
    width = max(2, round(crop.shape[1] * height / crop.shape[0]))
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR).clip(0, 1)


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a bool mask to 1 px wide lines: the pen's path, more or less."""
    image = np.pad(mask.astype(np.uint8), 1)
    while True:
        changed = False
        for step in (0, 1):
            p = image
            n = [np.roll(np.roll(p, dy, 0), dx, 1) for dy, dx in
                 ((1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1))]  # P2..P9
            neighbours = sum(n)
            ring = [*n, n[0]]
            transitions = sum(((a == 0) & (b == 1)).astype(np.uint8) for a, b in itertools.pairwise(ring))
            p2, p4, p6, p8 = n[0], n[2], n[4], n[6]
            first = step == 0
            cond = ((p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)) if first else ((p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0))
            remove = (p == 1) & (neighbours >= 2) & (neighbours <= 6) & (transitions == 1) & cond
            if remove.any():
                image = image & ~remove.astype(np.uint8)
                changed = True
        if not changed:
            return image[1:-1, 1:-1] > 0


def page_pen(height: int) -> int:
    """The page's pen width for writing `height` canvas px tall."""
    return round(min(PEN_MAX, max(PEN_MIN, PEN_RATIO * height)))


def pen_digit(digit: np.ndarray, height: int, pen: int) -> np.ndarray:
    """An MNIST digit redrawn with a round pen `pen` px wide: its skeleton at `height` px, dilated by the pen."""
    path = skeleton(cv2.GaussianBlur(scaled(digit, height), (0, 0), height / 40) > 0.4).astype(np.uint8)
    pad = pen // 2 + 1
    path = np.pad(path, pad)
    drawn = cv2.dilate(path, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (pen, pen)))
    return tight(drawn.astype(np.float32))


def paste_row(inks: list[np.ndarray], gaps: list[int], rng: np.random.Generator, jitter: int) -> np.ndarray:
    """Inks side by side, `gaps[i]` px after each (negative: overlapping), baseline jittered -> (h, w) ink."""
    tall = max(ink.shape[0] for ink in inks) + 2 * jitter
    width = sum(ink.shape[1] for ink in inks) + sum(max(0, g) for g in gaps) + 10
    canvas = np.zeros((tall, width), np.float32)
    x = 0
    for ink, gap in zip(inks, gaps, strict=True):
        y = int(rng.integers(0, tall - ink.shape[0] + 1))
        h, w = ink.shape
        canvas[y : y + h, x : x + w] = np.maximum(canvas[y : y + h, x : x + w], ink)
        x = max(0, x + w + gap)
    return tight(canvas)


def on_paper(ink: np.ndarray, size: tuple[int, int] | None, rng: np.random.Generator) -> bytes:
    """Ink -> PNG bytes of dark ink on light paper (a canvas of `size`, or a margin around the ink)."""
    from PIL import Image

    ih, iw = ink.shape
    if size is None:
        size = (ih + int(rng.integers(20, 80)), iw + int(rng.integers(20, 80)))
    height, width = size
    if ih > height or iw > width:  # too big for the canvas: scale down, as a user would write smaller
        factor = min(height / ih, width / iw) * 0.95
        ink = cv2.resize(ink, (max(1, int(iw * factor)), max(1, int(ih * factor))), interpolation=cv2.INTER_AREA)
        ih, iw = ink.shape
    alpha = np.zeros((height, width), np.float32)
    y, x = int(rng.integers(0, height - ih + 1)), int(rng.integers(0, width - iw + 1))
    alpha[y : y + ih, x : x + iw] = ink
    grey = ((0.97 - 0.9 * alpha.clip(0, 1)) * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, "PNG")
    return buffer.getvalue()


def make_case(condition: str, images: np.ndarray, labels: np.ndarray,
              rng: np.random.Generator) -> tuple[bytes, list[str]]:
    """One (PNG bytes, expected rows top to bottom)."""
    def picks(low: int, high: int) -> list[int]:
        return [int(i) for i in rng.integers(len(images), size=int(rng.integers(low, high + 1)))]

    if condition == "touching":
        chosen = picks(2, 4)
        height = int(rng.integers(40, 120))
        inks = [scaled(images[i], height) for i in chosen]
        gaps = [-round(ink.shape[1] * rng.uniform(0.0, 0.2)) for ink in inks]
        return on_paper(paste_row(inks, gaps, rng, height // 10), None, rng), ["".join(str(labels[i]) for i in chosen)]
    if condition == "two rows":
        rows, truth = [], []
        height = int(rng.integers(36, 100))
        for _ in range(2):
            chosen = picks(2, 4)
            inks = [scaled(images[i], height) for i in chosen]
            gaps = [round(height * rng.uniform(0.1, 0.4)) for _ in inks]
            rows.append(paste_row(inks, gaps, rng, height // 10))
            truth.append("".join(str(labels[i]) for i in chosen))
        gap = round(height * rng.uniform(0.2, 0.7))
        width = max(r.shape[1] for r in rows) + height
        page = np.zeros((rows[0].shape[0] + gap + rows[1].shape[0], width), np.float32)
        for top, row in ((0, rows[0]), (rows[0].shape[0] + gap, rows[1])):
            left = int(rng.integers(0, width - row.shape[1] + 1))
            page[top : top + row.shape[0], left : left + row.shape[1]] = row
        return on_paper(page, None, rng), truth
    if condition in ("page pen", "ten digits", "old pen"):
        chosen = picks(8, 10) if condition == "ten digits" else picks(2, 5)
        height = int(rng.integers(36, 50)) if condition == "ten digits" else int(rng.integers(60, 80))
        pen = OLD_PEN if condition == "old pen" else page_pen(height)
        inks = [pen_digit(images[i], height, pen) for i in chosen]
        # normal handwriting gaps between the pen's paths: 0.1-0.4 of the height (a wide pen eats them)
        gaps = [round(height * rng.uniform(0.1, 0.4)) - pen for _ in inks]
        truth = ["".join(str(labels[i]) for i in chosen)]
        return on_paper(paste_row(inks, gaps, rng, height // 12), CANVAS, rng), truth
    raise ValueError(condition)


def reading(result) -> list[str]:
    lines = getattr(result, "lines", None)
    if lines is not None and len(lines) > 0:
        return [line.text for line in lines]
    return [result.number] if result.number else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO / ".." / "shared", help="shared data (default ../shared)")
    parser.add_argument("--model", type=Path, default=None, help="model to read with (default: the bundled one)")
    parser.add_argument("--n", type=int, default=200, help="images per condition (default: 200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--only", nargs="*", default=None, help="conditions to run (default: all)")
    parser.add_argument("--show", type=Path, default=None, help="write failures as PNGs here (default: off)")
    args = parser.parse_args()

    from digitrec.recognize import recognize
    from digitrec.runtime import load_classifier

    images, labels = load_test_digits(args.shared)
    classifier = load_classifier(args.model)
    conditions = args.only or ["touching", "two rows", "page pen", "ten digits", "old pen"]
    print(f"MNIST test digits laid out as users write them, {args.n} per condition, seed {args.seed}")
    for number, condition in enumerate(conditions):
        rng = np.random.default_rng(args.seed * 100 + number)
        cases = [make_case(condition, images, labels, rng) for _ in range(args.n)]
        start, hits = time.perf_counter(), 0
        for index, (data, truth) in enumerate(cases):
            result = recognize(data, classifier, "number" if condition != "two rows" else "auto")
            read = reading(result)
            ok = read == truth
            if condition == "two rows" and not hasattr(result, "lines"):
                ok = read == ["".join(truth)]
            hits += ok
            if not ok and args.show is not None and index < 200:
                folder = args.show / condition.replace(" ", "_")
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{index:03d}_true{'-'.join(truth)}_read{'-'.join(read) or 'none'}.png").write_bytes(data)
        elapsed = time.perf_counter() - start
        print(f"{condition:<12} {hits / len(cases):7.1%} exact   ({elapsed / len(cases) * 1000:.0f} ms/image)",
              flush=True)
    print(f"load: {Path('/proc/loadavg').read_text().strip()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
