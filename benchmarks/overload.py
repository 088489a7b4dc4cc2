"""Overload `digitrec serve` the ways issue 10 found to take it down, and check it stays up and bounded.

Each scenario gets a fresh server process (so its peak RSS, VmHWM, is that scenario's own) on 127.0.0.1;
this process is the client. Under every load, a prober asks `/healthz` every 50 ms and another sends a
small digit every 250 ms: both must be answered at once (200, or 503 for the digit when the server is
full), never left waiting.

    scenarios                    goal (issue 10)
    png-rgb-16 / png-rgb-48      16 and 48 clients uploading a 39 MP mostly white RGB PNG, over and over
    png-rgba-16 / png-rgba-48    the same with a 39 MP RGBA PNG with some transparency
    jpeg-64 / jpeg-192           64 and 192 clients uploading a 9.9 MB JPEG
    mix-256                      256 clients of ordinary requests (small digits, photos, a number, junk)
      -> peak server RSS (with its reader processes) <= 1 GB, /healthz p99 <= 100 ms, small requests
         answered or refused at once
    bombs                        progressive JPEG with thousands of scans, TIFF with 60,000 pages:
      -> <= 2 s of server CPU per request (from /proc, all threads, until the CPU stops moving)
    idle-1100                    1,100 idle sockets against a server at `ulimit -n 1024`
      -> a normal request still answered within 5 s

    .venv/bin/python benchmarks/overload.py                      # every scenario, 30 s each (~6 min)
    .venv/bin/python benchmarks/overload.py --seconds 10 --only png-rgba-16 bombs
    .venv/bin/python benchmarks/overload.py --compare-src /tmp/old/src --rss-guard-mb 3000   # an older server

`--compare-src` runs the same scenarios against the server code in that folder (e.g. from `git archive`),
alternating which server goes first from one load to the next; `--rss-guard-mb` kills a server whose RSS
passes it (the old one reached 7 GB), and the table says so. Bomb files and images are made here, in
memory: nothing large is ever committed.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "server"))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from bombs import many_page_tiff, progressive_jpeg_bomb  # noqa: E402

from serve_load import a_digit, free_port, photo_jpeg, small_png  # noqa: E402

BOUNDARY = "digitrecoverloadboundary"
GOALS = {"rss_mb": 1000.0, "healthz_p99_ms": 100.0, "bomb_cpu_s": 2.0, "idle_answer_s": 5.0}
CHUNK = 256 * 1024


# --- 1. What the clients send ------------------------------------------------------------------------------


def big_png(mode: str, width: int = 7200, height: int = 5400) -> bytes:
    """A 39-megapixel mostly white PNG with one stroke; RGBA: a transparent corner (~280 kB either way)."""
    image = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(image).line([(width // 3, height // 3), (width // 2, 2 * height // 3)], fill=(0, 0, 0), width=60)
    if mode == "RGBA":
        alpha = Image.new("L", (width, height), 255)
        ImageDraw.Draw(alpha).rectangle([0, 0, width // 10, height // 10], fill=0)
        image.putalpha(alpha)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=6)
    return buffer.getvalue()


def big_jpeg(target: int = 9_900_000) -> bytes:
    """A noisy colour photo-sized JPEG of about `target` bytes (the 10 MB upload limit allows 10,000,000)."""
    rng = np.random.default_rng(0)
    width, height = 4400, 3300
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    for quality in (95, 92, 90, 85, 80, 75, 70):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
        if len(buffer.getvalue()) <= target:
            return buffer.getvalue()
    return buffer.getvalue()


def number_png() -> bytes:
    digit = 255 - a_digit()
    row = np.hstack([np.full((28, 8), 255, np.uint8)] + [np.hstack([digit, np.full((28, 8), 255, np.uint8)])] * 4)
    buffer = io.BytesIO()
    Image.fromarray(row).resize((row.shape[1] * 4, 28 * 4)).save(buffer, "PNG")
    return buffer.getvalue()


def request_bytes(port: int, image: bytes, filename: str, path: str = "/api/v1/predict") -> tuple[bytes, bytes]:
    """(head, body) of a multipart upload, as a browser sends it."""
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + image + f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode(), body


# --- 2. The server ---------------------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    killed_at_s: float | None = None  # by the RSS guard
    rss_samples_mb: list[float] = field(default_factory=list)
    threads_max: int = 0


def start_server(src: str | None, log: Path, nofile: int | None = None) -> Server:
    port = free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if src:
        env["PYTHONPATH"] = src

    def limit_files() -> None:
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    process = subprocess.Popen([sys.executable, "-m", "digitrec", "serve", "--port", str(port), "--no-access-log"],
                               stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=env, preexec_fn=limit_files)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(100).startswith(b"HTTP/1.1 200"):
                    return Server(process, port, log)
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start within 120 s")


def proc_status(pid: int) -> dict[str, str]:
    return dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())


def server_cpu_s(pid: int) -> float:
    """CPU seconds of the server and every process it started (its image readers), the ended ones included."""
    total = 0
    for each in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(value) for value in fields[11:15])  # utime + stime (all threads) + cutime + cstime
    return total / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """The pids of `pid`'s children, grandchildren, ... (the server's image-reader processes and their forkserver)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def tree_rss_mb(pid: int) -> float:
    """Resident memory of the server and every process it started, in MB."""
    total = 0.0
    for each in [pid, *descendants(pid)]:
        try:
            total += int(proc_status(each)["VmRSS"].split()[0]) / 1024
        except (OSError, KeyError):
            continue  # it ended
    return total


def watch(server: Server, stop: threading.Event, guard_mb: float, started: float) -> None:
    """Sample RSS (the server's and its children's together) and threads every 0.2 s; kill the server past
    `guard_mb` (it would take the machine down)."""
    while not stop.is_set() and server.process.poll() is None:
        try:
            status = proc_status(server.process.pid)
        except OSError:
            return
        rss = tree_rss_mb(server.process.pid)
        server.rss_samples_mb.append(rss)
        server.threads_max = max(server.threads_max, int(status["Threads"]))
        if rss > guard_mb:
            server.killed_at_s = time.monotonic() - started
            server.process.kill()
            return
        stop.wait(0.2)


def stop_server(server: Server) -> float:
    """Stop it; its peak RSS in MB: the highest sample of it and its children together, or the sum of their
    VmHWM (each process's own peak) if that is higher."""
    peak = max(server.rss_samples_mb, default=0.0)
    if server.process.poll() is None:
        high_water = 0.0
        for each in [server.process.pid, *descendants(server.process.pid)]:
            try:
                high_water += int(proc_status(each)["VmHWM"].split()[0]) / 1024
            except (OSError, KeyError):
                continue
        peak = max(peak, high_water)
        server.process.terminate()
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.process.kill()
    return peak


# --- 3. Clients ----------------------------------------------------------------------------------------------


async def exchange(port: int, head: bytes, body: bytes, timeout: float) -> tuple[str, float]:
    """Send one request (the body in chunks, stopping if the answer comes first); (status, seconds)."""
    started = time.monotonic()

    async def run() -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            answer = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
            writer.write(head)
            view = memoryview(body)
            for at in range(0, len(body), CHUNK):
                if answer.done():
                    break  # answered (refused) before the body was all sent: stop sending
                writer.write(view[at:at + CHUNK])
                try:
                    await writer.drain()
                except ConnectionError:
                    break
            response_head = await answer
            return response_head.split()[1].decode()
        finally:
            writer.close()

    try:
        status = await asyncio.wait_for(run(), timeout)
    except TimeoutError:
        status = "timeout"
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        status = "reset"
    return status, time.monotonic() - started


@dataclass
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)
    seconds: list[float] = field(default_factory=list)

    def add(self, status: str, seconds: float) -> None:
        self.statuses[status] += 1
        self.seconds.append(seconds)

    def p(self, q: float) -> float:
        return float(np.percentile(self.seconds, q)) * 1000 if self.seconds else float("nan")


async def clients(port: int, kinds: list[tuple[bytes, bytes]], count: int, seconds: float) -> Tally:
    tally = Tally()
    stop = time.monotonic() + seconds

    async def client(index: int) -> None:
        turn = index
        while time.monotonic() < stop:
            head, body = kinds[turn % len(kinds)]
            turn += 1
            status, took = await exchange(port, head, body, timeout=max(5.0, stop - time.monotonic() + 15))
            tally.add(status, took)
            if status in ("reset", "timeout"):
                await asyncio.sleep(0.05)

    await asyncio.gather(*(client(index) for index in range(count)))
    return tally


async def prober(port: int, request: tuple[bytes, bytes], every: float, seconds: float) -> Tally:
    tally = Tally()
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        status, took = await exchange(port, *request, timeout=10)
        tally.add(status, took)
        await asyncio.sleep(max(0.0, every - took))
    return tally


def probe_process(port: int, small: tuple[bytes, bytes], seconds: float, out: multiprocessing.Queue) -> None:
    """The /healthz and small-digit probers, in their own process: in the clients' event loop they would
    measure that loop's lag as much as the server's."""
    health = (f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode(), b"")

    async def both() -> tuple[Tally, Tally]:
        return await asyncio.gather(prober(port, health, 0.05, seconds), prober(port, small, 0.25, seconds))

    out.put(asyncio.run(both()))


def load(port: int, kinds: list[tuple[bytes, bytes]], count: int, seconds: float,
         small: tuple[bytes, bytes]) -> tuple[Tally, Tally, Tally]:
    results: multiprocessing.Queue = multiprocessing.Queue()
    probes = multiprocessing.Process(target=probe_process, args=(port, small, seconds, results), daemon=True)
    probes.start()
    work = asyncio.run(clients(port, kinds, count, seconds))
    health, probe = results.get(timeout=seconds + 60)
    probes.join(timeout=10)
    return work, health, probe


# --- 4. Scenarios ---------------------------------------------------------------------------------------------


def run_load(name: str, src: str | None, images: dict[str, bytes], kinds: list[str], count: int, seconds: float,
             guard_mb: float, logs: Path) -> dict[str, object]:
    server = start_server(src, logs / f"{name}.log")
    port = server.port
    requests = [request_bytes(port, images[kind], kind) for kind in kinds]
    small = request_bytes(port, images["small.png"], "small.png")
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(server, stop, guard_mb, time.monotonic()), daemon=True)
    watcher.start()
    cpu_before = server_cpu_s(server.process.pid)
    work, health, probe = load(port, requests, count, seconds, small)
    cpu = server_cpu_s(server.process.pid) - cpu_before if server.process.poll() is None else float("nan")
    stop.set()
    watcher.join()
    peak = stop_server(server)
    log_text = server.log.read_text(errors="replace")
    return {"scenario": name, "clients": count, "seconds": seconds, "peak_rss_mb": round(peak, 1),
            "killed_at_s": server.killed_at_s, "threads_max": server.threads_max,
            "answers": dict(work.statuses), "answer_p50_ms": round(work.p(50), 1),
            "healthz_p50_ms": round(health.p(50), 1), "healthz_p99_ms": round(health.p(99), 1),
            "healthz": dict(health.statuses), "small_p99_ms": round(probe.p(99), 1), "small": dict(probe.statuses),
            "server_cpu_s": round(cpu, 1), "log_tracebacks": log_text.count("Traceback"),
            "log_errors": log_text.count("ERROR")}


def run_bombs(src: str | None, logs: Path) -> list[dict[str, object]]:
    bombs = {"progressive-jpeg-3000-scans": ("bomb.jpg", progressive_jpeg_bomb(3000)),
             "tiff-60000-pages": ("bomb.tif", many_page_tiff(60_000))}
    server = start_server(src, logs / "bombs.log")
    results = []
    try:
        for name, (filename, data) in bombs.items():
            head, body = request_bytes(server.port, data, filename)
            before = server_cpu_s(server.process.pid)
            status, took = asyncio.run(exchange(server.port, head, body, timeout=120))
            # The answer may come before the work stops (a thread left running): wait for the CPU to settle.
            last, settle_deadline, still_running = server_cpu_s(server.process.pid), time.monotonic() + 120, True
            while time.monotonic() < settle_deadline:
                time.sleep(1.0)
                now = server_cpu_s(server.process.pid)
                if now - last < 0.05:
                    still_running = False
                    break
                last = now
            results.append({"bomb": name, "bytes": len(data), "status": status, "answer_s": round(took, 2),
                            "server_cpu_s": round(last - before, 2), "still_running_at_120_s": still_running})
    finally:
        stop_server(server)
    return results


def run_idle_sockets(src: str | None, logs: Path, sockets: int = 1100, nofile: int = 1024) -> dict[str, object]:
    server = start_server(src, logs / "idle.log", nofile=nofile)
    opened: list[socket.socket] = []
    try:
        for _ in range(sockets):
            try:
                opened.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
            except OSError:
                break
        time.sleep(1.0)
        head = f"GET /api/v1/model HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nConnection: close\r\n\r\n".encode()
        status, took = asyncio.run(exchange(server.port, head, b"", timeout=30))
    finally:
        for sock in opened:
            sock.close()
        stop_server(server)
    log_text = server.log.read_text(errors="replace")
    return {"idle_sockets": len(opened), "nofile": nofile, "status": status, "answer_s": round(took, 2),
            "log_tracebacks": log_text.count("Traceback")}


SCENARIOS = {
    "png-rgb-16": (["rgb.png"], 16), "png-rgb-48": (["rgb.png"], 48),
    "png-rgba-16": (["rgba.png"], 16), "png-rgba-48": (["rgba.png"], 48),
    "jpeg-64": (["big.jpg"], 64), "jpeg-192": (["big.jpg"], 192),
    "mix-256": (["small.png", "photo.jpg", "small.png", "number.png", "small.png", "junk.txt"], 256),
}


def run_loads(servers: list[tuple[str, str | None, Path]], only: list[str], seconds: float, guard_mb: float,
              images: dict[str, bytes]) -> dict[str, list[dict[str, object]]]:
    """Every load scenario on every server; with two servers, which goes first alternates from one scenario to
    the next (AB, BA, ...): run all of one then all of the other, the second read the machine's other jobs
    of a later minute (load 8-9 against 11-13 in one such run)."""
    results: dict[str, list[dict[str, object]]] = {label: [] for label, _, _ in servers}
    chosen = [(name, kinds, count) for name, (kinds, count) in SCENARIOS.items() if not only or name in only]
    for index, (name, kinds, count) in enumerate(chosen):
        for label, src, logs in servers if index % 2 == 0 else servers[::-1]:
            result = run_load(name, src, images, kinds, count, seconds, guard_mb, logs)
            results[label].append(result)
            killed = (f" KILLED at {result['killed_at_s']:.0f} s (RSS > {guard_mb:.0f} MB)"
                      if result["killed_at_s"] else "")
            print(f"  {label:5s} {name:12s} peak RSS {result['peak_rss_mb']:7.1f} MB{killed}"
                  f"  threads {result['threads_max']:3d}"
                  f"  healthz p99 {result['healthz_p99_ms']:7.1f} ms {result['healthz']}  small p99"
                  f" {result['small_p99_ms']:7.1f} ms {result['small']}  answers {result['answers']}"
                  f"  CPU {result['server_cpu_s']} s  tracebacks {result['log_tracebacks']}"
                  f"  (load {os.getloadavg()[0]:.1f})", flush=True)
    return results


def run_all(label: str, src: str | None, only: list[str], loads: list[dict[str, object]],
            logs: Path) -> dict[str, object]:
    report: dict[str, object] = {"server": label, "loads": loads, "bombs": [], "idle": None}
    if not only or "bombs" in only:
        report["bombs"] = run_bombs(src, logs)
        for bomb in report["bombs"]:  # type: ignore[attr-defined]
            print(f"  {label:5s} {bomb['bomb']:28s} {bomb['bytes'] / 1e3:7.0f} kB: {bomb['status']} in"
                  f" {bomb['answer_s']} s, server CPU {bomb['server_cpu_s']} s"
                  f"{' and still burning 120 s later' if bomb['still_running_at_120_s'] else ''}", flush=True)
    if not only or "idle-1100" in only:
        report["idle"] = idle = run_idle_sockets(src, logs)
        print(f"  {label:5s} {idle['idle_sockets']} idle sockets at ulimit -n {idle['nofile']}: normal request"
              f" {idle['status']} in {idle['answer_s']} s; tracebacks in the log {idle['log_tracebacks']}",
              flush=True)
    return report


def verdicts(report: dict[str, object]) -> list[str]:
    lines = []
    for result in report["loads"]:  # type: ignore[attr-defined]
        ok_rss = result["peak_rss_mb"] <= GOALS["rss_mb"] and not result["killed_at_s"]
        ok_health = result["healthz_p99_ms"] <= GOALS["healthz_p99_ms"] and set(result["healthz"]) <= {"200"}
        ok_small = set(result["small"]) <= {"200", "503"}
        lines.append(f"  {result['scenario']:12s} RSS {'met' if ok_rss else 'MISSED'}, healthz p99"
                     f" {'met' if ok_health else 'MISSED'}, small answered or refused"
                     f" {'met' if ok_small else 'MISSED'}")
    for bomb in report["bombs"]:  # type: ignore[attr-defined]
        met = bomb["server_cpu_s"] <= GOALS["bomb_cpu_s"]
        lines.append(f"  {bomb['bomb']:28s} {bomb['server_cpu_s']} s CPU: {'met' if met else 'MISSED'}")
    idle = report["idle"]
    if idle:
        met = idle["status"] == "200" and idle["answer_s"] <= GOALS["idle_answer_s"]  # type: ignore[index]
        lines.append(f"  idle sockets: {'met' if met else 'MISSED'}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each load (default: 30)")
    parser.add_argument("--only", nargs="*", default=[], metavar="NAME",
                        help=f"run only these: {', '.join(SCENARIOS)}, bombs, idle-1100 (default: all)")
    parser.add_argument("--rss-guard-mb", type=float, default=3000.0,
                        help="kill a server whose RSS passes this, and say so (default: 3000)")
    parser.add_argument("--compare-src", default=None, metavar="DIR",
                        help="then run the server code in DIR (its `src`) the same way (default: no)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here (default: no)")
    args = parser.parse_args()

    print(f"making the images...; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    digit = a_digit()
    images = {"small.png": small_png(digit), "photo.jpg": photo_jpeg(digit), "number.png": number_png(),
              "junk.txt": b"this is not an image\n" * 20}
    needed = {kind for name, (kinds, _) in SCENARIOS.items() if not args.only or name in args.only for kind in kinds}
    if "rgb.png" in needed:
        images["rgb.png"] = big_png("RGB")
    if "rgba.png" in needed:
        images["rgba.png"] = big_png("RGBA")
    if "big.jpg" in needed:
        images["big.jpg"] = big_jpeg()
    print("  " + ", ".join(f"{name} {len(data) / 1e3:.0f} kB" for name, data in images.items()), flush=True)

    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"digitrec-overload-{os.getpid()}"
    logs.mkdir(parents=True, exist_ok=True)
    servers: list[tuple[str, str | None, Path]] = [("this", None, logs)]
    if args.compare_src:
        (logs / "other").mkdir(exist_ok=True)
        servers.append(("other", args.compare_src, logs / "other"))
    loads = run_loads(servers, args.only, args.seconds, args.rss_guard_mb, images)
    reports = [run_all(label, src, args.only, loads[label], server_logs) for label, src, server_logs in servers]
    print("\ngoals (this server):")
    print("\n".join(verdicts(reports[0])))
    print(f"\nload average {os.getloadavg()[0]:.1f} after the run; server logs in {logs}")
    if args.json:
        args.json.write_text(json.dumps({"goals": GOALS, "reports": reports}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
