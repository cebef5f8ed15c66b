"""Sidecar vs standalone: small Range requests per second, side by side in one run.

Two gateways serve the same 64 MiB file from local disk: one standalone (its own
catalog and API key), one in sidecar mode in front of the test meeting API
(tests/fake_upstream.py), which it asks for the recording's metadata, with the
caller's key, once per GATEWAY_CACHE_TTL. wrk sends random 64 KiB ranges
(bench/random_ranges.lua) at 32 connections to each, in interleaved rounds.
Target: sidecar >= 0.8 x standalone. Results: the sidecar_bench section of
docs/benchmarks.md.

    .venv/bin/python bench/sidecar_bench.py [--duration 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from common import (
    HOST,
    ROOT,
    BenchError,
    cpu_times,
    free_port,
    http_request,
    machine_info,
    make_file,
    new_key,
    pin,
    start,
    stop,
    verdict,
    wait_ready,
    work_dir,
    write_section,
    wrk_ranges,
)

SIZE = 64 * 1024 * 1024
BLOCK = 64 * 1024
TARGET = 0.8
UPSTREAM_KEY = "key-alice"  # user 1 of tests/fake_upstream.py, owner of recording 42


def _gateway_env(data: Path, port: int, **extra: str) -> dict[str, str]:
    return {**os.environ, "GATEWAY_DATA_DIR": str(data), "GATEWAY_HOST": HOST,
            "GATEWAY_PORT": str(port), "LOCAL_STORAGE_FSYNC": "false",
            "GATEWAY_LOG_LEVEL": "warning", "GATEWAY_CACHE_TTL": "5", **extra}



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per mode")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    opts = parser.parse_args()
    started = time.monotonic()
    with work_dir(False, "sidecar-bench-") as work:
        source = work / "file.bin"
        make_file(source, SIZE)
        procs = []
        try:
            # The test meeting API, upstream of the sidecar.
            upstream_port = free_port()
            upstream = start([sys.executable, "-m", "tests.fake_upstream", "--port",
                              str(upstream_port)], work / "upstream.log",
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
            procs.append(upstream)
            wait_ready(upstream, upstream_port, "/", work / "upstream.log")

            # Standalone: upload the file through the API.
            port = free_port()
            env = _gateway_env(work / "standalone", port)
            headers = {"X-API-Key": new_key(env)}
            standalone = start([sys.executable, "-m", "gateway", "serve"],
                               work / "standalone.log", env=env)
            procs.append(standalone)
            wait_ready(standalone, port, "/healthz", work / "standalone.log")
            status, body = http_request(port, "POST", "/recordings",
                                        {**headers, "Content-Type": "application/json"}, b"{}")
            recording = json.loads(body)["id"]
            status, body = http_request(port, "POST",
                                        f"/recordings/{recording}/media?format=mp3", headers,
                                        source.read_bytes(), timeout=120)
            if status != 201:
                raise BenchError(f"upload failed: {status} {body[:200]!r}")
            standalone_path = f"/recordings/{recording}/media/{json.loads(body)['id']}/raw"

            # Sidecar: the file where the upstream's JSON says (recording 42 of user 1).
            side_port = free_port()
            side_storage = work / "sidecar-storage"
            target = side_storage / "recordings" / "1" / "42" / "demo-session.wav"
            target.parent.mkdir(parents=True)
            os.link(source, target)
            sidecar = start([sys.executable, "-m", "gateway", "serve"], work / "sidecar.log",
                            env=_gateway_env(
                                work / "sidecar", side_port, GATEWAY_CATALOG="upstream",
                                GATEWAY_UPSTREAM_URL=f"http://{HOST}:{upstream_port}",
                                LOCAL_STORAGE_DIR=str(side_storage)))
            procs.append(sidecar)
            wait_ready(sidecar, side_port, "/healthz", work / "sidecar.log")
            sidecar_path = "/recordings/42/media/4201/raw"

            cpus = os.sched_getaffinity(0)
            if len(cpus) >= 2:  # servers on one CPU, wrk on another
                server_cpu, client_cpu = sorted(cpus)[-1], sorted(cpus)[0]
                for proc in procs:
                    pin(proc.pid, {server_cpu})
                pin(os.getpid(), {client_cpu})
            modes = {
                "standalone": (port, standalone_path, headers, standalone.pid),
                "sidecar": (side_port, sidecar_path, {"X-API-Key": UPSTREAM_KEY}, sidecar.pid),
            }
            results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
            cpu: dict[str, float] = dict.fromkeys(modes, 0.0)
            for p, path, h, _ in modes.values():  # warm-up, unrecorded
                wrk_ranges(p, path, h, connections=opts.connections, seconds=2, size=SIZE,
                           block=BLOCK)
            for round_index in range(opts.rounds):
                order = list(modes) if round_index % 2 == 0 else list(reversed(modes))
                for mode in order:
                    p, path, h, pid = modes[mode]
                    before = cpu_times(pid).total
                    results[mode].append(wrk_ranges(
                        p, path, h, connections=opts.connections, seconds=opts.duration,
                        size=SIZE, block=BLOCK))
                    cpu[mode] += cpu_times(pid).total - before
        finally:
            for proc in reversed(procs):
                stop(proc)
            upstream_log = (work / "upstream.log").read_text(errors="replace") \
                if (work / "upstream.log").exists() else ""

    rps = {m: statistics.median(r["requests"] * 1e6 / r["duration_us"] for r in results[m])
           for m in results}
    ratio = rps["sidecar"] / rps["standalone"]
    rows = []
    for mode, runs in results.items():
        mid = sorted(runs, key=lambda r: r["requests"] / r["duration_us"])[len(runs) // 2]
        bad = int(sum(r["bad_status"] + r["bad_length"] for r in runs))
        total = sum(r["requests"] for r in runs)
        rows.append(f"| {mode} | {rps[mode]:,.0f} | {mid['p50_us'] / 1000:.2f} / "
                    f"{mid['p99_us'] / 1000:.2f} | {total / cpu[mode]:,.0f} | {bad} |")
    info = machine_info()
    markdown = "\n".join([
        "## Sidecar vs standalone: 64 KiB ranges",
        "",
        "Generated by `bench/sidecar_bench.py`, which rewrites only this section.",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC "
        f"(run took {time.monotonic() - started:.0f} s)",
        *(f"- {k}: {v}" for k, v in info.items()),
        "",
        "Both gateways serve the same 64 MiB file from local disk, one worker each, "
        "pinned to one CPU (wrk on the other). The sidecar asks the test meeting API "
        "(tests/fake_upstream.py) for the recording's metadata with the caller's key and "
        f"keeps it for GATEWAY_CACHE_TTL=5 s. {opts.rounds} interleaved rounds of "
        f"`wrk -t1 -c{opts.connections} -d{opts.duration}s` with random 64 KiB ranges per "
        "mode, after a 2 s warm-up; the median round counts.",
        "",
        "| Mode | 64 KiB ranges req/s | Latency p50 / p99 (ms) | req per server CPU-s "
        "| Non-206 or wrong length |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        "| Target | Measured | Result |",
        "|---|---:|---|",
        f"| sidecar req/s >= {TARGET} x standalone | {ratio:.2f} x | {verdict(ratio >= TARGET)} |",
        "",
        f"Metadata requests the upstream received during the run: "
        f"{upstream_log.count('/recordings/42')} (its access log), for "
        f"{sum(r['requests'] for r in results['sidecar']):,.0f} sidecar range requests.",
    ])
    write_section(opts.output, "sidecar_bench", markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
