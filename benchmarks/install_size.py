"""What `pip install digitrec` costs: venv size and install time, core vs extras.

    python benchmarks/install_size.py [--extras train,ray]

Builds the wheel from this checkout, then for the core and each extra asked for: a fresh venv, `pip install
WHEEL[extra]` with its real dependencies (from pip's cache after the first run, so the time is mostly
unpacking and compiling bytecode, not downloading), the venv's size on disk, and whether `import
tensorflow` works there. The goal for the core: <= 500 MB and no TensorFlow.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def build_wheel(work: Path) -> Path:
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(work), str(source)],
                   check=True)
    return next(work.glob("digitrec-*.whl"))


def measure(wheel: Path, extra: str, work: Path) -> tuple[float, float, bool, float]:
    """-> (install seconds, venv MB, `import tensorflow` works, empty-venv MB)."""
    venv = work / f"venv-{extra or 'core'}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    empty = size_mb(venv)
    target = f"{wheel}[{extra}]" if extra else str(wheel)
    started = time.perf_counter()
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", target], check=True)
    seconds = time.perf_counter() - started
    has_tf = subprocess.run([str(venv / "bin" / "python"), "-c", "import tensorflow"], capture_output=True,
                            check=False).returncode == 0
    return seconds, size_mb(venv), has_tf, empty


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--extras", default="train,ray", help="extras to measure besides the core (default: train,ray)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="digitrec-install-"))
    try:
        wheel = build_wheel(work)
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        print(f"wheel {wheel.name}: {wheel.stat().st_size / 2**20:.1f} MB; load {load}")
        print("\n| install | venv size | install time | `import tensorflow` |")
        print("|---|---|---|---|")
        core_ok = True
        for extra in ["", *filter(None, args.extras.split(","))]:
            seconds, mb, has_tf, empty = measure(wheel, extra, work)
            name = f"pip install \"digitrec[{extra}]\"" if extra else "pip install digitrec"
            print(f"| `{name}` | {mb:.0f} MB ({empty:.0f} MB of it the empty venv) | {seconds:.0f} s | "
                  f"{'works' if has_tf else 'fails'} |", flush=True)
            if not extra:
                core_ok = mb <= 500 and not has_tf
        print(f"\ncore goal (<= 500 MB, no TensorFlow): {'met' if core_ok else 'NOT met'}")
        return 0 if core_ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
