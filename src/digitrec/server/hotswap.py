"""The served model: the registry's active version, swapped for a newly promoted one (or a rollback)
within seconds, without a restart.

A request takes the `ServedModel` that is current when it starts and keeps it to the end, so in-flight
requests finish on the model they started with; a swap only changes what the next request gets. The new
model is loaded and warmed up off the event loop before it is installed, and if it fails to load the old one
keeps serving. With an explicit `--model` nothing is watched: that file is what was asked for.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
from fastapi import FastAPI

from digitrec.registry import Registry, RegistryError
from digitrec.runtime import Classifier
from digitrec.server.settings import ServerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """A loaded model and the registry version it is (None: an explicit --model, or the bundled model)."""

    classifier: Classifier
    version: str | None


def load_served(settings: ServerSettings, loader: Callable[[Path | None], Classifier]) -> ServedModel:
    """The model to start with: --model, else the registry's active version, else the bundled model."""
    if settings.model_path is not None:
        return ServedModel(loader(settings.model_path), None)
    try:
        active = Registry(settings.models_dir).active()
    except RegistryError as error:
        log.error("model registry unusable (%s); serving the bundled model", error)
        active = None
    return ServedModel(loader(active.path if active else None), active.name if active else None)


def install(app: FastAPI, served: ServedModel) -> None:
    app.state.served = served
    app.state.classifier = served.classifier  # what the routers that predate versions read


@contextlib.asynccontextmanager
async def watching(app: FastAPI, settings: ServerSettings, loader: Callable[[Path | None], Classifier],
                   warm_up: Callable[[Classifier], None]) -> AsyncIterator[None]:
    """While the app runs, poll the active pointer and swap models when it changes (not with --model)."""
    if settings.model_path is not None:
        yield
        return
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_watch, app, settings, loader, warm_up)
        try:
            yield
        finally:
            tasks.cancel_scope.cancel()


async def _watch(app: FastAPI, settings: ServerSettings, loader: Callable[[Path | None], Classifier],
                 warm_up: Callable[[Classifier], None]) -> None:
    registry = Registry(settings.models_dir)
    failed: set[str] = set()  # versions that would not load: not retried until the pointer names another
    while True:
        await anyio.sleep(settings.reload_interval_s)
        try:
            wanted = registry.pointer().version
        except RegistryError as error:
            log.warning("cannot read the active model version: %s", error)
            continue
        if wanted is None or wanted == app.state.served.version or wanted in failed:
            continue
        try:
            path = registry.get(wanted).path
            classifier = await anyio.to_thread.run_sync(loader, path)
            await anyio.to_thread.run_sync(warm_up, classifier)
        except Exception as error:  # any load failure: keep serving what works, say why in the log
            log.error("model version %s not served: %s", wanted, error)
            failed.add(wanted)
            continue
        previous = app.state.served.version
        install(app, ServedModel(classifier, wanted))
        failed.clear()
        log.info("now serving model version %s (was %s)", wanted, previous or "the bundled model")
