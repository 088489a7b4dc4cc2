"""Pydantic models for every request parameter and response of the JSON API (they become the OpenAPI docs)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class Mode(StrEnum):
    """What to read: `digit` (one digit), `number` (a row of digits), `auto` (decide from the image)."""

    auto = "auto"
    digit = "digit"
    number = "number"


class DigitPrediction(BaseModel):
    """One digit found in the image."""

    digit: int = Field(ge=0, le=9, description="the most likely class")
    confidence: float = Field(ge=0, le=1, description="probability of `digit`")
    box: tuple[int, int, int, int] = Field(description="where the digit is in the image: [x, y, w, h] in pixels")
    probabilities: list[float] = Field(min_length=10, max_length=10, description="probability of each class 0-9")
    low_confidence: bool = Field(description="true when the model is not sure of this digit")
    not_digit: float = Field(default=0.0, ge=0, le=1,
                             description="the model's probability that this crop is not a digit at all")
    image: str | None = Field(
        default=None,
        description="the 28x28 image the model saw, as a PNG data URL (only with `?images=true`)",
    )


class LinePrediction(BaseModel):
    """One row of digits, read left to right."""

    text: str = Field(description="the row's digits, left to right")
    digits: list[int] = Field(description="indices of the row's digits in `digits`")
    box: tuple[int, int, int, int] = Field(description="where the row is: [x, y, w, h] in pixels")


class PredictResponse(BaseModel):
    """The digit or number read from an image; `digits` is empty when no digit was found."""

    digit: int | None = Field(description="the digit, when one digit was read; else null")
    number: str | None = Field(
        description="the digits read, left to right, when they form one row; null when none was found or "
                    "when there are several rows (read `lines`)"
    )
    confidence: float | None = Field(
        description="confidence in the whole answer: the digits' probabilities multiplied, times the "
                    "segmentation's certainty (how much better the chosen cut of touching digits is than "
                    "the next best); null when none was found"
    )
    digits: list[DigitPrediction] = Field(description="each digit found, left to right")
    low_confidence: bool = Field(description="true when the answer should not be trusted (or no digit was found)")
    reason: str | None = Field(
        default=None,
        description="why the answer is empty or flagged: null, `no_ink` (nothing found), `not_a_digit` (ink "
                    "found, but not a digit), `several_digits` (digit mode, but several digits are there), "
                    "`several_lines` (more than one row: read `lines`), `unsure` (the answer is flagged)",
    )
    lines: list[LinePrediction] = Field(default_factory=list, description="the rows of digits, top to bottom")
    truncated: bool = Field(default=False, description="true when the reading was cut at the digit limit")
    mode: str = Field(description="the mode that produced the answer")
    width: int = Field(description="image width in pixels (the frame of every `box`)")
    height: int = Field(description="image height in pixels")
    timing_ms: float = Field(description="server time spent reading and recognising the image, in milliseconds")


class ModelInfo(BaseModel):
    """The model this server was started with."""

    architecture: str | None = Field(description="network architecture name, from the model's metadata")
    test_accuracy: float | None = Field(description="accuracy on the MNIST test set when it was trained")
    test_n: int | None = Field(default=None, description="number of test images behind `test_accuracy`")
    version: str = Field(description="digitrec version serving the model")
    trained: str | None = Field(default=None, description="when the model was trained (ISO 8601)")
    runtime: str = Field(description="inference runtime: `litert` or `keras`")
    input_format: dict[str, Any] = Field(description="the input the network takes")
    classes: list[int] = Field(description="output classes, in the order of `probabilities`")
    model_version: str | None = Field(default=None, description="the model version served (`digitrec models`);"
                                      " null: an explicit --model or the bundled model")
    feedback: str = Field(default="open", description="whether corrections are accepted: `open`, `token` (they"
                          " need `Authorization: Bearer <token>`) or `off` (exposed server, no token)")


class Health(BaseModel):
    """Liveness and readiness."""

    status: str = Field(description="`ok` once the model is loaded")


class ErrorResponse(BaseModel):
    """Every error: one message saying what went wrong and how to fix it."""

    detail: str
