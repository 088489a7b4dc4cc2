"""Coverage-guided fuzzing of decode + recognize with atheris (libFuzzer), for a bounded time.

Seeds are small valid images of every format (so the fuzzer starts inside the decoders); each input is
read by `recognize` with the bundled model, in the mode its first byte picks. An `ImageError` is the
expected refusal; any other exception is a crash: the input is saved to --crash-dir (one file per
distinct exception site) and fuzzing goes on. Pillow and digitrec are instrumented (Python coverage);
the C decoders underneath are exercised but not instrumented.

    .venv/bin/pip install atheris        # a manylinux wheel: nothing to compile
    .venv/bin/python benchmarks/fuzz_atheris.py --seconds 60
    .venv/bin/python benchmarks/fuzz_atheris.py --runs 20000 --crash-dir tests/regressions

Runs in a child process (libFuzzer ends its process when done); this one reports: inputs tried, crashes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import subprocess
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MODES = ("auto", "digit", "number")
MAX_PIXELS = 4_000_000  # the server's limit is 40M; smaller keeps each input fast (limits: test_imageio.py)


def seed_corpus(folder: Path) -> None:
    """A few small images in every format and several modes: starting points inside each decoder."""
    import numpy as np
    from PIL import Image

    ink = np.full((24, 40), 230, np.uint8)
    ink[4:20, 8:12] = 20
    ink[4:8, 8:30] = 20
    grey = Image.fromarray(ink)
    for mode, formats in {"L": ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"), "RGBA": ("PNG", "TIFF", "WEBP"),
                          "1": ("PNG", "BMP", "TIFF"), "P": ("PNG", "GIF"), "CMYK": ("JPEG", "TIFF"),
                          "I;16": ("PNG", "TIFF"), "F": ("TIFF",)}.items():
        image = grey.convert(mode) if mode != "I;16" else Image.fromarray(ink.astype(np.uint16) * 257)
        for fmt in formats:
            buffer = io.BytesIO()
            image.save(buffer, fmt)
            (folder / f"{mode.replace(';', '')}.{fmt.lower()}").write_bytes(buffer.getvalue())
    frames = [grey, grey.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    for fmt in ("GIF", "TIFF", "WEBP", "PNG"):
        buffer = io.BytesIO()
        frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:])
        (folder / f"animated.{fmt.lower()}").write_bytes(buffer.getvalue())


def worker(crash_dir: Path, libfuzzer_args: list[str]) -> None:
    """The fuzzed process: instrument, load the model once, hand `one_input` to libFuzzer (never returns)."""
    import atheris

    with atheris.instrument_imports():
        import PIL.Image  # noqa: F401  (instrumented for coverage)

        from digitrec.imageio import ImageError
        from digitrec.recognize import recognize
    from digitrec.runtime import load_classifier

    warnings.simplefilter("ignore")  # Pillow warns about corrupt metadata; only exceptions matter here
    classifier = load_classifier()
    seen: set[str] = set()

    def one_input(data: bytes) -> None:
        if not data:
            return
        mode = MODES[data[0] % 3]
        try:
            recognize(data[1:], classifier, mode, max_pixels=MAX_PIXELS)
        except ImageError:
            return
        except Exception as error:  # a crash: keep the input, report it once per site, go on fuzzing
            site = traceback.extract_tb(error.__traceback__)[-1]
            key = f"{type(error).__name__}-{Path(site.filename).name}-{site.lineno}"
            if key not in seen:
                seen.add(key)
                name = f"atheris-{key}-{hashlib.sha1(data).hexdigest()[:10]}.bin"
                (crash_dir / name).write_bytes(data[1:])
                print(f"CRASH {key}: {error!r} -> {crash_dir / name} (mode {mode})", file=sys.stderr, flush=True)

    atheris.Setup([sys.argv[0], *libfuzzer_args], one_input)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="fuzzing time (default: 60)")
    parser.add_argument("--runs", type=int, default=-1, help="stop after this many inputs (default: no limit)")
    parser.add_argument("--max-len", type=int, default=8192, help="largest input in bytes (default: 8192)")
    parser.add_argument("--crash-dir", type=Path, default=None,
                        help="where crashing inputs are saved (default: a temporary folder)")
    parser.add_argument("--worker", nargs=2, metavar=("CRASH_DIR", "ARGS_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(Path(args.worker[0]), json.loads(args.worker[1]))
        return 0

    work = Path(tempfile.mkdtemp(prefix="digitrec-atheris-"))
    corpus, crash_dir = work / "corpus", args.crash_dir or work / "crashes"
    corpus.mkdir()
    crash_dir.mkdir(parents=True, exist_ok=True)
    seed_corpus(corpus)
    libfuzzer = [f"-max_total_time={args.seconds}", f"-runs={args.runs}", f"-max_len={args.max_len}",
                 "-rss_limit_mb=3000", "-timeout=30", "-print_final_stats=1", f"-artifact_prefix={crash_dir}/",
                 str(corpus)]
    command = [sys.executable, __file__, "--worker", str(crash_dir), json.dumps(libfuzzer)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds + 300, check=False)
    log = result.stderr
    (work / "atheris.log").write_text(log)
    runs = re.findall(r"stat::number_of_executed_units: (\d+)", log) or re.findall(r"Done (\d+) runs", log)
    coverage = re.findall(r"#\d+\s+\w+\s+cov: (\d+) ft: (\d+)", log)
    crashes = [line for line in log.splitlines() if line.startswith("CRASH ")]
    native = sorted(crash_dir.glob("crash-*")) + sorted(crash_dir.glob("oom-*")) + sorted(crash_dir.glob("timeout-*"))
    print(f"atheris: {runs[-1] if runs else '?'} inputs in a {args.seconds} s budget (libFuzzer exit"
          f" {result.returncode}); coverage {coverage[-1][0] + ' edges' if coverage else '?'};"
          f" {len(crashes)} distinct Python crash sites, {len(native)} native crashes/OOMs/timeouts")
    for line in crashes:
        print(f"  {line}")
    for path in native:
        print(f"  native: {path}")
    print(f"log: {work / 'atheris.log'}; crashing inputs: {crash_dir}")
    return 1 if crashes or native or not runs else 0


if __name__ == "__main__":
    sys.exit(main())
