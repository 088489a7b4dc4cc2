"""Optional parts of digitrec and how to install them: `pip install digitrec` is the light core.

The core reads images and serves through LiteRT. Training and Keras models need `[train]` (TensorFlow,
Keras, h5py), `evaluate --report` needs `[report]` (matplotlib), Parquet output needs `[parquet]`, the Ray
engine needs `[ray]`, HEIC photos need `[heic]`. When one is missing, `missing_extra` turns the
ModuleNotFoundError into one line that says what to install.
"""

from __future__ import annotations

# Top-level import name -> the extra that provides it.
EXTRA_FOR_MODULE = {
    "tensorflow": "train",
    "keras": "train",
    "h5py": "train",
    "matplotlib": "report",
    "pyarrow": "parquet",
    "ray": "ray",
    "pillow_heif": "heic",
}
WHAT_NEEDS = {
    "train": "training, export, fine-tuning and .keras/.h5 models need TensorFlow and Keras",
    "report": "the --report pictures need matplotlib",
    "parquet": "Parquet output needs pyarrow",
    "ray": "the Ray engine needs Ray Data",
    "heic": "HEIC photos need pillow-heif",
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says which extra to install."""


def missing_extra(error: ModuleNotFoundError) -> MissingExtraError | None:
    """The one-line explanation for a missing optional module, or None when it is not one of ours."""
    top = (error.name or "").split(".")[0]
    extra = EXTRA_FOR_MODULE.get(top)
    if extra is None:
        return None
    return MissingExtraError(f"{WHAT_NEEDS[extra]} ({top} is not installed): "
                             f"pip install \"digitrec[{extra}]\"")
