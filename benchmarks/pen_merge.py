"""Benchmark: how often numbers drawn on the page merge into one blob, with the old fixed pen and the new one.

Method (a skeleton redraw of MNIST test digits at the page's canvas scale):
1. Each MNIST test digit is scaled so its ink is H canvas pixels tall and thinned to a one-pixel centre line
   (Zhang-Suen). The centre line stands for the path the person's finger or mouse drew.
2. The page's pen is a round brush along that path: with round caps and joins, a canvas stroke of width w
   is exactly the path dilated by a disc of diameter w, so the skeleton is dilated by that disc.
   Old pen: w = 24 canvas px whatever the size. New pen (static/app.js `PEN`): w = clamp(0.1 x the tallest
   stroke, 4, 24), the tallest stroke taken as the digit's height.
3. Digits are set side by side on the page's 600x360 canvas, their centre lines 0.15-0.4 H apart (normal
   gaps: a person leaves about a quarter of a digit's height between digits), with a little vertical jitter.
4. Counted: numbers in which two neighbouring digits' ink touches (merged), and numbers read exactly by
   `recognize(..., mode="number")` with the bundled model (the page's own request).

    .venv/bin/python benchmarks/pen_merge.py            # 150 four-digit numbers per height
    .venv/bin/python benchmarks/pen_merge.py --n 50 --digits 3

Measured on the shared 2-core machine (load 11.6), bundled model of b46892e, recognize of a5a6901, 150
numbers per height: merged 51.7% -> 0.0% of numbers, read exactly 58.7% -> 93.7% (40 px: 8.7% -> 92.7%,
70 px: 79.3% -> 90.7%; 100 px: 94.7% with either pen, 24 or 10 px, as neither merges there).

Not a test: pytest never collects this folder.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from layout import skeleton  # Zhang-Suen thinning, shared with the layout benchmark

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
CANVAS = (360, 600)  # (height, width) of the page's canvas
OLD_PEN = 24.0
PEN_RATIO, PEN_MIN, PEN_MAX = 0.1, 4.0, 24.0  # static/app.js PEN
HEIGHTS = (40, 55, 70, 100)  # canvas px; 70 is the "2026 written about 70 px tall"


def new_pen(height: float) -> float:
    return min(PEN_MAX, max(PEN_MIN, PEN_RATIO * height))


def centre_line(digit: np.ndarray, height: int) -> np.ndarray:
    """(28, 28) uint8 MNIST digit -> (height, w) bool centre line of its ink, scaled to `height` px tall."""
    ys, xs = np.nonzero(digit > 60)
    crop = digit[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    scale = height / crop.shape[0]
    big = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), height), interpolation=cv2.INTER_CUBIC)
    return skeleton(big > 100)


def render(lines: list[np.ndarray], gaps: list[float], jitter: list[int], pen: float) -> tuple[np.ndarray, bool]:
    """Digits' centre lines side by side, drawn with a round pen of width `pen` -> (PNG-ready uint8 image
    (360, 600), whether two neighbours' ink touches)."""
    radius = pen / 2
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * round(radius) + 1, 2 * round(radius) + 1))
    widths = [line.shape[1] for line in lines]
    total = sum(widths) + sum(gaps)
    x = (CANVAS[1] - total) / 2
    inks = []
    for index, line in enumerate(lines):
        layer = np.zeros(CANVAS, np.uint8)
        top = (CANVAS[0] - line.shape[0]) // 2 + jitter[index]
        left = round(x)
        layer[top:top + line.shape[0], left:left + line.shape[1]][line] = 255
        inks.append(cv2.dilate(layer, kernel) > 0)
        x += line.shape[1] + (gaps[index] if index < len(gaps) else 0)
    touching = any((cv2.dilate(a.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)[b].any()
                   for a, b in itertools.pairwise(inks))
    ink = np.any(inks, axis=0)
    return np.where(ink, 17, 255).astype(np.uint8), touching


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=150, help="numbers per height (default 150)")
    parser.add_argument("--digits", type=int, default=4, help="digits per number (default 4)")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "mnist")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    sys.path.insert(0, str(REPO / "src"))
    from digitrec.idx import read_idx
    from digitrec.recognize import recognize
    from digitrec.runtime import load_classifier

    images = read_idx(args.data_dir / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(args.data_dir / "t10k-labels-idx1-ubyte.gz")
    classifier = load_classifier(None)
    rng = np.random.default_rng(args.seed)
    print(f"{args.n} numbers of {args.digits} MNIST test digits per height; load {os.getloadavg()[0]:.2f}")
    print(f"{'height':>6} {'old pen':>8} {'merged':>7} {'exact':>6}   {'new pen':>8} {'merged':>7} {'exact':>6}")
    totals = {"old": [0, 0], "new": [0, 0]}
    started = time.perf_counter()
    for height in HEIGHTS:
        counts = {"old": [0, 0], "new": [0, 0]}
        for _ in range(args.n):
            while True:  # a number too wide for the canvas would be written smaller: draw another
                picks = rng.choice(len(images), args.digits, replace=False)
                lines = [centre_line(images[pick], height) for pick in picks]
                gaps = list(rng.uniform(0.15, 0.4, args.digits - 1) * height)
                if sum(line.shape[1] for line in lines) + sum(gaps) + OLD_PEN < CANVAS[1]:
                    break
            jitter = list(rng.integers(-round(0.05 * height), round(0.05 * height) + 1, args.digits))
            truth = "".join(str(labels[pick]) for pick in picks)
            for name, pen in (("old", OLD_PEN), ("new", new_pen(height))):
                image, touching = render(lines, gaps, jitter, pen)
                reading = recognize(cv2.imencode(".png", image)[1].tobytes(), classifier, "number")
                counts[name][0] += touching
                counts[name][1] += reading.number == truth
        for name in counts:
            totals[name][0] += counts[name][0]
            totals[name][1] += counts[name][1]
        print(f"{height:>6} {OLD_PEN:>8.0f} {counts['old'][0] / args.n:>7.1%} {counts['old'][1] / args.n:>6.1%}"
              f"   {new_pen(height):>8.1f} {counts['new'][0] / args.n:>7.1%} {counts['new'][1] / args.n:>6.1%}")
    n = args.n * len(HEIGHTS)
    print(f"{'all':>6} {'':>8} {totals['old'][0] / n:>7.1%} {totals['old'][1] / n:>6.1%}"
          f"   {'':>8} {totals['new'][0] / n:>7.1%} {totals['new'][1] / n:>6.1%}")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
