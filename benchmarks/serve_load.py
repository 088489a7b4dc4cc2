"""Load-test `digitrec serve`: latency, throughput, errors, server memory and cold start, then the same model
served the original's way (Keras on TensorFlow) for the ratio.

The server runs in its own process on 127.0.0.1; this process is the client: N concurrent keep-alive
connections speaking plain HTTP/1.1 over asyncio (light enough not to steal the server's CPU), each
sending multipart uploads as a browser does, until a fixed number of requests is done.

    .venv/bin/python benchmarks/serve_load.py                       # the bundled model
    .venv/bin/python benchmarks/serve_load.py --model runs/seed/model.tflite \\
        --keras-model ../shared/seed/mnist_cnn_model.h5 --workers 1
    # an older server's code (e.g. `git archive <commit> src | tar -x -C /tmp/old`) against this one's:
    .venv/bin/python benchmarks/serve_load.py --skip-keras --compare-src /tmp/old/src
    # both servers up together, 3 rounds alternating which goes first (ABA BAB...), medians reported:
    .venv/bin/python benchmarks/serve_load.py --skip-keras --compare-src /tmp/old/src --only small-1 small-16 --rounds 3

Besides latency and throughput, each scenario reports the server's CPU per request from /proc, for the event
loop's thread (HTTP, routing, validation, JSON) and for the rest (decoding and recognising): unlike req/s,
these hardly move when other jobs share the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
MNIST_TEST_IMAGES = REPO_ROOT.parent / "shared" / "mnist" / "t10k-images-idx3-ubyte.gz"
BOUNDARY = "digitrecbenchboundary"

# Goals for this 2-core machine (issue 5).
GOALS = {"small_p50_ms": 5.0, "photo_p50_ms": 30.0, "small_rps_16": 400.0, "rss_mb": 200.0, "cold_start_s": 2.0}


# --- 1. Images ------------------------------------------------------------------------------------------


def a_digit() -> np.ndarray:
    """A handwritten 7, (28, 28) uint8 white on black: MNIST's first test image, or a drawn one without MNIST."""
    if MNIST_TEST_IMAGES.is_file():
        from digitrec.idx import read_idx

        return read_idx(MNIST_TEST_IMAGES)[0]
    digit = np.zeros((28, 28), np.uint8)
    cv2.polylines(digit, [np.array([[7, 7], [21, 7], [13, 23]])], False, 255, 2, cv2.LINE_AA)
    return digit


def small_png(digit: np.ndarray) -> bytes:
    return cv2.imencode(".png", digit)[1].tobytes()


def photo_jpeg(digit: np.ndarray, size: int = 1000) -> bytes:
    """A 1000x1000 colour 'phone photo' of the digit in pen on paper: uneven light, noise, JPEG at 90."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    paper = 205 + 35 * (1 - (xx - 0.3) ** 2 - (yy - 0.4) ** 2)  # (H, W) lit from the upper left
    ink = cv2.resize(digit, (size // 2, size // 2), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255
    ink = cv2.GaussianBlur(ink, (5, 5), 0)
    page = paper.copy()
    top = size // 4
    page[top:top + size // 2, top:top + size // 2] *= 1 - 0.8 * ink
    page += rng.normal(0, 4, page.shape)
    colour = np.stack([page * 0.93, page * 0.98, page], axis=-1)  # (H, W, 3) BGR, warm paper
    return cv2.imencode(".jpg", np.clip(colour, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def multipart_request(port: int, image: bytes, filename: str, content_type: str) -> bytes:
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + image + f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (f"POST /api/v1/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


# --- 2. The server under test ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(command: list[str], port: int, first_request: bytes,
                 pythonpath: str | None = None) -> tuple[subprocess.Popen[bytes], float]:
    """Start a server; return it and the seconds from launch to its first correct answer (cold start)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    while time.perf_counter() - started < 120:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(first_request)
                if read_response(sock)[0] == 200:
                    return process, time.perf_counter() - started
        except OSError:
            time.sleep(0.005)
    process.kill()
    raise RuntimeError("server did not answer within 120 s")


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = content_length(head)
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), body


def content_length(head: bytes) -> int:
    return int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))


def thread_cpu_s(pid: int) -> tuple[float, float]:
    """(main thread, all other threads) CPU seconds of a process so far, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    main = rest = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        seconds = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        if task.name == str(pid):
            main += seconds
        else:
            rest += seconds
    return main, rest


def server_rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of the server and its worker processes, in MB."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.is_file():
        pids += [int(child) for child in children.read_text().split()]
    current = peak = 0.0
    for each in pids:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{each}/status").read_text().splitlines())
        current += int(fields["VmRSS"].split()[0]) / 1024
        peak += int(fields["VmHWM"].split()[0]) / 1024
    return current, peak


# --- 3. The load --------------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    answers: set[str] = field(default_factory=set)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0


async def one_client(port: int, request: bytes, remaining: list[int], result: LoadResult) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while remaining[0] > 0:
            remaining[0] -= 1
            started = time.perf_counter()
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = content_length(head)
                body = await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError):
                result.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            if head.split()[1] != b"200":
                result.errors += 1
                continue
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.answers.add(str(json.loads(body)["number"]))
    finally:
        writer.close()


async def load(port: int, request: bytes, requests: int, clients: int) -> LoadResult:
    result = LoadResult()
    remaining = [requests]
    started = time.perf_counter()
    await asyncio.gather(*(one_client(port, request, remaining, result) for _ in range(clients)))
    result.seconds = time.perf_counter() - started
    return result


# --- 4. One server, every scenario ----------------------------------------------------------------------


@dataclass
class LiveServer:
    """A server under test, started and warm, with its requests made for its port."""

    name: str
    process: subprocess.Popen[bytes]
    requests: dict[str, bytes]
    report: dict[str, object]


def launch(name: str, command: list[str], port: int, images: dict[str, tuple[bytes, str, str]],
           pythonpath: str | None = None) -> LiveServer:
    requests = {key: multipart_request(port, *value) for key, value in images.items()}
    # Cold start: the median of three launches (the first after a build also pays for .pyc files and a cold
    # page cache); the last launch stays up for the load.
    cold_starts = []
    for attempt in range(3):
        process, seconds = start_server(command, port, requests["small"], pythonpath)
        cold_starts.append(seconds)
        if attempt < 2:
            process.terminate()
            process.wait(timeout=30)
    report: dict[str, object] = {"server": name, "cold_start_s": round(statistics.median(cold_starts), 3),
                                 "cold_starts_s": [round(seconds, 3) for seconds in cold_starts]}
    report["rss_idle_mb"] = round(server_rss_mb(process.pid)[0], 1)
    return LiveServer(name, process, requests, report)


def measure(server: LiveServer, label: str, image: str, count: int, clients: int) -> dict[str, object]:
    """One scenario on a live server: warm-up, then `count` requests from `clients` clients."""
    port = int(server.requests[image].split(b"Host: 127.0.0.1:", 1)[1].split(b"\r\n", 1)[0])
    asyncio.run(load(port, server.requests[image], max(count // 20, clients), clients))  # warm up
    main_before, rest_before = thread_cpu_s(server.process.pid)
    result = asyncio.run(load(port, server.requests[image], count, clients))
    main_after, rest_after = thread_cpu_s(server.process.pid)
    served = max(1, len(result.latencies_ms))
    row = {"loop_cpu_ms": round((main_after - main_before) * 1000 / served, 3),
           "work_cpu_ms": round((rest_after - rest_before) * 1000 / served, 3),
           "load_average": os.getloadavg()[0],
           "requests": count, "clients": clients, "p50_ms": round(result.percentile(50), 2),
           "p99_ms": round(result.percentile(99), 2), "rps": round(result.rps, 1),
           "errors": result.errors, "answers": sorted(result.answers)}
    print(f"  {server.name:7s} {label:9s} {count:5d} req, {clients:2d} clients: p50 {row['p50_ms']:7.2f} ms"
          f"  p99 {row['p99_ms']:7.2f} ms  {row['rps']:7.1f} req/s  errors {result.errors}"
          f"  CPU/req loop {row['loop_cpu_ms']:.2f} + work {row['work_cpu_ms']:.2f} ms"
          f"  answers {row['answers']}  (load {os.getloadavg()[0]:.1f})", flush=True)
    return row


def finish(server: LiveServer) -> dict[str, object]:
    try:
        server.report["rss_mb"], server.report["rss_peak_mb"] = (round(value, 1)
                                                                 for value in server_rss_mb(server.process.pid))
    finally:
        server.process.terminate()
        server.process.wait(timeout=30)
    return server.report


def median_row(rows: list[dict[str, object]]) -> dict[str, object]:
    """The rounds of one scenario on one server: the median of each figure, and every round's req/s."""
    row = dict(rows[-1])
    for key in ("loop_cpu_ms", "work_cpu_ms", "p50_ms", "p99_ms", "rps", "load_average"):
        row[key] = round(statistics.median(float(each[key]) for each in rows), 3)  # type: ignore[arg-type]
    row["errors"] = sum(int(each["errors"]) for each in rows)  # type: ignore[call-overload]
    row["answers"] = sorted({answer for each in rows for answer in each["answers"]})  # type: ignore[attr-defined]
    row["rounds_rps"] = [each["rps"] for each in rows]
    return row


def run_server_scenarios(name: str, command: list[str], port: int, images: dict[str, tuple[bytes, str, str]],
                         scenarios: list[tuple[str, str, int, int]],
                         pythonpath: str | None = None) -> dict[str, object]:
    server = launch(name, command, port, images, pythonpath)
    try:
        for label, image, count, clients in scenarios:
            server.report[label] = measure(server, label, image, count, clients)
    finally:
        finish(server)
    return server.report


def run_interleaved(servers: list[LiveServer], scenarios: list[tuple[str, str, int, int]],
                    rounds: int) -> list[dict[str, object]]:
    """Every scenario on every server, `rounds` times, alternating which goes first (AB, BA, AB, ...).

    Run one after the other, the second server read better or worse with whatever the machine's other jobs
    did meanwhile (and page cache, CPU frequency): the same code measured 313 vs 394 and 356 vs 305 req/s
    in two back-to-back runs. Both are up together here, and the median of the rounds is reported.
    """
    rows: dict[tuple[str, str], list[dict[str, object]]] = {}
    try:
        for round_index in range(rounds):
            for label, image, count, clients in scenarios:
                order = servers if round_index % 2 == 0 else servers[::-1]
                for server in order:
                    rows.setdefault((server.name, label), []).append(measure(server, label, image, count, clients))
        for server in servers:
            for label, *_ in scenarios:
                server.report[label] = median_row(rows[server.name, label])
    finally:
        for server in servers:
            finish(server)
    return [server.report for server in servers]


def serve_keras(port: int, model: str) -> None:
    """The baseline server: the same app, but the model run by Keras on TensorFlow (as the original did)."""
    import uvicorn

    from digitrec.runtime import load_classifier
    from digitrec.server.app import create_app
    from digitrec.server.settings import ServerSettings

    app = create_app(ServerSettings(model_path=Path(model)), lambda path: load_classifier(path, prefer="keras"))
    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")


def verdict(value: float, goal: float, lower_is_better: bool = True) -> str:
    met = value <= goal if lower_is_better else value >= goal
    if met:
        return "met"
    if goal == 0 or value == 0:  # e.g. errors, whose goal is 0: no ratio to give
        return f"MISSED by {abs(value - goal):.3g}"
    ratio = value / goal if lower_is_better else goal / value
    return f"MISSED by {abs(value - goal):.3g} ({ratio:.2f}x the goal)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="bundle folder or .tflite to serve (default: the bundled model)")
    parser.add_argument("--keras-model", default=None,
                        help="the same model as .keras/.h5 (or a bundle) for the baseline (default: --model)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per small-image scenario (default: 2000)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients for throughput (default: 16)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (default: 1)")
    parser.add_argument("--skip-keras", action="store_true", help="skip the Keras baseline (default: run it)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here (default: no)")
    parser.add_argument("--compare-src", default=None, metavar="DIR",
                        help="also run the same scenarios on the server whose code is in DIR (its `src`), both up"
                             " together, alternating which goes first (--rounds), and print the ratios (default: no)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="with --compare-src: rounds of every scenario on each server; medians (default: 3)")
    parser.add_argument("--only", nargs="*", default=None, metavar="LABEL",
                        help="run only these scenarios, e.g. small-1 small-16 (default: all four)")
    parser.add_argument("--serve-keras-on-port", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_keras_on_port is not None:
        serve_keras(args.serve_keras_on_port, args.keras_model)
        return 0

    digit = a_digit()
    images = {"small": (small_png(digit), "digit.png", "image/png"),
              "photo": (photo_jpeg(digit), "photo.jpg", "image/jpeg")}
    print(f"images: 28x28 PNG {len(images['small'][0])} B, 1000x1000 JPEG {len(images['photo'][0]) / 1e3:.0f} kB;"
          f" {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} before the run", flush=True)
    if os.getloadavg()[0] > 0.5:
        print("  warning: other processes are using the CPU; latency and throughput will read worse", flush=True)
    n = args.requests
    scenarios = [("small-1", "small", n // 2, 1), ("photo-1", "photo", n // 10, 1),
                 (f"small-{args.clients}", "small", n, args.clients), (f"photo-{args.clients}", "photo", n // 10,
                                                                      args.clients)]
    if args.only:
        scenarios = [scenario for scenario in scenarios if scenario[0] in args.only]
    port = free_port()
    command = [sys.executable, "-m", "digitrec", "serve", "--port", str(port), "--no-access-log",
               "--workers", str(args.workers)] + (["--model", args.model] if args.model else [])
    if args.compare_src:
        servers = [launch("litert", command, port, images)]
        other_command = list(command)
        other_command[command.index("--port") + 1] = str(other_port := free_port())
        servers.append(launch("other", other_command, other_port, images, pythonpath=args.compare_src))
        litert, other = run_interleaved(servers, scenarios, args.rounds)
        reports = [litert]
        print(f"\nthis server vs {args.compare_src} (both up, {args.rounds} rounds alternating which goes first;"
              " medians):")
        for label, *_ in scenarios:
            new, old = litert[label], other[label]  # type: ignore[index]
            print(f"  {label:9s} {old['rps']:7.1f} -> {new['rps']:7.1f} req/s ({new['rps'] / old['rps']:4.2f}x;"
                  f" rounds {old['rounds_rps']} -> {new['rounds_rps']});"
                  f" p50 {old['p50_ms']:7.2f} -> {new['p50_ms']:7.2f} ms; CPU/req on the event loop"
                  f" {old['loop_cpu_ms']:.2f} -> {new['loop_cpu_ms']:.2f} ms, in workers {old['work_cpu_ms']:.2f} ->"
                  f" {new['work_cpu_ms']:.2f} ms")
    else:
        litert = run_server_scenarios("litert", command, port, images, scenarios)
        reports = [litert]
    if not args.skip_keras:
        keras_model = args.keras_model or args.model
        if keras_model is None:
            from digitrec.bundle import default_bundle_dir

            keras_model = str(default_bundle_dir())
        port = free_port()
        baseline = [sys.executable, __file__, "--serve-keras-on-port", str(port), "--keras-model", keras_model]
        few = [(label, image, max(count // 10, 16), clients) for label, image, count, clients in scenarios]
        reports.append(run_server_scenarios("keras", baseline, port, images, few))

    missing = {"p50_ms": float("nan"), "rps": float("nan")}  # a scenario left out with --only
    print("\nserver   cold start   RSS idle / after / peak")
    for report in reports:
        print(f"  {report['server']:7s} {report['cold_start_s']:6.2f} s   {report['rss_idle_mb']:6.1f} /"
              f" {report['rss_mb']:6.1f} / {report['rss_peak_mb']:6.1f} MB")
    print("\ngoals (LiteRT server):")
    checks = [
        ("p50, 28x28 PNG", litert.get("small-1", missing)["p50_ms"], GOALS["small_p50_ms"], "ms",  # type: ignore[index]
         True),
        ("p50, 1000x1000 JPEG", litert.get("photo-1", missing)["p50_ms"], GOALS["photo_p50_ms"],  # type: ignore[index]
         "ms", True),
        (f"req/s, {args.clients} clients, small", litert.get(f"small-{args.clients}", missing)["rps"],  # type: ignore[index]
         GOALS["small_rps_16"], "req/s", False),
        ("errors", sum(litert[label]["errors"] for label, *_ in scenarios), 0, "", True),  # type: ignore[index]
        ("server RSS (peak)", litert["rss_peak_mb"], GOALS["rss_mb"], "MB", True),
        ("cold start to first answer", litert["cold_start_s"], GOALS["cold_start_s"], "s", True),
    ]
    for label, value, goal, unit, lower in checks:
        if value != value:  # NaN: its scenario was left out (--only)
            continue
        print(f"  {label:28s} {value:8.2f} {unit:5s} goal {'<=' if lower else '>='} {goal:g}: "
              f"{verdict(float(value), goal, lower)}")  # type: ignore[arg-type]
    if len(reports) > 1:
        keras = reports[1]
        print("\nLiteRT vs Keras (the original's way):")
        for label, *_ in scenarios:
            fast, slow = litert[label], keras[label]  # type: ignore[index]
            print(f"  {label:9s} p50 {slow['p50_ms']:8.2f} -> {fast['p50_ms']:6.2f} ms"
                  f" ({slow['p50_ms'] / fast['p50_ms']:5.1f}x faster);"
                  f" {slow['rps']:7.1f} -> {fast['rps']:7.1f} req/s ({fast['rps'] / slow['rps']:5.1f}x)")
        print(f"  cold start {keras['cold_start_s']:.2f} -> {litert['cold_start_s']:.2f} s;"
              f" peak RSS {keras['rss_peak_mb']:.0f} -> {litert['rss_peak_mb']:.0f} MB")
    print(f"\nload average {os.getloadavg()[0]:.2f} after the run")
    if args.json:
        args.json.write_text(json.dumps({"goals": GOALS, "reports": reports}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
