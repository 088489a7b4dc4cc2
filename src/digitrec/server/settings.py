"""Server configuration: one frozen dataclass, filled by `digitrec serve` (or the environment for workers)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

# uvicorn starts each worker process by importing a factory, so settings cross the process boundary here.
SETTINGS_ENV = "DIGITREC_SERVER_SETTINGS"


@dataclass(frozen=True)
class ServerSettings:
    """Everything the app needs to know; fixed at start (the API can never pick another model or file)."""

    model_path: Path | None = None  # bundle folder or .tflite; None: the model bundled with digitrec
    max_body_bytes: int = 10_000_000  # request bodies above this are refused (413) before being read
    max_pixels: int = 40_000_000  # images above this are refused (413) from their header, before decoding
    request_timeout_s: float = 10.0  # a request still running after this gets a 503 (bounds slow uploads too)
    inference_threads: int = 0  # recognitions run at once (each thread has its own interpreter); 0: CPU count
    cors_origins: tuple[str, ...] = ()  # origins allowed to call the API from a browser; empty: CORS off

    @property
    def max_concurrent_inferences(self) -> int:
        return self.inference_threads or os.cpu_count() or 1

    def to_env(self) -> str:
        values = dataclasses.asdict(self)
        values["model_path"] = None if self.model_path is None else str(self.model_path)
        values["cors_origins"] = list(self.cors_origins)
        return json.dumps(values)

    @classmethod
    def from_env(cls, text: str) -> ServerSettings:
        values = json.loads(text)
        if values.get("model_path") is not None:
            values["model_path"] = Path(values["model_path"])
        values["cors_origins"] = tuple(values.get("cors_origins", ()))
        return cls(**values)
