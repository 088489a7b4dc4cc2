"""Batch throughput of `digitrec predict`: --jobs 1, --jobs 2 and Ray local on one folder of photos.

    python benchmarks/batch.py [--count 2000] [--folder DIR] [--rounds 1]

Makes (once; kept in --folder) `count` user-like photos rendered from USPS digits by real_images.py
(half single digits, half 2-5 digit numbers: paper tone, uneven light, blur, noise, JPEG), then times
each engine on the whole folder through the real command line, writing JSON Lines. Answers must be
identical: --jobs 2 line for line with --jobs 1, Ray's rows (sorted by file) too.

Timings on a shared machine are noisy: the load average is printed beside each figure, rounds alternate
the engines, and the best round counts. "start" is the same command on one image (interpreter, model,
worker start-up; Ray: the cluster start, reported apart by the command itself), so "images/s" is the
steady rate: images / (wall - start).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from real_images import CONDITIONS, load_usps, make_cases  # noqa: E402


def make_photos(folder: Path, count: int, seed: int = 0) -> None:
    """`count` photos (JPEG) in `folder`, names 00000.jpg...; kept if they are already there."""
    if len(list(folder.glob("*.jpg"))) == count:
        return
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = load_usps(REPO.parent / "shared")
    half = count // 2
    cases = make_cases(*CONDITIONS["photo"], images, labels, count - half, seed)
    cases += make_cases(*CONDITIONS["number"], images, labels, half, seed + 1)
    for index, (data, _) in enumerate(cases):
        (folder / f"{index:05d}.jpg").write_bytes(data)


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def predict(args: list[str], out: Path) -> tuple[float, float, str]:
    """Run `digitrec predict ARGS --output OUT`; -> (wall seconds, CPU seconds, stderr). The CPU time counts
    only processes this one waited for: right for --jobs 1, not for the workers of --jobs N or Ray."""
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "digitrec", "predict", *args, "--output", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode not in (0, 1) or not out.exists():
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return wall, cpu, result.stderr


def rows(path: Path, sort: bool = False) -> list[dict]:
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted(entries, key=lambda entry: entry["file"]) if sort else entries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="photos (default: 2000)")
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "digitrec-batch-photos",
                        help="where the photos are made and kept (default: $TMPDIR/digitrec-batch-photos)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of all engines, alternating (default: 1)")
    parser.add_argument("--no-ray", action="store_true", help="skip Ray (default: run it)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

    make_photos(args.folder, args.count)
    folder = str(args.folder)
    one = str(sorted(args.folder.glob("*.jpg"))[0])
    work = Path(tempfile.mkdtemp(prefix="digitrec-batch-"))
    engines = {"--jobs 1": ["--jobs", "1"], "--jobs 2": ["--jobs", "2"]}
    if not args.no_ray:
        engines["Ray local (2 CPUs)"] = ["--engine", "ray", "--ray-address", "local"]
    print(f"{args.count} photos in {folder}; cores: {os.cpu_count()}; load before: {load()}")

    # name -> per round: (wall s, busy s = wall less start-up, CPU s per image, load)
    results: dict[str, list[tuple[float, float, float | None, str]]] = {name: [] for name in engines}
    for round_number in range(args.rounds):
        order = list(engines) if round_number % 2 == 0 else list(reversed(engines))
        for name in order:
            flags = engines[name]
            if "--engine" in flags:
                wall, _, stderr = predict([folder, *flags], work / "ray.jsonl")
                # The command reports its own time from the cluster's start on; the rest was starting Ray.
                # Ray's workers are not this process's children: their CPU time is not counted.
                match = re.search(r"(\d+) images, \d+ errors, ([\d.]+) s", stderr)
                busy = float(match.group(2)) if match else wall
                start, per_image = wall - busy, None
            else:
                start, start_cpu, _ = predict([one, *flags], work / "one.jsonl")
                wall, cpu, _ = predict([folder, *flags], work / f"jobs{flags[1]}.jsonl")
                busy, per_image = wall - start, (cpu - start_cpu) / args.count
            results[name].append((wall, busy, per_image, load()))
            cpu_text = f"{per_image * 1000:5.1f} CPU ms/image" if per_image and flags[1] == "1" else ""
            print(f"  round {round_number + 1} {name:20s} wall {wall:6.1f} s  start {start:4.1f} s  "
                  f"{args.count / busy:6.1f} images/s  {cpu_text}  load {load()}", flush=True)

    single = rows(work / "jobs1.jsonl")
    same_jobs = single == rows(work / "jobs2.jsonl")
    same_ray = None if args.no_ray else rows(work / "ray.jsonl", sort=True) == sorted(single, key=lambda e: e["file"])
    errors = sum(entry["error"] is not None for entry in single)

    print(f"\n| engine | images/s (best of {args.rounds}) | x --jobs 1 | wall s | CPU ms per image "
          "| load (1/5/15 min) |")
    print("|---|---|---|---|---|---|")
    base = max(args.count / busy for _, busy, _, _ in results["--jobs 1"])
    for name, runs in results.items():
        wall, busy, per_image, at = min(runs, key=lambda run: run[1])
        rate = args.count / busy
        cpu_text = f"{per_image * 1000:.2f}" if per_image and name == "--jobs 1" else "-"
        print(f"| {name} | {rate:.1f} | {rate / base:.2f} | {wall:.1f} | {cpu_text} | {at} |")
    print(f"\nidentical answers: --jobs 2 vs --jobs 1: {same_jobs}; Ray vs --jobs 1: {same_ray}; "
          f"unreadable: {errors}; load after: {load()}")
    return 0 if same_jobs and same_ray is not False else 1


if __name__ == "__main__":
    sys.exit(main())
