"""Sustained mixed load on the gateway, standalone and sidecar: throughput, latency, errors, RSS.

Each mode's gateway (`gateway serve`, one worker, default settings except
GATEWAY_LOG_LEVEL=warning) serves a small library of recordings, 64 KiB to 4 MiB
of random bytes. The sidecar stands in front of the test meeting API
(bench/load_upstream.py, built on tests/fake_upstream.py), with the files in its
local storage where the upstream's JSON says. N client connections (default 64),
each a loop in this script's asyncio client, send a weighted mix of requests for
the duration (default 60 s, after an unrecorded warm-up):

    list      GET /recordings?limit=50
    get       GET /recordings/{id}
    download  GET /recordings/{id}/media/{media_id}/download
    raw       GET /recordings/{id}/media/{media_id}/raw (whole file)
    range     the same with a random `Range: bytes=a-b` of 1 B to 256 KiB
    upload    POST /recordings, then POST /recordings/{id}/media (64 KiB; standalone only:
              in sidecar mode the upstream owns recordings)

Every answer is checked: its status, its JSON, and every byte of every body
against the data the script uploaded or placed. An error is an unexpected status, a
wrong byte, or a failed or timed-out request; 5xx answers are also counted apart.
The gateway's RSS is sampled from /proc every second. Results go to the `load`
section of docs/benchmarks.md (and, with --json, to a file: tests/test_load.py
runs a short version). Exit status 1 if any request failed.

    .venv/bin/python bench/load.py [--duration 60] [--connections 64]
        [--modes standalone,sidecar] [--together] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from common import (
    HOST,
    KIB,
    MIB,
    ROOT,
    BenchError,
    cpu_times,
    free_port,
    http_request,
    machine_info,
    new_key,
    pin,
    start,
    stop,
    summarize_log,
    verdict,
    vm_rss_kib,
    wait_ready,
    work_dir,
    write_section,
)

SIZES = (64 * KIB, 256 * KIB, 1 * MIB, 1 * MIB, 4 * MIB, 4 * MIB)
UPLOAD_BYTES = 64 * KIB
MAX_RANGE = 256 * KIB
REQUEST_TIMEOUT = 60.0
UPSTREAM_KEY = "key-alice"  # user 1 of tests/fake_upstream.py
MIXES: dict[str, dict[str, int]] = {
    "standalone": {"list": 10, "get": 15, "download": 10, "raw": 10, "range": 50, "upload": 5},
    "sidecar": {"list": 10, "get": 15, "download": 10, "raw": 10, "range": 55},
}
MODES = tuple(MIXES)
SECTION = "load"


class Failure(Exception):
    """An answer the gateway must not give."""


@dataclass(frozen=True, slots=True)
class Media:
    recording_id: int
    media_id: int
    data: bytes


@dataclass(slots=True)
class Target:
    """One running gateway under load."""

    mode: str
    port: int
    pid: int
    headers: dict[str, str]
    media: list[Media]
    log: Path


@dataclass(slots=True)
class OpStats:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    server_errors: int = 0
    bytes: int = 0


@dataclass(slots=True)
class ModeResult:
    ops: dict[str, OpStats] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    rss_kib: list[tuple[int, int]] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # the gateway's, over the measured period
    client_cpu_seconds: float = 0.0  # the load client's (all modes, when together)

    def op(self, name: str) -> OpStats:
        return self.ops.setdefault(name, OpStats())


class Client:
    """One connection's loop: pick a request from the mix, send it, check the answer."""

    def __init__(self, target: Target, session: aiohttp.ClientSession, result: ModeResult,
                 rng: random.Random, measure_from: float) -> None:
        self.target = target
        self.session = session
        self.result = result
        self.rng = rng
        self.measure_from = measure_from
        self.base = f"http://{HOST}:{target.port}"

    @property
    def recording(self) -> bool:
        return time.monotonic() >= self.measure_from

    async def run(self, until: float) -> None:
        mix = MIXES[self.target.mode]
        names, weights = list(mix), list(mix.values())
        while time.monotonic() < until:
            name = self.rng.choices(names, weights)[0]
            await OPERATIONS[name](self)

    async def call(self, label: str, method: str, path: str, expect: int, *,
                   data: bytes | None = None, headers: dict[str, str] | None = None,
                   ) -> tuple[bytes, Any] | None:
        """One request; its body and headers if it answered `expect`, else None (counted)."""
        recording = self.recording
        started = time.perf_counter()
        try:
            async with self.session.request(method, self.base + path, data=data,
                                            headers={**self.target.headers, **(headers or {})},
                                            ) as response:
                body = await response.read()
                status, answer_headers = response.status, response.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            if recording:
                self.fail(label, f"{method} {path}: {type(exc).__name__} {exc}")
            return None
        if not recording:
            return (body, answer_headers) if status == expect else None
        stats = self.result.op(label)
        stats.latencies_ms.append((time.perf_counter() - started) * 1000)
        stats.bytes += len(body)
        if status >= 500:
            stats.server_errors += 1
        if status != expect:
            self.fail(label, f"{method} {path}: {status} {body[:200]!r}")
            return None
        return body, answer_headers

    def check(self, label: str, ok: bool, what: str) -> None:
        if not ok and self.recording:
            self.fail(label, what)

    def fail(self, label: str, what: str) -> None:
        self.result.op(label).errors += 1
        if len(self.result.error_samples) < 20:
            self.result.error_samples.append(f"{label}: {what}")

    def pick(self) -> Media:
        return self.rng.choice(self.target.media)


async def op_list(c: Client) -> None:
    answer = await c.call("list", "GET", "/recordings?limit=50", 200)
    if answer is not None:
        c.check("list", isinstance(json.loads(answer[0]).get("recordings"), list),
                "no recordings[] in the list")


async def op_get(c: Client) -> None:
    media = c.pick()
    answer = await c.call("get", "GET", f"/recordings/{media.recording_id}", 200)
    if answer is not None:
        c.check("get", json.loads(answer[0]).get("id") == media.recording_id, "another id")


async def op_download(c: Client) -> None:
    media = c.pick()
    answer = await c.call(
        "download", "GET",
        f"/recordings/{media.recording_id}/media/{media.media_id}/download", 200)
    if answer is not None:
        c.check("download", isinstance(json.loads(answer[0]).get("download_url"), str),
                "no download_url")


async def op_raw(c: Client) -> None:
    media = c.pick()
    answer = await c.call("raw", "GET",
                          f"/recordings/{media.recording_id}/media/{media.media_id}/raw", 200)
    if answer is not None:
        c.check("raw", answer[0] == media.data, "the body differs from the file")


async def op_range(c: Client) -> None:
    media = c.pick()
    size = len(media.data)
    first = c.rng.randrange(size)
    last = first + c.rng.randint(1, min(MAX_RANGE, size - first)) - 1
    answer = await c.call("range", "GET",
                          f"/recordings/{media.recording_id}/media/{media.media_id}/raw", 206,
                          headers={"Range": f"bytes={first}-{last}"})
    if answer is not None:
        body, headers = answer
        c.check("range", body == media.data[first:last + 1]
                and headers.get("Content-Range") == f"bytes {first}-{last}/{size}",
                f"wrong bytes or Content-Range for bytes={first}-{last}")


async def op_upload(c: Client) -> None:
    created = await c.call("create", "POST", "/recordings", 201, data=b"{}",
                           headers={"Content-Type": "application/json"})
    if created is None:
        return
    recording_id = json.loads(created[0])["id"]
    data = c.rng.randbytes(UPLOAD_BYTES)
    answer = await c.call("upload", "POST", f"/recordings/{recording_id}/media?format=mp3",
                          201, data=data)
    if answer is not None:
        c.check("upload", json.loads(answer[0]).get("file_size_bytes") == len(data),
                "wrong file_size_bytes")


OPERATIONS: dict[str, Callable[[Client], Awaitable[None]]] = {
    "list": op_list, "get": op_get, "download": op_download, "raw": op_raw,
    "range": op_range, "upload": op_upload,
}


async def sample(pid: int, result: ModeResult, measure_from: float, until: float) -> None:
    """The gateway's RSS once a second, and its CPU time over the measured period."""
    second = 0
    while (at := measure_from + second) <= until:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        try:
            if second == 0:
                result.cpu_seconds = -cpu_times(pid).total
            result.rss_kib.append((second, vm_rss_kib(pid)))
        except (OSError, BenchError):
            return  # the process is gone: the requests will say so
        second += 1
    result.cpu_seconds += cpu_times(pid).total


async def load(targets: list[Target], *, connections: int, warmup: float,
               duration: float, seed: int) -> dict[str, ModeResult]:
    """Load every target at once for warmup + duration seconds."""
    results = {t.mode: ModeResult() for t in targets}
    sessions = []
    tasks = []
    measure_from = time.monotonic() + warmup
    until = measure_from + duration
    client_cpu = asyncio.create_task(_client_cpu(measure_from, until))
    try:
        for index, target in enumerate(targets):
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=connections, limit_per_host=connections),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
                cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False)
            sessions.append(session)
            result = results[target.mode]
            for n in range(connections):
                rng = random.Random(seed * 1_000_003 + index * 1000 + n)
                tasks.append(Client(target, session, result, rng, measure_from).run(until))
            tasks.append(sample(target.pid, result, measure_from, until))
        await asyncio.gather(*tasks)
    finally:
        for session in sessions:
            await session.close()
    client = await client_cpu
    for result in results.values():
        result.seconds = duration
        result.client_cpu_seconds = client
    return results


async def _client_cpu(measure_from: float, until: float) -> float:
    """CPU seconds this process (the load client) used over the measured period."""
    await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
    before = cpu_times(os.getpid()).total
    await asyncio.sleep(max(0.0, until - time.monotonic()))
    return cpu_times(os.getpid()).total - before


# --------------------------------------------------------------------------- servers


def _gateway_env(data: Path, port: int, log_level: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "GATEWAY_DATA_DIR": str(data), "GATEWAY_HOST": HOST,
            "GATEWAY_LOG_LEVEL": log_level,
            "GATEWAY_PORT": str(port), **extra}



def _library(rng: random.Random) -> list[bytes]:
    return [rng.randbytes(size) for size in SIZES]


def start_standalone(work: Path, files: list[bytes], procs: list[subprocess.Popen[bytes]],
                     log_level: str) -> Target:
    port = free_port()
    env = _gateway_env(work / "standalone", port, log_level)
    headers = {"X-API-Key": new_key(env)}
    log = work / "standalone.log"
    proc = start([sys.executable, "-m", "gateway", "serve"], log, env=env)
    procs.append(proc)
    wait_ready(proc, port, "/healthz", log)
    media = []
    for data in files:
        status, body = http_request(port, "POST", "/recordings",
                                    {**headers, "Content-Type": "application/json"}, b"{}")
        if status != 201:
            raise BenchError(f"POST /recordings: {status} {body[:200]!r}")
        recording_id = json.loads(body)["id"]
        status, body = http_request(port, "POST", f"/recordings/{recording_id}/media?format=mp3",
                                    headers, data, timeout=60)
        if status != 201:
            raise BenchError(f"upload: {status} {body[:200]!r}")
        media.append(Media(recording_id, json.loads(body)["id"], data))
    return Target("standalone", port, proc.pid, headers, media, log)


def start_sidecar(work: Path, files: list[bytes], procs: list[subprocess.Popen[bytes]],
                  log_level: str) -> Target:
    storage = work / "sidecar-storage"
    library = []
    media = []
    for index, data in enumerate(files):
        recording_id, media_id, session_uid = 1001 + index, 2001 + index, f"load-{index}"
        path = storage / "recordings" / "1" / str(recording_id) / f"{session_uid}.wav"
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        library.append([recording_id, session_uid, media_id])
        media.append(Media(recording_id, media_id, data))
    upstream_port = free_port()
    upstream_log = work / "upstream.log"
    upstream = start([sys.executable, str(ROOT / "bench" / "load_upstream.py"), "--port",
                      str(upstream_port), "--recordings", json.dumps(library)], upstream_log)
    procs.append(upstream)
    wait_ready(upstream, upstream_port, "/", upstream_log)
    port = free_port()
    log = work / "sidecar.log"
    proc = start([sys.executable, "-m", "gateway", "serve"], log, env=_gateway_env(
        work / "sidecar", port, log_level, GATEWAY_CATALOG="upstream",
        GATEWAY_UPSTREAM_URL=f"http://{HOST}:{upstream_port}", LOCAL_STORAGE_DIR=str(storage)))
    procs.append(proc)
    wait_ready(proc, port, "/healthz", log)
    return Target("sidecar", port, proc.pid, {"X-API-Key": UPSTREAM_KEY}, media, log)


# --------------------------------------------------------------------------- report


def _loadavg() -> str:
    """The machine's 1-minute load average: on a shared machine, what else was running."""
    return Path("/proc/loadavg").read_text().split()[0]


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    if len(values) == 1:
        return {"p50": values[0], "p90": values[0], "p99": values[0], "max": values[0]}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": cuts[49], "p90": cuts[89], "p99": cuts[98], "max": max(values)}


def summarize(result: ModeResult, log: Path) -> dict[str, Any]:
    everything = [ms for stats in result.ops.values() for ms in stats.latencies_ms]
    rss = [kib for _, kib in result.rss_kib]
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return {
        "requests": len(everything),
        "seconds": result.seconds,
        "requests_per_s": len(everything) / result.seconds if result.seconds else 0.0,
        "mib_per_s": sum(s.bytes for s in result.ops.values()) / MIB / result.seconds
        if result.seconds else 0.0,
        "gateway_cores": result.cpu_seconds / result.seconds if result.seconds else 0.0,
        "client_cores": result.client_cpu_seconds / result.seconds if result.seconds else 0.0,
        "errors": sum(s.errors for s in result.ops.values()),
        "server_errors": sum(s.server_errors for s in result.ops.values()),
        "latency_ms": _percentiles(everything),
        "ops": {name: {"requests": len(s.latencies_ms), "errors": s.errors,
                       "server_errors": s.server_errors, "mib": s.bytes / MIB,
                       "latency_ms": _percentiles(s.latencies_ms)}
                for name, s in sorted(result.ops.items())},
        "rss_mib": {"start": rss[0] / KIB if rss else 0.0, "peak": max(rss) / KIB if rss else 0.0,
                    "end": rss[-1] / KIB if rss else 0.0,
                    "series": [(t, kib / KIB) for t, kib in result.rss_kib]},
        "error_samples": result.error_samples,
        "log_errors": sum(1 for ln in lines if " ERROR " in ln or ln.startswith("Traceback")),
        "log_notes": summarize_log(lines),
    }


def markdown(summary: dict[str, dict[str, Any]], opts: argparse.Namespace, took: float,
             info: dict[str, str]) -> str:
    together = "at the same time" if opts.together else "one after the other"
    rows = []
    for mode, s in summary.items():
        lat = s["latency_ms"]
        rss = s["rss_mib"]
        rows.append(f"| {mode} | {s['requests']:,} | {s['requests_per_s']:,.0f} | "
                    f"{s['mib_per_s']:,.1f} | {s['gateway_cores']:.2f} | "
                    f"{lat['p50']:.1f} / {lat['p90']:.1f} / "
                    f"{lat['p99']:.1f} / {lat['max']:.0f} | {s['errors']} | "
                    f"{s['server_errors']} | {rss['start']:.1f} / {rss['peak']:.1f} / "
                    f"{rss['end']:.1f} |")
    op_rows = []
    for mode, s in summary.items():
        for name, op in s["ops"].items():
            lat = op["latency_ms"]
            op_rows.append(f"| {mode} | {name} | {op['requests']:,} | {op['mib']:,.1f} | "
                           f"{lat['p50']:.1f} / {lat['p90']:.1f} / {lat['p99']:.1f} | "
                           f"{op['errors']} |")
    points = sorted({t for s in summary.values() for t, _ in s["rss_mib"]["series"]
                     if t % max(1, int(opts.duration) // 6) == 0})
    rss_rows = []
    for t in points:
        cells = []
        for s in summary.values():
            found = [mib for at, mib in s["rss_mib"]["series"] if at == t]
            cells.append(f"{found[0]:.1f}" if found else "")
        rss_rows.append(f"| {t} | " + " | ".join(cells) + " |")
    targets = []
    for mode, s in summary.items():
        targets.append(f"| {mode}: zero errors | {s['errors']} | {verdict(s['errors'] == 0)} |")
        targets.append(f"| {mode}: zero 5xx | {s['server_errors']} | "
                       f"{verdict(s['server_errors'] == 0)} |")
    clients = {f"{s['client_cores']:.2f}" for s in summary.values()}
    notes = [f"- The load client used {' and '.join(sorted(clients))} cores: where that is "
             "near 1.0 (one CPU, pinned), the client, not the gateway, set the pace, and the "
             "latencies include its queueing."]
    notes += [f"- {mode}: {note}" for mode, s in summary.items() for note in s["log_notes"]]
    notes += [f"- {mode} error sample: `{e[:200]}`" for mode, s in summary.items()
              for e in s["error_samples"][:5]]
    mixes = "; ".join(f"{mode}: " + ", ".join(f"{k} {v}%" for k, v in MIXES[mode].items())
                      for mode in summary)
    return "\n".join([
        "## Load: a mixed workload at 64 connections, standalone and sidecar",
        "",
        "Generated by `bench/load.py`, which rewrites only this section.",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC (run took {took:.0f} s)",
        *(f"- {k}: {v}" for k, v in info.items()),
        f"- CPU pinning: {opts.pin_note}",
        "",
        "### Method",
        "",
        f"Each gateway (one worker, default settings but `GATEWAY_LOG_LEVEL={opts.log_level}`; "
        "uploads fsynced as by default) serves six recordings of 64 KiB to 4 MiB. "
        f"{opts.connections} client connections per mode, each a loop in the script's "
        f"asyncio/aiohttp client, send a weighted mix for {opts.duration:g} s after a "
        f"{opts.warmup:g} s unrecorded warm-up, the modes {together}. Mix ({mixes}): "
        "`list` GET /recordings?limit=50; `get` one recording; `download` its download "
        "link; `raw` the whole file; `range` a random `Range` of 1 B to 256 KiB; `upload` "
        "POST /recordings (`create`) then 64 KiB to its media. The sidecar stands in front "
        "of the test meeting API (bench/load_upstream.py) and takes no uploads (the "
        "upstream owns recordings). Every answer is checked: status, JSON, and every byte "
        "of every body. An error is an unexpected status, a wrong byte, or a failed or "
        "timed-out request (60 s); 5xx are also counted apart. RSS: VmRSS of the gateway "
        "process, from /proc, every second of the measured period. Gateway cores: CPU "
        "seconds of the gateway process (all threads) per second, from /proc; its CPU also "
        "runs the test meeting API, and the other gateway when the modes run together. "
        "Latency is measured by the client, which shares the machine: it includes the "
        "client's own queueing.",
        "",
        "### Results",
        "",
        "| Mode | Requests | req/s | MiB/s | Gateway cores | Latency p50 / p90 / p99 / max "
        "(ms) | Errors | 5xx | RSS start / peak / end (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "| Mode | Request | Count | MiB | Latency p50 / p90 / p99 (ms) | Errors |",
        "|---|---|---:|---:|---:|---:|",
        *op_rows,
        "",
        "RSS over the measured period (MiB):",
        "",
        "| Second | " + " | ".join(summary) + " |",
        "|---:|" + "---:|" * len(summary),
        *rss_rows,
        "",
        "| Target | Measured | Result |",
        "|---|---:|---|",
        *targets,
        "",
        "### Notes",
        "",
        *(notes or ["- Nothing to note."]),
        "",
        "### Reproduce",
        "",
        "```sh",
        ".venv/bin/python bench/load.py                  # 60 s per mode, 64 connections",
        ".venv/bin/python bench/load.py --duration 20 --together   # what tests/test_load.py runs",
        "```",
        "",
        f"This run: `python bench/load.py --duration {opts.duration:g} --warmup "
        f"{opts.warmup:g} --connections {opts.connections} --modes {','.join(summary)}"
        f"{' --together' if opts.together else ''}`.",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds (60)")
    parser.add_argument("--warmup", type=float, default=3.0, help="unrecorded seconds (3)")
    parser.add_argument("--connections", type=int, default=64, help="per mode (64)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--together", action="store_true",
                        help="load the modes at the same time rather than in turn")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin servers and client to separate CPUs")
    parser.add_argument("--keep", action="store_true", help="keep bench/.work/load-*")
    parser.add_argument("--log-level", default="warning",
                        help="the gateways' GATEWAY_LOG_LEVEL (info logs every request)")
    opts = parser.parse_args()
    modes = [m.strip() for m in opts.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        parser.error(f"--modes: choose from {', '.join(MODES)}")
    started = time.monotonic()
    rng = random.Random(opts.seed)
    files = _library(rng)
    with work_dir(opts.keep, "load-") as work:
        procs: list[subprocess.Popen[bytes]] = []
        try:
            starters = {"standalone": start_standalone, "sidecar": start_sidecar}
            targets = [starters[mode](work, files, procs, opts.log_level) for mode in modes]
            cpus = sorted(os.sched_getaffinity(0))
            info = machine_info()  # before pinning narrows what this process sees
            info["Load average (1 min) before the run"] = _loadavg()
            opts.pin_note = "none"
            if opts.pin and len(cpus) >= 2:
                for proc in procs:
                    pin(proc.pid, {cpus[-1]})
                pin(os.getpid(), {cpus[0]})
                opts.pin_note = (f"servers (gateways, test meeting API) on CPU {cpus[-1]}, "
                                 f"the load client on CPU {cpus[0]}")
            results: dict[str, ModeResult] = {}
            batches = [targets] if opts.together else [[t] for t in targets]
            for batch in batches:
                results.update(asyncio.run(load(
                    batch, connections=opts.connections, warmup=opts.warmup,
                    duration=opts.duration, seed=opts.seed)))
            for target in targets:
                for proc in procs:
                    if proc.pid == target.pid and proc.poll() is not None:
                        raise BenchError(f"the {target.mode} gateway exited during the load "
                                         f"({proc.returncode}):\n"
                                         f"{target.log.read_text(errors='replace')[-2000:]}")
            info["Load average (1 min) after the run"] = _loadavg()
        finally:
            for proc in reversed(procs):
                stop(proc)
        summary = {t.mode: summarize(results[t.mode], t.log) for t in targets}
    text = markdown(summary, opts, time.monotonic() - started, info)
    write_section(opts.output, SECTION, text)
    if opts.json is not None:
        opts.json.write_text(json.dumps(summary, indent=2))
    print(text)
    failed = any(s["errors"] or s["server_errors"] for s in summary.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
