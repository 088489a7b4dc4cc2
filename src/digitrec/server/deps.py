"""Dependencies shared by the routers, as `Annotated` aliases; everything comes from `app.state` (set in lifespan).

They are `async def` although they never await: FastAPI runs a plain `def` dependency in the thread pool,
and three thread hops per request cost more than the whole inference on a small image.
"""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import Depends, Request

from digitrec.runtime import Classifier
from digitrec.server.admission import Admission
from digitrec.server.hotswap import ServedModel
from digitrec.server.settings import ServerSettings


async def get_settings(request: Request) -> ServerSettings:
    return request.app.state.settings


async def get_classifier(request: Request) -> Classifier:
    return request.app.state.classifier


async def get_served_model(request: Request) -> ServedModel:
    """The model and its version, as they are when the request starts (a hot swap does not change them)."""
    return request.app.state.served


async def get_inference_limiter(request: Request) -> anyio.CapacityLimiter:
    return request.app.state.inference_limiter


async def get_admission(request: Request) -> Admission:
    """The server's budgets and recognition threads (see `admission`)."""
    return request.app.state.admission


SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
ClassifierDep = Annotated[Classifier, Depends(get_classifier)]
ServedModelDep = Annotated[ServedModel, Depends(get_served_model)]
InferenceLimiterDep = Annotated[anyio.CapacityLimiter, Depends(get_inference_limiter)]
AdmissionDep = Annotated[Admission, Depends(get_admission)]
