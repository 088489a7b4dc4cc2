"""Benchmark: digits written in a form's printed boxes (a comb of 1-5 boxes), read through `recognize()`.

USPS digits (never trained on) written inside boxes 1.1-1.5x their height, shifted at random so that some
touch or cross a side; lines 1-3 px, black to mid-grey; half the pages turned up to 2 degrees, as a scan.
Prints exact-number accuracy and the first failures (truth, reading, reason).

    .venv/bin/python benchmarks/boxed.py [--n 100] [--seed 3] [--model BUNDLE]

Not a test: pytest never collects this folder.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from real_images import load_usps  # noqa: E402


def boxed_case(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[bytes, str]:
    count, size = int(rng.integers(1, 6)), int(rng.integers(40, 90))
    box, line, tone = int(size * rng.uniform(1.1, 1.5)), int(rng.integers(1, 4)), rng.uniform(0.0, 0.6)
    width, height = count * box + 40, box + 40
    page = np.ones((height, width), np.float32)
    truth = ""
    for index in range(count):
        pick = int(rng.integers(len(labels)))
        truth += str(labels[pick])
        digit = images[pick].astype(np.float32)
        ink = cv2.resize(digit / max(float(digit.max()), 1e-6), (int(size * 0.8), size))
        slack = (box - size) // 2
        x = 20 + index * box + (box - ink.shape[1]) // 2 + int(rng.integers(-box // 8, box // 8 + 1))
        y = 20 + slack + int(rng.integers(-slack - 2, slack + 3))
        x, y = max(0, min(x, width - ink.shape[1])), max(0, min(y, height - size))
        window = page[y : y + size, x : x + ink.shape[1]]
        window[:] = np.minimum(window, 1 - ink)
    for index in range(count + 1):
        cv2.line(page, (20 + index * box, 20), (20 + index * box, 20 + box), tone, line)
    for y in (20, 20 + box):
        cv2.line(page, (20, y), (20 + count * box, y), tone, line)
    if rng.random() < 0.5:
        turn = cv2.getRotationMatrix2D((width / 2, height / 2), rng.uniform(-2, 2), 1.0)
        page = cv2.warpAffine(page, turn, (width, height), borderValue=1.0)
    buffer = io.BytesIO()
    Image.fromarray((page * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue(), truth


def main() -> int:
    from digitrec.recognize import recognize
    from digitrec.runtime import load_classifier

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO / ".." / "shared", help="shared data (default: ../shared)")
    parser.add_argument("--model", type=Path, default=None, help="a bundle (default: the bundled model)")
    parser.add_argument("--n", type=int, default=100, help="pages (default: 100)")
    parser.add_argument("--seed", type=int, default=3, help="random seed (default: 3)")
    args = parser.parse_args()
    images, labels = load_usps(args.shared)
    rng = np.random.default_rng(args.seed)
    classifier = load_classifier(args.model)
    exact, failures = 0, []
    for _ in range(args.n):
        data, truth = boxed_case(images, labels, rng)
        result = recognize(data, classifier, mode="auto")
        exact += (result.number or "") == truth
        if (result.number or "") != truth:
            failures.append((truth, result.number or "", result.reason))
    print(f"digits in printed boxes, number exact: {exact}/{args.n} = {exact / args.n:.1%}  (seed {args.seed})")
    print("first failures (truth, reading, reason):", failures[:10])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
