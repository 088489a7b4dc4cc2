"""Keras models and weights written whole or not at all, and safely on a full disk.

Keras writes `.weights.h5`, `.keras` and legacy `.h5` files through HDF5, and HDF5 does not survive a
failed write: on a full disk it raised, then segfaulted at interpreter exit while flushing the broken
file again (`digitrec train` exited 139 with h5py tracebacks). So each file is serialized into memory
first, and only plain bytes reach the disk, through `atomic_write_bytes`: a full disk is then one
OutputError naming the file, the temporary is deleted, and the previous file stays.

The in-memory writers are Keras's own (`keras.src.saving`): the public API takes only paths. Where a
Keras version lacks them, the file is written by path as before (correct, without the disk-full safety).
A training-only module: it imports Keras.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import keras

from digitrec.atomic import atomic_write_bytes

log = logging.getLogger(__name__)


def weights_bytes(model: keras.Model) -> bytes | None:
    """The bytes `model.save_weights(path)` would write (optimizer state included), or None if this
    Keras cannot serialize into memory."""
    try:
        from keras.src.saving import saving_lib

        save_state = saving_lib._save_state
        buffer = io.BytesIO()
        store = saving_lib.H5IOStore(buffer, mode="w")
    except (ImportError, AttributeError, TypeError) as error:
        log.debug("Keras cannot save weights into memory (%s); writing by path", error)
        return None
    try:
        save_state(model, weights_store=store, assets_store=None, inner_path="", visited_saveables=set())
    finally:
        store.close()
    return buffer.getvalue()


def model_bytes(model: keras.Model) -> bytes | None:
    """The bytes of `model.save("x.keras")`, or None if this Keras cannot serialize into memory."""
    try:
        from keras.src.saving import saving_lib
    except ImportError:
        return None
    buffer = io.BytesIO()
    try:
        saving_lib.save_model(model, buffer)
    except (AttributeError, TypeError) as error:  # no file-object support, or a model too large for memory
        log.debug("Keras cannot save the model into memory (%s); writing by path", error)
        return None
    return buffer.getvalue()


def legacy_h5_bytes(model: keras.Model) -> bytes | None:
    """The bytes of the legacy HDF5 file (`model.save("x.h5")`), or None if unavailable in memory."""
    try:
        import h5py
        from keras.src.legacy.saving import legacy_h5_format
    except ImportError:
        return None
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        legacy_h5_format.save_model_to_hdf5(model, file)
    return buffer.getvalue()


def save_weights(model: keras.Model, path: Path) -> None:
    """`model.save_weights(path)`, atomically (`path` must end in `.weights.h5`, as Keras requires)."""
    data = weights_bytes(model)
    if data is None:
        model.save_weights(path)
    else:
        atomic_write_bytes(path, data)


def save_model(model: keras.Model, path: Path) -> None:
    """`model.save(path)` for a `.keras` or legacy `.h5` path, atomically."""
    data = legacy_h5_bytes(model) if Path(path).suffix == ".h5" else model_bytes(model)
    if data is None:
        model.save(path)
    else:
        atomic_write_bytes(path, data)
