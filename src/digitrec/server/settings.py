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
    # Corrections and model versions (issue 11): see server/feedback.py and server/hotswap.py.
    host: str = "127.0.0.1"  # the address served: feedback is open only on loopback unless a token is set
    api_token: str | None = None  # bearer token the feedback endpoints require; None: no token
    store: str | None = None  # corrections store path or URL; None: $DIGITREC_STORE, else the user data folder
    models_dir: Path | None = None  # model versions; None: $DIGITREC_MODELS, else the user data folder
    reload_interval_s: float = 1.0  # how often the active model version is checked (when --model is not given)
    # Admission: past any of these budgets a request is refused at once (503 + Retry-After), never queued.
    max_queued: int = 64  # recognitions waiting for a thread (small ones take ~3 ms each)
    max_queue_wait_s: float = 4.0  # ... and refused when the oldest of them has waited this long (a stuck queue)
    # Upload bytes held by requests in flight (each counts twice its length: the body and the image cut
    # from it); a body is only read once its bytes are admitted. 6 uploads at the 10 MB limit.
    max_inflight_upload_bytes: int = 128_000_000
    # Pixels being decoded or read at once; a 40 MP RGBA PNG peaks at ~320 MB while it is read, so this
    # keeps one such image (plus small ones) in memory at a time.
    max_inflight_pixels: int = 48_000_000
    # Big images are read in child processes killed at their request's deadline (server/readers.py); off:
    # in threads, which finish what they started.
    reader_processes: bool = True
    # Connections: past this many, the longest-idle one is closed for the new one (never "too many open
    # files"); 0: from the open-file limit.
    max_connections: int = 0
    header_timeout_s: float = 10.0  # a connection must send a request's headers within this (slow/idle clients)
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this
    max_header_bytes: int = 16_384  # the request line and headers together

    @property
    def max_concurrent_inferences(self) -> int:
        return self.inference_threads or os.cpu_count() or 1

    @property
    def connection_limit(self) -> int:
        """`max_connections`, or what the process's open-file limit leaves room for (files, model, threads)."""
        if self.max_connections:
            return self.max_connections
        try:
            import resource  # POSIX only
        except ImportError:
            return 1024
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return 4096
        return max(16, min(4096, soft - 128))

    @property
    def feedback_mode(self) -> str:
        """ "token" (writes need the bearer token), "open" (loopback, no token) or "off" (exposed, no token)."""
        if self.api_token:
            return "token"
        return "open" if is_loopback(self.host) else "off"

    def to_env(self) -> str:
        values = dataclasses.asdict(self)
        values["model_path"] = None if self.model_path is None else str(self.model_path)
        values["cors_origins"] = list(self.cors_origins)
        values["models_dir"] = None if self.models_dir is None else str(self.models_dir)
        return json.dumps(values)

    @classmethod
    def from_env(cls, text: str) -> ServerSettings:
        values = json.loads(text)
        if values.get("model_path") is not None:
            values["model_path"] = Path(values["model_path"])
        values["cors_origins"] = tuple(values.get("cors_origins", ()))
        if values.get("models_dir") is not None:
            values["models_dir"] = Path(values["models_dir"])
        return cls(**values)


def is_loopback(host: str) -> bool:
    """Whether `host` (a --host value) only accepts connections from this machine."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name that may resolve to anything: treat as exposed
