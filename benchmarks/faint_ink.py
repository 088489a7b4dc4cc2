"""Benchmark: faint ink -- light pencil, yellow and light-blue pens at 5-12% contrast -- scanned and
photographed: digits found and read right, and the same paper photographed blank (ink found where none is).

USPS digits (other writers, never trained on) drawn with a faint pen and photographed by `real_images.py`'s
photographer (paper tone and tint, uneven light, focus blur, noise, JPEG; a third are clean scans). The
pen's colour is set per channel so that its *luminance* (what `imageio` reads) is the chosen contrast
darker than the paper's: a yellow pen is dark only in blue, a light-blue one only in red. Contrast bins are
the stroke core's; a pencil's grain and a thin stroke's blur leave much of the stroke fainter still.

    .venv/bin/python benchmarks/faint_ink.py --n 100 --seed 0              # ~1 min on 2 cores
    .venv/bin/python benchmarks/faint_ink.py --n 100 --show /tmp/faint     # montages of what failed
    PYTHONPATH=/tmp/old/src .venv/bin/python benchmarks/faint_ink.py       # an older reading (git archive)

Not a test: pytest never collects this folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from real_images import Style, digit_ink, load_usps, photograph  # noqa: E402

LUMINANCE = np.array([0.299, 0.587, 0.114])  # ITU-R 601, as imageio (Pillow's "L") reads colour
# What each pen takes from the paper's light, per channel (R, G, B), before scaling to a contrast; and the
# strokes it is drawn with (real_images.digit_ink: pencil is thin and grainy, marker bold).
PENS = {
    "light pencil": ((1.0, 1.0, 0.95), ("pencil",)),
    "yellow": ((0.03, 0.12, 1.0), ("pen", "marker", "ballpoint")),
    "light blue": ((0.55, 0.25, 0.0), ("pen", "ballpoint")),
}
BINS = ((0.05, 0.07), (0.07, 0.09), (0.09, 0.105), (0.105, 0.12))


def pen_colour(absorbs: tuple[float, float, float], contrast: float) -> tuple[float, float, float]:
    """The pen's colour as a share of the paper's, per channel, whose luminance is `contrast` darker."""
    absorbs_ = np.asarray(absorbs, np.float64)
    share = 1.0 - absorbs_ * contrast / float(LUMINANCE @ absorbs_)
    return tuple(float(value) for value in share)


def faint_cases(images: np.ndarray, labels: np.ndarray, pen: str, low: float, high: float, count: int,
                seed: int) -> list[tuple[bytes, str]]:
    """`count` (image bytes, truth) of single USPS digits drawn with one faint pen at low-high contrast."""
    rng = np.random.default_rng(seed)
    absorbs, strokes = PENS[pen]
    cases = []
    for _ in range(count):
        index = int(rng.integers(len(images)))
        style = Style(photo=bool(rng.random() < 2 / 3), stroke=str(rng.choice(strokes)),
                      pen=pen_colour(absorbs, float(rng.uniform(low, high))))
        ink = digit_ink(images[index], int(rng.integers(28, 120)), rng, style)
        cases.append((photograph(ink, rng, style), str(labels[index])))
    return cases


def blank_cases(count: int, seed: int) -> list[tuple[bytes, str]]:
    """The same photographer's paper with nothing on it (a digit's worth of empty ink)."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        style = Style(photo=bool(rng.random() < 2 / 3), pen=pen_colour(PENS["light pencil"][0], 0.1))
        height = int(rng.integers(28, 120))
        cases.append((photograph(np.zeros((height, height), np.float32), rng, style), ""))
    return cases


def montage(tiles: list[tuple[np.ndarray, str]], path: Path, size: int = 112, columns: int = 10) -> None:
    """Grey images, each with a caption, in a grid PNG (contrast stretched per tile so faint ink shows)."""
    rows = (len(tiles) + columns - 1) // columns
    sheet = np.full((rows * (size + 14), columns * size), 255, np.uint8)
    for number, (grey, caption) in enumerate(tiles):
        scale = size / max(grey.shape)
        tile = cv2.resize(grey, (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
        low, high = np.percentile(tile, [1, 99])
        tile = ((tile - low) / max(high - low, 1e-3)).clip(0, 1)
        y, x = (number // columns) * (size + 14), (number % columns) * size
        sheet[y + 14 : y + 14 + tile.shape[0], x : x + tile.shape[1]] = (tile * 255).astype(np.uint8)
        cv2.putText(sheet, caption[:18], (x + 2, y + 11), cv2.FONT_HERSHEY_PLAIN, 0.8, 0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), sheet)


def main() -> int:
    from digitrec.imageio import decode_image
    from digitrec.recognize import recognize
    from digitrec.runtime import load_classifier

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO / ".." / "shared", help="shared data (default: ../shared)")
    parser.add_argument("--model", type=Path, default=None, help="a bundle (default: the bundled model)")
    parser.add_argument("--n", type=int, default=100, help="digits per pen and contrast bin, and blanks (default: 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--show", type=Path, default=None, help="write montages of the failures here")
    args = parser.parse_args()

    images, labels = load_usps(args.shared)
    classifier = load_classifier(args.model)
    started, cpu = time.perf_counter(), time.process_time()
    print(f"{'pen':<14}{'contrast':<12}{'found':>8}{'read right':>12}{'no ink':>8}{'rejected':>10}")
    totals = np.zeros(3)
    for pen_number, pen in enumerate(PENS):
        for bin_number, (low, high) in enumerate(BINS):
            cases = faint_cases(images, labels, pen, low, high, args.n, args.seed * 1000 + pen_number * 10 + bin_number)
            found = right = no_ink = 0
            failures = []
            for data, truth in cases:
                result = recognize(data, classifier, mode="auto")
                found += bool(result.digits)
                right += result.number == truth
                no_ink += result.reason == "no_ink"
                if result.number != truth:
                    failures.append((decode_image(data), f"{truth}:{result.number or result.reason}"))
            totals += (found, right, len(cases))
            print(f"{pen:<14}{f'{low:.1%}-{high:.1%}':<12}{found / len(cases):>8.1%}{right / len(cases):>12.1%}"
                  f"{no_ink / len(cases):>8.1%}{(len(cases) - found - no_ink) / len(cases):>10.1%}", flush=True)
            if args.show and failures:
                montage(failures[:60], args.show / f"{pen.replace(' ', '_')}_{low:.3f}.png")
    print(f"{'all':<26}{totals[0] / totals[2]:>8.1%}{totals[1] / totals[2]:>12.1%}")
    blanks = blank_cases(args.n * 4, args.seed + 99)
    answered, inked, faint, tiles = 0, 0, 0, []
    for data, _ in blanks:
        result = recognize(data, classifier, mode="auto")
        answered += bool(result.digits)
        inked += result.reason != "no_ink"
        faint += bool(result.steps.get("faint_ink"))
        if result.reason != "no_ink":
            tiles.append((decode_image(data), f"{result.number or result.reason}"))
    print(f"blank photos of the same paper ({len(blanks)}): a digit answered {answered / len(blanks):.1%},"
          f" ink found {inked / len(blanks):.1%}, faint ink found {faint / len(blanks):.1%}")
    if args.show and tiles:
        montage(tiles[:60], args.show / "blank.png")
    print(f"seed {args.seed}, {args.n} per row; {time.perf_counter() - started:.0f} s wall,"
          f" {time.process_time() - cpu:.0f} s CPU; load {Path('/proc/loadavg').read_text().split()[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
