"""Load on `fixloop serve`: N concurrent clients posting `POST /v1/checks` with a 1024-px pair (source,
candidate, edit mask) for a fixed time, against a server started here on 127.0.0.1, once per
`--workers` value. Prints requests/s, p50 / p99 latency and errors (which must be 0), and writes them
to bench/results/http_load.json.

    python -m bench.http_load [--clients 4] [--seconds 30] [--workers 1 2] [--photo NAME]

The server warms its models up before the clock starts (it waits for /healthz to say so). Only
loopback is used; every run is bounded by --seconds (requests in flight at the end are awaited).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "http_load.json"
KEY = "bench-key"


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(workers: int, home: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    env = {**os.environ, "FIXLOOP_API_KEYS": KEY, "FIXLOOP_HOME": str(home)}
    process = subprocess.Popen([sys.executable, "-m", "fixloop.apps.cli", "serve", "--port", str(port),
                                "--workers", str(workers)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).json().get("models_loaded"):
                return process, url
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not get ready in 120 s")


def load(url: str, parts: list, clients: int, seconds: float) -> dict:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as http:
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                try:
                    response = http.post("/v1/checks", files=parts)
                    ok = response.status_code == 200 and response.json().get("verdict") in ("pass", "fail")
                    problem = None if ok else f"{response.status_code} {response.text[:120]}"
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                elapsed = time.perf_counter() - started
                with lock:
                    (errors.append(problem) if problem else latencies.append(elapsed))

    began = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - began
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")

    return {"clients": clients, "seconds": round(wall, 2), "requests": len(latencies), "errors": len(errors),
            "first_errors": errors[:3], "requests_per_second": round(len(latencies) / wall, 3),
            "p50_ms": round(pct(50) * 1000), "p99_ms": round(pct(99) * 1000),
            "mean_ms": round(statistics.fmean(ordered) * 1000) if ordered else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--photo", default="gen_clean_01.jpg")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results alone")
    args = parser.parse_args()
    if not 1 <= args.clients <= 64 or not 1 <= args.seconds <= 600:
        raise SystemExit("--clients 1..64 and --seconds 1..600")

    from bench.checks_speed import make_pair

    source, mask, candidate = make_pair(args.photo)
    parts = [("candidate", ("candidate.png", png(candidate), "image/png")),
             ("source", ("source.png", png(source), "image/png")),
             ("mask", ("mask.png", png(mask), "image/png"))]
    rows = []
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as home:
            process, url = start_server(workers, Path(home))
            try:
                row = {"workers": workers, **load(url, parts, args.clients, args.seconds)}
            finally:
                process.terminate()
                process.wait(30)
        rows.append(row)
        print(f"--workers {workers}: {row['requests']} requests in {row['seconds']} s = {row['requests_per_second']} req/s, "
              f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, errors {row['errors']}", flush=True)

    size = f"{candidate.shape[1]}x{candidate.shape[0]}"
    busy = round(os.getloadavg()[0], 2)  # the machine's load: other work on it slows every figure
    print(f"\n{args.clients} clients, {size} candidate + source + mask, {args.seconds:g} s per run, "
          f"{os.cpu_count()} CPU cores, load average {busy} at the end\n")
    print("| --workers | requests/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['workers']} | {row['requests_per_second']:.2f} | {row['p50_ms']} | {row['p99_ms']} | {row['errors']} |")
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"image": size, "clients": args.clients, "seconds": args.seconds,
                                       "cpu_cores": os.cpu_count(), "load_average_at_end": busy, "runs": rows}, indent=2) + "\n")
    if any(row["errors"] for row in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
