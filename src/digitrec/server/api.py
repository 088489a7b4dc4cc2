"""The JSON API under /api/v1: read the digit or number in an image, and describe the model."""

from __future__ import annotations

import base64
import time
from functools import cache, partial
from typing import Any, TypeVar

import cv2
import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from digitrec import __version__
from digitrec.bundle import INPUT_FORMAT
from digitrec.recognize import Recognition, recognize
from digitrec.runtime import Classifier, LiteRTClassifier
from digitrec.server.admission import BIG_UPLOAD_BYTES, Admission, is_big
from digitrec.server.deps import ServedModelDep, SettingsDep
from digitrec.server.hotswap import ServedModel
from digitrec.server.schemas import DigitPrediction, ErrorResponse, LinePrediction, Mode, ModelInfo, PredictResponse
from digitrec.server.settings import ServerSettings
from digitrec.server.upload import declared_length, read_image_bytes

router = APIRouter(prefix="/api/v1", tags=["recognition"])
T = TypeVar("T")

# The body is read by hand (to cap its size before anything parses it), so describe it for OpenAPI here.
PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The image: multipart form field `file`, or the raw image bytes as the body.",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"],
                           "properties": {"file": {"type": "string", "format": "binary"}}},
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
# The query parameters are read by hand too (`query_parameter`): FastAPI's own parsing and validation of
# these two was ~a quarter of the event loop's Python per request. Described for OpenAPI as FastAPI would.
MODE_HELP = "`digit`, `number`, or `auto` to decide from the image"
IMAGES_HELP = "add each digit's 28x28 model input as a PNG data URL"
PREDICT_BODY["parameters"] = [
    {"name": "mode", "in": "query", "required": False, "description": MODE_HELP,
     "schema": {"type": "string", "enum": [mode.value for mode in Mode], "title": "Mode", "default": "auto",
                "description": MODE_HELP}},
    {"name": "images", "in": "query", "required": False, "description": IMAGES_HELP,
     "schema": {"type": "boolean", "title": "Images", "default": False, "description": IMAGES_HELP}},
]
PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorResponse, "description": "Body over the size limit, or image over the pixel limit"},
    415: {"model": ErrorResponse, "description": "Not an image digitrec can read"},
    422: {"model": ErrorResponse, "description": "No image in the request, or bad query parameters"},
    503: {"model": ErrorResponse, "description": "The server is busy (retry after `Retry-After` seconds), or the"
                                                 " request took longer than the server's time limit"},
}


@router.post("/predict", response_model=PredictResponse, responses=PREDICT_ERRORS, openapi_extra=PREDICT_BODY)
async def predict(request: Request, reply: Response) -> Response:
    """Read the digit or number in an image (multipart field `file`, or the image bytes as the body)."""
    if request.scope["query_string"]:
        mode = query_parameter(request, "mode", Mode, Mode.auto)
        images = query_parameter(request, "images", bool, False)
    else:
        mode, images = Mode.auto, False
    # Read from app.state here rather than through Depends (deps.py): FastAPI's dependency solving was ~30%
    # of the event loop's Python per request, and this route is the one that runs hundreds of times a second.
    state = request.app.state
    served: ServedModel = state.served  # as it is when the request starts (a hot swap does not change it)
    settings: ServerSettings = state.settings
    admission: Admission = state.admission
    # Admitted before a byte is read: refused now if its lane is full (over 1 MB: the big images' lane), and
    # twice the length taken from the upload budget (the body, and a copy on its way to be read).
    length = declared_length(request, settings.max_body_bytes)
    if "content-length" in request.headers:  # chunked: its size (and lane) is known once read, 413 past the limit
        admission.refuse_if_busy(big=length > BIG_UPLOAD_BYTES)
    upload = admission.reserve_upload(2 * length)
    try:
        data = await read_image_bytes(request, settings.max_body_bytes)
        started = time.perf_counter()
        deadline = getattr(request.state, "deadline", time.monotonic() + settings.request_timeout_s)
        reply.headers["X-Model-Version"] = served.version or "unversioned"  # the registry version answering
        big = is_big(data)
        if big and admission.readers is not None and isinstance(served.classifier, LiteRTClassifier):
            # In a child process that is killed at the deadline (the model is loaded there from its files).
            run = partial(admission.readers.recognize, data, served.classifier.source, mode.value,
                          max_pixels=settings.max_pixels, deadline=deadline)
        else:
            run = partial(recognize_upload, data, served.classifier, mode.value, max_pixels=settings.max_pixels)
        del data  # the worker holds the bytes now (and the upload budget until it is done with them)
        recognition = await admission.run(run, deadline=deadline, holding=upload, big=big)
    finally:
        upload.release()
    response = to_response(recognition, with_images=images)
    response.timing_ms = round((time.perf_counter() - started) * 1000, 3)
    # Serialized here, once: returned as a model, FastAPI would validate it again against
    # `response_model` and encode it through jsonable_encoder (a third of the request's own Python).
    return Response(response.model_dump_json(), media_type="application/json", headers=dict(
        (name, value) for name, value in reply.headers.items() if name != "content-length"))


@router.get("/model", response_model=ModelInfo)
async def model_info(served: ServedModelDep, settings: SettingsDep) -> ModelInfo:
    """Describe the model this server runs: architecture, test accuracy, version, input format."""
    classifier = served.classifier
    metadata = classifier.source.metadata
    return ModelInfo(
        architecture=metadata.get("architecture"),
        test_accuracy=metadata.get("test_accuracy"),
        test_n=metadata.get("test_n"),
        version=__version__,
        trained=metadata.get("date"),
        runtime="litert" if isinstance(classifier, LiteRTClassifier) else "keras",
        input_format=metadata.get("input") or INPUT_FORMAT,
        classes=list(range(10)),
        model_version=served.version,
        feedback=settings.feedback_mode,
    )


@cache
def validator(kind: type) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


def query_parameter(request: Request, name: str, kind: type[T], default: T) -> T:
    """A query parameter validated as FastAPI would (lax pydantic: "true"/"1"/"yes" for a bool), with the same
    422 when it is not valid."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return validator(kind).validate_python(raw)  # type: ignore[arg-type]  # types are hashable
    except ValidationError as error:
        raise RequestValidationError([{**problem, "loc": ("query", name)} for problem in error.errors()]) from None


def recognize_upload(data: memoryview, classifier: Classifier, mode: str, *, max_pixels: int) -> Recognition:
    """`recognize` an upload (a view of its body), copied to bytes here, on a recognition thread: a copy on
    the event loop held it for milliseconds per big upload."""
    return recognize(bytes(data), classifier, mode, max_pixels=max_pixels)


def to_response(recognition: Recognition, *, with_images: bool) -> PredictResponse:
    digits = [
        DigitPrediction(
            digit=result.digit,
            confidence=result.confidence,
            box=result.box,
            probabilities=list(result.probabilities),
            low_confidence=result.low_confidence,
            not_digit=result.not_digit,
            image=png_data_url(result.image) if with_images else None,
        )
        for result in recognition.digits
    ]
    return PredictResponse(
        digit=recognition.digit,
        number=recognition.number,
        confidence=recognition.confidence,
        digits=digits,
        low_confidence=recognition.low_confidence or not digits,
        reason=recognition.reason,
        lines=[LinePrediction(text=line.text, digits=list(line.digits), box=line.box) for line in recognition.lines],
        truncated=recognition.truncated,
        mode=recognition.mode,
        width=recognition.width,
        height=recognition.height,
        timing_ms=0.0,
    )


def warm_up(classifier: Classifier) -> None:
    """Read one small drawn digit, so that imports and first-call set-up happen before the first request."""
    digit = np.zeros((28, 28), np.uint8)  # (28, 28): a 7, white on black
    cv2.polylines(digit, [np.array([[7, 7], [21, 7], [13, 23]])], False, 255, 2)
    recognize(cv2.imencode(".png", digit)[1].tobytes(), classifier, "auto")


def png_data_url(image: np.ndarray) -> str:
    """(28, 28) float32 in [0, 1] -> `data:image/png;base64,...` (white digit on black, as the model saw it)."""
    pixels = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)  # (28, 28)
    ok, png = cv2.imencode(".png", pixels)
    if not ok:
        raise RuntimeError("PNG encoding of a 28x28 image failed")
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii")
