"""Soak `digitrec serve` with valid and hostile requests for minutes; count answers and watch server memory.

The server runs as its own process (`python -m digitrec serve`) on 127.0.0.1 and a free port; this process
is the client: N threads, each with a keep-alive connection, sending a weighted mix of requests, plus
one thread that keeps a slow upload ("slowloris") open until the server's time limit answers it.

Every kind of request has one expected status: valid images 200 with the same answer every time,
hostile ones their 4xx (or 503 for the slow upload). Anything else is counted as unexpected. Server RSS
is sampled from /proc every few seconds; its slope after warm-up says whether memory leaks.

    .venv/bin/python benchmarks/soak.py                    # 3 minutes, 8 clients, the bundled model
    .venv/bin/python benchmarks/soak.py --seconds 600 --clients 16 --model runs/seed

Bounded: stops at --seconds or --max-requests, whichever comes first; talks to 127.0.0.1 only.
Exit code 1 when there was any unexpected answer or memory grew faster than --max-slope-mb-per-min.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "docs" / "examples"
HOST = "127.0.0.1"  # loopback only, always
BOUNDARY = "digitrecsoakboundary"
MAX_BODY = 10_000_000  # the server's default limit


# --- 1. Requests -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One kind of request: how to send it and the status it must get."""

    name: str
    weight: int  # relative frequency in the mix
    expected: int  # the only acceptable status
    path: str
    body: bytes
    content_type: str
    valid: bool  # a valid request (its answer must also be the same every time)
    declared_length: int | None = None  # send this Content-Length, but only `body` (an over-limit declaration)


def multipart(field: str, data: bytes, filename: str = "upload.png") -> tuple[bytes, str]:
    head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode(), f"multipart/form-data; boundary={BOUNDARY}"


def drawn_digit_png() -> bytes:
    """A 28x28 PNG of a drawn 7, white on black (the shape of an MNIST digit)."""
    digit = np.zeros((28, 28), np.uint8)
    cv2.polylines(digit, [np.array([[7, 7], [21, 7], [13, 23]])], False, 255, 2, cv2.LINE_AA)
    return cv2.imencode(".png", digit)[1].tobytes()


def png_header_claiming(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header claims width x height pixels: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(
        b"IEND", b"")


def request_kinds() -> list[Kind]:
    predict = "/api/v1/predict"
    small = drawn_digit_png()
    photo = (EXAMPLES / "photo-digit.jpg").read_bytes()
    number = (EXAMPLES / "photo-number.jpg").read_bytes()
    kinds = []
    for name, weight, data in (("digit-28x28-png", 40, small), ("photo-jpeg", 12, photo),
                               ("number-jpeg", 12, number)):
        body, content_type = multipart("file", data)
        kinds.append(Kind(name, weight, 200, predict, body, content_type, valid=True))
    noise = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8))[1]
    hostile = [
        ("not-an-image", 5, 415, predict, *multipart("file", b"just some text, not an image")),
        ("truncated-png", 5, 415, predict, *multipart("file", noise.tobytes()[:4000])),
        ("pixel-bomb-100mp", 5, 413, predict, *multipart("file", png_header_claiming(10_000, 10_000))),
        ("missing-field", 5, 422, predict, *multipart("other", small)),
        ("bad-mode", 4, 422, predict + "?mode=letters", *multipart("file", small)),
        ("empty-body", 3, 422, predict, b"", "image/png"),
    ]
    kinds += [Kind(name, weight, status, path, body, content_type, valid=False)
              for name, weight, status, path, body, content_type in hostile]
    # Over the body limit: declared (refused before reading) and streamed without a length (counted as read).
    kinds.append(Kind("body-over-10mb-declared", 3, 413, predict, b"\0" * 65536, "image/png", valid=False,
                      declared_length=MAX_BODY + 1))
    kinds.append(Kind("body-over-10mb-streamed", 1, 413, predict, b"\0" * (MAX_BODY + 500_000), "image/png",
                      valid=False))
    return kinds


# --- 2. Clients --------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What every client saw; guarded by `lock`."""

    lock: threading.Lock
    statuses: dict[str, Counter]
    latencies: dict[str, list[float]]
    unexpected: list[str]
    answers: dict[str, str]

    def record(self, kind: str, status: int | str, seconds: float, problem: str | None) -> None:
        with self.lock:
            self.statuses[kind][status] += 1
            self.latencies[kind].append(seconds)
            if problem is not None:
                self.unexpected.append(f"{kind}: {problem}")


def send(connection: http.client.HTTPConnection, kind: Kind) -> tuple[int, bytes]:
    if kind.name.endswith("-streamed"):  # chunked, no Content-Length: the server must count as it reads
        def chunks():
            for start in range(0, len(kind.body), 1 << 20):
                yield kind.body[start : start + (1 << 20)]

        connection.request("POST", kind.path, body=chunks(), headers={"content-type": kind.content_type},
                           encode_chunked=True)
    elif kind.declared_length is not None:
        connection.putrequest("POST", kind.path)
        connection.putheader("content-type", kind.content_type)
        connection.putheader("content-length", str(kind.declared_length))
        connection.endheaders(kind.body)  # a first piece only: the server answers from the header
    else:
        connection.request("POST", kind.path, body=kind.body, headers={"content-type": kind.content_type})
    response = connection.getresponse()
    return response.status, response.read()


def check(kind: Kind, status: int, body: bytes, tally: Tally) -> str | None:
    """None when the answer is the expected one; else what is wrong."""
    if status != kind.expected:
        return f"status {status}, expected {kind.expected}: {body[:200]!r}"
    try:
        answer = json.loads(body)
    except ValueError:
        return f"not JSON: {body[:200]!r}"
    if not kind.valid:
        return None if isinstance(answer.get("detail"), str) and "Traceback" not in body.decode() else \
            f"bad error body {body[:200]!r}"
    reading = json.dumps({key: answer[key] for key in ("digit", "number", "digits")}, sort_keys=True)
    with tally.lock:
        first = tally.answers.setdefault(kind.name, reading)
    return None if reading == first else f"answer changed: {reading[:120]} != {first[:120]}"


def client(port: int, kinds: list[Kind], stop: threading.Event, budget: list[int], tally: Tally,
           seed: int) -> None:
    rng = random.Random(seed)
    weights = [kind.weight for kind in kinds]
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    while not stop.is_set():
        with tally.lock:
            if budget[0] <= 0:
                return
            budget[0] -= 1
        kind = rng.choices(kinds, weights)[0]
        started = time.perf_counter()
        try:
            status, body = send(connection, kind)
            problem = check(kind, status, body, tally)
        except (OSError, http.client.HTTPException) as error:
            # A refused over-limit upload may see its connection closed mid-send; the answer must still come.
            status, problem = type(error).__name__, f"{type(error).__name__}: {error}"
        tally.record(kind.name, status, time.perf_counter() - started, problem)
        if problem is not None or kind.expected != 200:
            connection.close()  # start clean after errors (the server may close after a refusal)
            connection = http.client.HTTPConnection(HOST, port, timeout=30)
    connection.close()


def slowloris(port: int, stop: threading.Event, tally: Tally, limit_s: float) -> None:
    """Upload 1 byte every 0.5 s of a declared 1 kB body, until the server answers (503 at its time limit)."""
    while not stop.is_set():
        started = time.perf_counter()
        status: int | str = "no answer"
        with socket.create_connection((HOST, port), timeout=limit_s + 10) as sock:
            sock.sendall(b"POST /api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                         b"Content-Length: 1000\r\n\r\n")
            while time.perf_counter() - started < limit_s + 10:
                readable, _, _ = select.select([sock], [], [], 0.5)
                if readable:
                    head = sock.recv(4096)
                    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else repr(head[:40])
                    break
                try:
                    sock.sendall(b"\0")
                except OSError as error:
                    status = type(error).__name__
                    break
        seconds = time.perf_counter() - started
        problem = None if status == 503 and seconds < limit_s + 2 else f"status {status} after {seconds:.1f} s"
        tally.record("slow-upload", status, seconds, problem)


# --- 3. Server and memory ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def start_server(port: int, model: str | None, timeout_s: float, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "digitrec", "serve", "--host", HOST, "--port", str(port),
               "--timeout", str(timeout_s), "--no-access-log"]
    if model:
        command += ["--model", model]
    server = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per minute."""
    if len(samples) < 3:
        return 0.0
    times = np.array([t for t, _ in samples])
    values = np.array([v for _, v in samples])
    return float(np.polyfit(times, values, 1)[0] * 60)


# --- 4. Main ---------------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000, q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="how long to run (default: 180)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent connections (default: 8)")
    parser.add_argument("--max-requests", type=int, default=500_000, help="stop after this many (default: 500000)")
    parser.add_argument("--model", default=None, help="model for the server (default: the bundled model)")
    parser.add_argument("--server-timeout", type=float, default=10.0,
                        help="the server's --timeout, which the slow upload must meet (default: 10)")
    parser.add_argument("--sample-every", type=float, default=5.0, help="RSS sampling period, s (default: 5)")
    parser.add_argument("--warm-up", type=float, default=30.0,
                        help="seconds of RSS left out of the slope (allocator and caches settling; default: 30)")
    parser.add_argument("--max-slope-mb-per-min", type=float, default=1.0,
                        help="RSS slope after warm-up above this fails the run (default: 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="request mix seed (default: 0)")
    args = parser.parse_args(argv)

    kinds = request_kinds()
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="digitrec-soak-")) / "server.log"
    server = start_server(port, args.model, args.server_timeout, log)
    tally = Tally(threading.Lock(), defaultdict(Counter), defaultdict(list), [], {})
    stop = threading.Event()
    budget = [args.max_requests]
    threads = [threading.Thread(target=client, args=(port, kinds, stop, budget, tally, args.seed + index))
               for index in range(args.clients)]
    threads.append(threading.Thread(target=slowloris, args=(port, stop, tally, args.server_timeout)))
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    try:
        samples.append((0.0, rss_mb(server.pid)))
        for thread in threads:
            thread.start()
        while time.monotonic() - started < args.seconds and any(t.is_alive() for t in threads[:-1]):
            time.sleep(min(args.sample_every, max(0.0, args.seconds - (time.monotonic() - started))))
            assert server.poll() is None, f"the server died:\n{log.read_text()[-3000:]}"
            samples.append((time.monotonic() - started, rss_mb(server.pid)))
        stop.set()
        for thread in threads:
            thread.join(timeout=args.server_timeout + 15)
        elapsed = time.monotonic() - started
        samples.append((elapsed, rss_mb(server.pid)))
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=15)
    server_log = log.read_text(errors="replace")

    # Report.
    total = sum(sum(counter.values()) for counter in tally.statuses.values())
    print(f"soak: {elapsed:.0f} s, {args.clients} clients + 1 slow upload, 127.0.0.1, {total} requests "
          f"({total / elapsed:.1f}/s)")
    print(f"{'kind':<26} {'expect':>6} {'requests':>9}  {'statuses':<22} {'p50 ms':>8} {'p99 ms':>8}")
    expected = {kind.name: kind.expected for kind in kinds} | {"slow-upload": 503}
    for name in [kind.name for kind in kinds] + ["slow-upload"]:
        counter, latencies = tally.statuses.get(name, Counter()), tally.latencies.get(name, [])
        statuses = " ".join(f"{status}:{count}" for status, count in sorted(counter.items(), key=str))
        print(f"{name:<26} {expected[name]:>6} {sum(counter.values()):>9}  {statuses:<22} "
              f"{percentile(latencies, 50):>8.1f} {percentile(latencies, 99):>8.1f}")
    valid = [seconds for kind in kinds if kind.valid for seconds in tally.latencies.get(kind.name, [])]
    print(f"valid requests: {len(valid)}, p50 {percentile(valid, 50):.1f} ms, p99 {percentile(valid, 99):.1f} ms")
    print(f"unexpected answers: {len(tally.unexpected)}")
    for problem in tally.unexpected[:10]:
        print(f"  {problem}")
    settled = [(t, v) for t, v in samples if t >= args.warm_up]
    slope = slope_mb_per_min(settled)
    print(f"server RSS MB: start {samples[0][1]:.1f}, after warm-up {settled[0][1] if settled else float('nan'):.1f},"
          f" end {samples[-1][1]:.1f}, max {max(v for _, v in samples):.1f};"
          f" slope after {args.warm_up:g} s: {slope:+.3f} MB/min")
    print("RSS samples (s:MB): " + " ".join(f"{t:.0f}:{v:.1f}" for t, v in samples))
    tracebacks = server_log.count("Traceback")
    print(f"tracebacks in the server log: {tracebacks}")
    ok = not tally.unexpected and slope <= args.max_slope_mb_per_min and tracebacks == 0
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
