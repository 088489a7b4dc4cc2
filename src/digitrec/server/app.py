"""Assemble the FastAPI app: lifespan (load the model), middleware, error handlers, routers. Nothing else."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import cv2
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware

from digitrec import __version__
from digitrec.bundle import ModelSource
from digitrec.runtime import Classifier, LiteRTClassifier, load_classifier
from digitrec.server import admission, api, connections, feedback, health, hotswap, pages
from digitrec.server.admission import Admission
from digitrec.server.errors import install_error_handlers
from digitrec.server.middleware import (
    HeadAsGetMiddleware,
    HealthFirstMiddleware,
    RequestTimeoutMiddleware,
    SecurityHeadersMiddleware,
)
from digitrec.server.settings import SETTINGS_ENV, ServerSettings

log = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.0005

ClassifierLoader = Callable[[Path | None], Classifier]


def create_app(settings: ServerSettings, classifier_loader: ClassifierLoader = load_classifier) -> FastAPI:
    """The app for `settings`; the model is loaded (by `classifier_loader`) when the app starts, not here."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # OpenCV's own thread pool split each call on a digit's few hundred pixels across cores, then spun
        # waiting for them: ~0.2 ms of CPU per small request in a thread of its own, on cores the recognition
        # threads already fill. One thread each: the same pixels (OpenCV's results do not depend on it).
        cv2.setNumThreads(1)
        served = hotswap.load_served(settings, classifier_loader)  # --model, else the active version
        classifier = served.classifier
        api.warm_up(classifier)  # the first user's answer is as fast as the rest
        log.info("serving %s", classifier.source.description)
        app.state.settings = settings
        hotswap.install(app, served)
        app.state.inference_limiter = anyio.CapacityLimiter(settings.max_concurrent_inferences)
        connections.quiet_accept_errors(asyncio.get_running_loop())
        # Recognitions run Python in threads; at the default 5 ms switch interval each of the event loop's
        # wake-ups waited up to 5 ms for the GIL, and under load /healthz took seconds. 0.5 ms keeps the loop
        # responsive for a few percent of the threads' throughput.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        admission.return_big_buffers_to_the_os()
        app.state.admission = Admission(threads=settings.max_concurrent_inferences, max_queued=settings.max_queued,
                                        upload_bytes=settings.max_inflight_upload_bytes,
                                        pixels=settings.max_inflight_pixels,
                                        max_queue_wait_s=settings.max_queue_wait_s,
                                        reader_source=reader_source(settings, classifier))
        app.state.feedback_store = feedback.LazyStore(settings.store)
        try:
            async with hotswap.watching(app, settings, classifier_loader, api.warm_up):
                yield
        finally:
            app.state.feedback_store.close()
            app.state.admission.shutdown()

    app = FastAPI(
        title="digitrec",
        version=__version__,
        description="Read handwritten digits and numbers in images. Draw or upload at `/`; JSON API below.",
        lifespan=lifespan,
        docs_url=None,  # pages.py serves /docs and /redoc from local copies, not FastAPI's CDN pages
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(RequestTimeoutMiddleware, timeout_s=settings.request_timeout_s)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(HeadAsGetMiddleware)
    # Text (page, scripts, JSON) shrinks 3-5x; PNG/JPEG bodies are skipped by Starlette's default exclusions.
    app.add_middleware(GZipMiddleware, minimum_size=1000, compresslevel=6)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["content-type"])
    app.add_middleware(HealthFirstMiddleware)  # outermost: a probe waits for nothing else
    app.include_router(api.router)  # first: routes are matched in order, and the API is what runs most often
    app.include_router(pages.router)
    app.include_router(health.router)
    app.include_router(feedback.router)
    app.mount(pages.STATIC_URL, pages.static_files(), name="static")
    app.mount(pages.DOCS_ASSETS_URL, pages.docs_assets(), name="docs-assets")
    return app


def reader_source(settings: ServerSettings, classifier: Classifier) -> ModelSource | None:
    """The model the reader processes start with; None (big images read in threads) when they are off, or when
    the classifier is not a LiteRT file a child can load (Keras, a test's stand-in)."""
    if settings.reader_processes and isinstance(classifier, LiteRTClassifier):
        return classifier.source
    return None


def app_from_environment() -> FastAPI:
    """uvicorn factory for worker processes: the settings `digitrec serve` put in the environment."""
    return create_app(ServerSettings.from_env(os.environ[SETTINGS_ENV]))
