"""`predict --engine ray`: batch recognition with Ray Data, on this machine or a Ray cluster.

Ray Data reads the files (local folders, globs, or any pyarrow filesystem URI: s3://, gs://, ...) and
streams them through `map_batches` into a pool of actors; each actor loads the model once (a
`reader.Reader`) and builds every row with `Reader.entry`, the function `digitrec predict` uses, so the rows
carry exactly the fields of `predict --json`. An unreadable image is a row with `error`; it never fails
the job. A local output file is written on the driver as batches arrive (JSON Lines or one Parquet
file); an output URI is written by the cluster as a folder of Parquet or JSON files.
"""

from __future__ import annotations

import glob
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class RayJob:
    """What to read, with what, and where the rows go."""

    paths: tuple[str, ...]  # files, folders, globs or filesystem URIs
    output: str  # OUT.parquet or OUT.jsonl: a local file, or a URI (then a folder of files)
    mode: str = "auto"
    model: str | None = None  # None: the bundled model (each worker must see the same path)
    address: str | None = None  # Ray cluster; None: $RAY_ADDRESS, else start a local Ray
    recursive: bool = True  # Ray Data always reads folders recursively; kept for the CLI's flag
    actors: int | None = None  # recognising actors; None: one per CPU of the cluster
    batch_size: int = 32  # images per map_batches call


@dataclass(frozen=True)
class RaySummary:
    rows: int
    errors: int
    seconds: float


class RecognizeBatch:
    """A Ray Data actor: loads the classifier once, then turns batches of file bytes into result rows."""

    def __init__(self, model: str | None, mode: str) -> None:
        from digitrec.output import parquet_schema
        from digitrec.reader import Reader

        self.reader = Reader(model)
        self.mode = mode
        self.schema = parquet_schema(self.reader.error_entry("", ""))

    def __call__(self, batch: dict[str, Any]) -> Any:
        from digitrec.output import entries_to_arrow

        entries = [self.reader.entry(str(path), bytes(data), self.mode)
                   for path, data in zip(batch["path"], batch["bytes"], strict=True)]
        return entries_to_arrow(entries, self.schema)  # a pyarrow Table: one schema for every block


def split_sources(paths: tuple[str, ...], recursive: bool) -> tuple[list[str], list[str]]:
    """-> (what Ray Data reads, local names that are no readable file: error rows).

    Local files, folders and globs are expanded here as `digitrec predict` expands them (same files,
    same names); URIs (s3://, gs://, ...) go to Ray Data as they are, folders read recursively.
    """
    from digitrec.inputs import expand_paths

    sources: list[str] = []
    missing: list[str] = []
    local = [path for path in paths if "://" not in path]
    for name, path in expand_paths(local, recursive):
        (sources if path is not None and Path(path).is_file() else missing).append(name)
    sources += [path for path in paths if "://" in path]
    return sources, missing


def run_job(job: RayJob) -> RaySummary:
    """Recognise every image of `job.paths` on Ray and write the rows to `job.output`."""
    import ray

    from digitrec.output import output_format

    kind = output_format(job.output)
    if kind == "csv":
        raise ValueError(f"{job.output}: --engine ray writes .parquet or .jsonl")
    if "://" not in job.output and Path(job.output).exists():
        raise ValueError(f"{job.output} exists: remove it first")
    sources, missing = split_sources(job.paths, job.recursive)
    if not ray.is_initialized():
        ray.init(address=job.address, include_dashboard=False, logging_level=logging.WARNING)
    started = time.perf_counter()
    actors = job.actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
    # Reading files is I/O: the read tasks reserve no CPU, else a pool with one actor per CPU would hold
    # every CPU and the reads feeding it could never be scheduled (a deadlock on a 2-CPU machine).
    extensions = None
    if any("://" in source for source in sources):  # folders on a remote filesystem: their images only
        from digitrec.inputs import IMAGE_SUFFIXES

        extensions = sorted({form for suffix in IMAGE_SUFFIXES for form in (suffix[1:], suffix[1:].upper())})
    dataset = ray.data.read_binary_files(sources, include_paths=True, file_extensions=extensions, num_cpus=0)
    rows = dataset.map_batches(RecognizeBatch, fn_constructor_kwargs={"model": job.model, "mode": job.mode},
                               batch_size=job.batch_size, batch_format="numpy",
                               compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1)
    if not sources:
        raise ValueError(f"no images found in {', '.join(job.paths)}")
    if "://" in job.output:
        if missing:
            raise ValueError(f"{missing[0]}: no such file")
        (rows.write_parquet if kind == "parquet" else rows.write_json)(job.output)
        table = ray.data.read_parquet(job.output) if kind == "parquet" else ray.data.read_json(job.output)
        count = table.count()
        errors = table.filter(lambda row: row["error"] is not None).count()
    else:
        count, errors = write_local(rows, missing_rows(missing, job), Path(job.output), kind)
    return RaySummary(count, errors, time.perf_counter() - started)


def missing_rows(missing: list[str], job: RayJob) -> Any:
    """Error rows for named inputs that are no file (a pattern that matched nothing, a missing file)."""
    from digitrec.output import entries_to_arrow, parquet_schema
    from digitrec.reader import Reader

    if not missing:
        return None
    reader = Reader(job.model)
    entries = [reader.error_entry(name, "no file matches this pattern" if glob.has_magic(name) else "no such file")
               for name in missing]
    return entries_to_arrow(entries, parquet_schema(reader.error_entry("", "")))


def write_local(rows: Any, first: Any, path: Path, kind: str) -> tuple[int, int]:
    """Stream the dataset's batches (after `first`, a Table or None) to one local file on the driver;
    returns (rows, rows with an error)."""
    import itertools

    from digitrec.output import JsonLinesWriter, arrow_to_entries

    count = errors = 0
    partial = path.with_name(path.name + ".partial")
    writer: Any = None
    batches = rows.iter_batches(batch_format="pyarrow", batch_size=None)
    try:
        for table in itertools.chain([first] if first is not None else [], batches):
            count += table.num_rows
            errors += table.num_rows - table.column("error").null_count
            if kind == "parquet":
                import pyarrow.parquet as pq

                writer = writer or pq.ParquetWriter(partial, table.schema)
                writer.write_table(table)
            else:
                writer = writer or JsonLinesWriter(open(partial, "w", encoding="utf-8"))  # noqa: SIM115
                for entry in arrow_to_entries(table):
                    writer.write(entry)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise ValueError("no images found in the inputs")
    partial.replace(path)
    return count, errors
