"""Dependencies shared by the routers, as `Annotated` aliases; everything comes from `app.state` (set in lifespan)."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import Depends, Request

from digitrec.runtime import Classifier
from digitrec.server.settings import ServerSettings


def get_settings(request: Request) -> ServerSettings:
    return request.app.state.settings


def get_classifier(request: Request) -> Classifier:
    return request.app.state.classifier


def get_inference_limiter(request: Request) -> anyio.CapacityLimiter:
    return request.app.state.inference_limiter


SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
ClassifierDep = Annotated[Classifier, Depends(get_classifier)]
InferenceLimiterDep = Annotated[anyio.CapacityLimiter, Depends(get_inference_limiter)]
