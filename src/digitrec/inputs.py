"""Which image files a job reads: PATH arguments (files, folders, globs), folders walked (optionally
recursively), and lists of paths, all streamed: nothing here holds the whole list of inputs.

Shared by `digitrec predict` and the Ray engine, so both read the same files under the same names.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".heic", ".heif",
                  ".avif", ".pgm", ".ppm", ".pbm", ".pnm", ".jfif"}
Input = tuple[str, str | None]  # (name as given, path; None when a pattern matched nothing)


def expand_paths(paths: Iterable[str], recursive: bool = False) -> Iterator[Input]:
    """PATH arguments -> (name as given, path or None when nothing matched), in order, without repeats."""
    seen: set[str] = set()
    for given in paths:
        for name, path in _expand_one(given, recursive):
            if name not in seen:
                seen.add(name)
                yield name, path


def _expand_one(given: str, recursive: bool) -> Iterator[Input]:
    path = Path(given)
    if path.is_dir():
        yield from ((str(p), str(p)) for p in walk_images(path, recursive))
    elif path.exists() or path.is_symlink() or not glob.has_magic(given):
        yield given, given
    else:
        matches = [m for m in sorted(glob.glob(given, recursive=True)) if not Path(m).is_dir()]
        yield from ((m, m) for m in matches) if matches else [(given, None)]


def walk_images(folder: Path, recursive: bool) -> Iterator[Path]:
    """A folder's image files, sorted by name; subfolders (after the files) when `recursive`."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return
    subfolders = []
    for entry in entries:
        if entry.is_dir():
            subfolders.append(entry)
        elif Path(entry.name).suffix.lower() in IMAGE_SUFFIXES and entry.is_file():
            yield Path(entry.path)
    if recursive:
        for entry in subfolders:
            if not entry.is_symlink():  # a link back up would loop forever
                yield from walk_images(Path(entry.path), recursive)


def listed_paths(source: str) -> Iterator[str]:
    """--from-list: one path per line (blank lines skipped), streamed from a file or stdin ('-')."""
    file = sys.stdin if source == "-" else open(source, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
    with file:
        for line in file:
            line = line.rstrip("\r\n")
            if line.strip():
                yield line
