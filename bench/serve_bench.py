"""Serving benchmark: nginx vs bare aiohttp FileResponse vs the gateway, on one file.

What it measures, for the same random file (256 MiB by default) served by

1. nginx (one worker process, ``sendfile on``, ``access_log off``, generated config),
2. a bare aiohttp app returning ``web.FileResponse`` (bench/fileresponse_app.py),
3. the gateway (``python -m gateway serve``, 1 worker, log level warning),

each server in its own process, all on 127.0.0.1:

a. full-file download throughput: one untimed GET that checks the SHA-256 (and
   warms the page cache), then ``--full-runs`` timed GETs read into a reused
   buffer and thrown away; MiB/s, median and best;
b. requests per second of random, block-aligned 64 KiB ``Range`` requests at
   ``--connections`` connections, with ``wrk -t1`` and bench/random_ranges.lua,
   which counts every response that is not a 206 with a 64 KiB body; latency
   percentiles come from wrk; ``--rounds`` runs of ``--duration`` seconds each,
   the median round is reported;
c. peak RSS of the serving process (VmHWM of /proc/<pid>/status; for nginx the
   worker), reset through /proc/<pid>/clear_refs once setup (the gateway upload)
   is done, so it covers serving only.

The servers' CPU time (/proc/<pid>/task/*/schedstat, all threads) is sampled around each
measurement, which gives per-core figures (requests per CPU-second). With two or
more CPUs, every server is pinned to one CPU and the clients (this process and
wrk) to another, so one server process gets exactly one core. The servers take
turns (full-file runs and wrk rounds are interleaved, in a rotating order), so
that a slow patch of a shared machine does not land on one server only.

Run it with the project's venv (nginx and wrk must be installed):

    python bench/serve_bench.py [--size-mib 256] [--duration 10]

A quick check: ``python bench/serve_bench.py --size-mib 16 --duration 2 --rounds 1``.
It rewrites its own section of docs/benchmarks.md (between the
``<!-- serve_bench:begin -->`` and ``<!-- serve_bench:end -->`` comments; the rest
of the file, e.g. bench/s3_bench.py's section, is kept; ``--output`` to write
elsewhere) and cleans up its temporary directory under bench/.work/. Helpers shared
with bench/s3_bench.py live in bench/common.py.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from common import (
    BENCH_DIR,
    DEFAULT_OUTPUT,
    HOST,
    KIB,
    MIB,
    WRK,
    BenchError,
    CpuTimes,
    children,
    cpu_times,
    download,
    free_port,
    http_request,
    machine_info,
    make_file,
    pin,
    reset_hwm,
    start,
    stop,
    summarize_log,
    verdict,
    vm_hwm_kib,
    wait_ready,
    work_dir,
    write_section,
    wrk_ranges,
)

FILE_APP = BENCH_DIR / "fileresponse_app.py"
NGINX = "/usr/sbin/nginx"
SECTION = "serve_bench"
FILE_NAME = "recording.bin"

# Targets the gateway is held to.
FULL_FILE_TARGET = 0.9  # gateway full-file MiB/s >= 0.9 x nginx
RANGES_TARGET = 1.0  # gateway 64 KiB ranges req/s >= bare aiohttp FileResponse


# --------------------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class Options:
    size_mib: int
    duration: int
    rounds: int
    warmup: int
    connections: int
    full_runs: int
    range_kib: int
    output: Path
    pin: bool
    keep: bool

    @property
    def size(self) -> int:
        return self.size_mib * MIB

    @property
    def block(self) -> int:
        return self.range_kib * KIB


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description="Full-file and 64 KiB Range serving: nginx vs aiohttp FileResponse vs "
                    "the gateway. Rewrites its section of docs/benchmarks.md.")
    parser.add_argument("--size-mib", type=int, default=256, help="file size (default 256)")
    parser.add_argument("--duration", type=int, default=10,
                        help="seconds of each measured wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measured wrk runs per server, interleaved (default 3)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="seconds of the unrecorded wrk run before it (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--full-runs", type=int, default=5,
                        help="timed full-file GETs per server (default 5)")
    parser.add_argument("--range-kib", type=int, default=64, help="Range size in KiB (64)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="markdown file whose serve_bench section to (re)write, created if "
                             "missing (default docs/benchmarks.md)")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin servers and clients to separate CPUs")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (file, configs, server logs)")
    args = parser.parse_args(argv)
    if (args.size_mib < 1 or args.duration < 1 or args.rounds < 1 or args.warmup < 0
            or args.full_runs < 1 or args.connections < 1):
        parser.error("sizes, durations and counts must be positive")
    if args.range_kib < 1 or args.range_kib * KIB > args.size_mib * MIB:
        parser.error("--range-kib must be at least 1 and fit in the file")
    return Options(args.size_mib, args.duration, args.rounds, args.warmup, args.connections,
                   args.full_runs, args.range_kib, args.output.resolve(), args.pin, args.keep)


# --------------------------------------------------------------------------- results


@dataclass(slots=True)
class FullFileResult:
    size: int
    seconds: list[float] = field(default_factory=list)
    cpu: CpuTimes = field(default_factory=lambda: CpuTimes(0.0, 0.0, 0.0))  # timed runs

    @property
    def mib_s(self) -> list[float]:
        return [self.size / MIB / s for s in self.seconds]

    @property
    def median(self) -> float:
        return statistics.median(self.mib_s)

    @property
    def best(self) -> float:
        return max(self.mib_s)

    @property
    def cores(self) -> float:
        return self.cpu.total / sum(self.seconds)

    @property
    def mib_per_cpu_s(self) -> float:
        return self.size * len(self.seconds) / MIB / self.cpu.total if self.cpu.total else 0.0


@dataclass(slots=True)
class RangeRound:
    """One measured wrk run."""

    requests: int
    duration_s: float
    ok: int
    bad_status: int
    bad_length: int
    socket_errors: dict[str, int]
    latency_us: dict[str, float]
    cpu: CpuTimes  # server CPU during the run

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s

    @classmethod
    def from_wrk(cls, out: dict[str, float], cpu: CpuTimes) -> RangeRound:
        return cls(
            requests=int(out["requests"]),
            duration_s=out["duration_us"] / 1e6,
            ok=int(out["ok"]),
            bad_status=int(out["bad_status"]),
            bad_length=int(out["bad_length"]),
            socket_errors={k: int(out[k]) for k in ("connect", "read", "write", "timeout")},
            latency_us={k: out[f"{k}_us"] for k in ("p50", "p90", "p99", "max", "mean")},
            cpu=cpu,
        )


@dataclass(slots=True)
class RangeResult:
    rounds: list[RangeRound] = field(default_factory=list)
    warmup_bad: int = 0  # non-206 or wrong-length responses during the warm-up run

    @property
    def median_round(self) -> RangeRound:
        """The round with the median req/s (the lower middle one for an even count)."""
        ordered = sorted(self.rounds, key=lambda r: r.rps)
        return ordered[(len(ordered) - 1) // 2]

    @property
    def rps(self) -> float:
        return self.median_round.rps

    @property
    def latency_us(self) -> dict[str, float]:
        return self.median_round.latency_us

    @property
    def duration_s(self) -> float:
        return sum(r.duration_s for r in self.rounds)

    @property
    def cpu(self) -> CpuTimes:
        return sum((r.cpu for r in self.rounds), CpuTimes(0.0, 0.0, 0.0))

    @property
    def cores(self) -> float:
        return self.cpu.total / self.duration_s

    @property
    def rps_per_core(self) -> float:
        total = self.cpu.total
        return sum(r.requests for r in self.rounds) / total if total else 0.0

    @property
    def bad_status(self) -> int:
        return sum(r.bad_status for r in self.rounds)

    @property
    def bad_length(self) -> int:
        return sum(r.bad_length for r in self.rounds)

    @property
    def socket_errors(self) -> int:
        return sum(sum(r.socket_errors.values()) for r in self.rounds)

    @property
    def errors(self) -> int:
        return self.bad_status + self.bad_length + self.socket_errors


@dataclass(slots=True)
class ServerResult:
    name: str
    description: str
    full: FullFileResult
    ranges: RangeResult
    peak_rss_kib: int
    setup_peak_rss_kib: int  # VmHWM before the reset (includes startup and any upload)
    sendfile: str


@dataclass(slots=True)
class Report:
    options: Options
    started: dt.datetime
    elapsed_s: float
    machine: dict[str, str]
    pinning: str
    results: list[ServerResult]
    notes: list[str] = field(default_factory=list)


def uses_sendfile(pid: int, port: int, path: str, headers: dict[str, str]) -> str:
    """Ask strace (if installed) which system calls one 64 KiB Range request makes."""
    strace = shutil.which("strace")
    if strace is None:
        return "unknown (no strace)"
    with tempfile.NamedTemporaryFile(prefix="strace-", suffix=".txt") as out:
        tracer = subprocess.Popen(
            [strace, "-f", "-qq", "-e", "trace=sendfile,write,writev,sendmsg,sendto,pread64,read",
             "-o", out.name, "-p", str(pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1.0)  # strace attaches asynchronously
            for _ in range(3):
                http_request(port, "GET", path, {**headers, "Range": "bytes=0-65535"})
            time.sleep(0.3)
        finally:
            tracer.send_signal(signal.SIGINT)
            try:
                tracer.wait(10)
            except subprocess.TimeoutExpired:
                tracer.kill()
                tracer.wait(5)
        trace = Path(out.name).read_text()
    sendfiles = len(re.findall(r"\bsendfile\(", trace))
    big_writes = len(re.findall(r"\b(?:write|writev|sendmsg|sendto)\(.*= (?:[0-9]{5,})$",
                                trace, re.MULTILINE))
    if sendfiles:
        return f"yes ({sendfiles} sendfile calls for 3 requests)"
    if big_writes:
        return f"no ({big_writes} large write calls for 3 requests)"
    return "unclear (no sendfile and no large writes seen)"


def run_wrk(port: int, path: str, headers: dict[str, str], opts: Options,
            seconds: int) -> dict[str, float]:
    return wrk_ranges(port, path, headers, connections=opts.connections, seconds=seconds,
                      size=opts.size, block=opts.block)


@dataclass(slots=True)
class Server:
    name: str
    description: str
    port: int
    path: str
    headers: dict[str, str]
    pid: int  # the process that serves (measured for CPU and RSS)
    setup_peak_rss_kib: int = 0


def start_nginx(stack: contextlib.ExitStack, work: Path, docroot: Path,
                workers: int = 1) -> Server:
    port = free_port()
    prefix = work / f"nginx-{workers}"
    prefix.mkdir()
    user = ""
    if os.geteuid() == 0:
        # Workers would otherwise run as nobody, who cannot read the private temp dir.
        user = "user root root;"
    temp_paths = "\n".join(f"    {kind}_temp_path {prefix / kind};"
                           for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = prefix / "nginx.conf"
    conf.write_text(f"""\
{user}
worker_processes {workers};
daemon off;
master_process on;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'error.log'} warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    sendfile on;
    # nginx closes a keep-alive connection after 1000 requests by default; aiohttp
    # never does. Equal terms for wrk's connections.
    keepalive_requests 1000000;
    default_type application/octet-stream;
{temp_paths}
    server {{
        listen {HOST}:{port};
        root {docroot};
        location / {{ }}
    }}
}}
""")
    log = work / f"nginx-{workers}.out"
    proc = start([NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                 log)
    pids: list[int] = []
    stack.callback(lambda: stop(proc, signal.SIGTERM, pids))
    wait_ready(proc, port, f"/{FILE_NAME}", log)
    pids.extend(children(proc.pid))
    if len(pids) != workers:
        raise BenchError(f"expected {workers} nginx worker(s), found {pids}")
    version = subprocess.run([NGINX, "-v"], capture_output=True, text=True, check=False)
    plural = "s" if workers > 1 else ""
    return Server("nginx", f"{version.stderr.strip().split(': ')[-1]}, {workers} worker{plural}, "
                  "sendfile on", port, f"/{FILE_NAME}", {}, pids[0])


def start_fileresponse(stack: contextlib.ExitStack, work: Path, file: Path) -> Server:
    port = free_port()
    log = work / "fileresponse.out"
    proc = start([sys.executable, str(FILE_APP), "--port", str(port), "--file", str(file)], log)
    stack.callback(lambda: stop(proc))
    wait_ready(proc, port, "/healthz", log)
    return Server("aiohttp FileResponse", f"aiohttp {aiohttp.__version__}, 1 process",
                  port, "/file", {}, proc.pid)


def gateway_env(data_dir: Path, port: int, workers: int = 1) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GATEWAY_", "LOCAL_STORAGE_", "STORAGE_"))}
    env.update({
        "GATEWAY_DATA_DIR": str(data_dir),
        "GATEWAY_HOST": HOST,
        "GATEWAY_PORT": str(port),
        "GATEWAY_WORKERS": str(workers),
        "LOCAL_STORAGE_FSYNC": "false",
        "GATEWAY_LOG_LEVEL": "warning",
    })
    return env


def start_gateway(stack: contextlib.ExitStack, work: Path, file: Path, size: int,
                  cpus: set[int] | None, workers: int = 1) -> tuple[Server, Path]:
    port = free_port()
    env = gateway_env(work / f"gateway-data-{workers}", port, workers)
    created = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "create", "--user-id", "1",
         "--role", "recorder"],
        env=env, capture_output=True, text=True, check=True, timeout=60)
    key = created.stdout.strip().splitlines()[-1]
    log = work / f"gateway-{workers}.out"
    proc = start([sys.executable, "-m", "gateway", "serve"], log, env)
    stack.callback(lambda: stop(proc))
    wait_ready(proc, port, "/healthz", log)
    pin(proc.pid, cpus)
    auth = {"X-API-Key": key}
    status, body = http_request(port, "POST", "/recordings",
                                {**auth, "Content-Type": "application/json"}, b"{}")
    if status != 201:
        raise BenchError(f"POST /recordings: {status} {body[:300]!r}")
    recording_id = json.loads(body)["id"]
    upload_path = f"/recordings/{recording_id}/media?type=audio&format=mp3"
    conn = http.client.HTTPConnection(HOST, port, timeout=300, blocksize=MIB)
    try:
        with file.open("rb") as source:
            conn.request("POST", upload_path, body=source, headers={
                **auth, "Content-Type": "application/octet-stream",
                "Content-Length": str(size)})
            response = conn.getresponse()
            status, body = response.status, response.read()
    finally:
        conn.close()
    if status != 201:
        raise BenchError(f"POST {upload_path}: {status} {body[:300]!r}")
    media_id = json.loads(body)["id"]
    plural = "s" if workers > 1 else ""
    server = Server("gateway", f"recordings gateway {workers} worker{plural}, log level warning",
                    port, f"/recordings/{recording_id}/media/{media_id}/raw", auth, proc.pid)
    return server, log


# --------------------------------------------------------------------------- measuring


def _rotated(servers: list[Server], turn: int) -> list[Server]:
    """The servers in a different order each turn: no one always goes first."""
    k = turn % len(servers)
    return servers[k:] + servers[:k]


def measure(servers: list[Server], opts: Options, digest: str, cpus: set[int] | None,
            notes: list[str]) -> list[ServerResult]:
    full = {s.name: FullFileResult(opts.size) for s in servers}
    ranges = {s.name: RangeResult() for s in servers}
    setup_peak: dict[str, int] = {}
    for server in servers:
        print(f"[{server.name}] pid {server.pid}, http://{HOST}:{server.port}{server.path}",
              flush=True)
        pin(server.pid, cpus)
        _, got = download(server.port, server.path, server.headers, opts.size, verify=True)
        if got != digest:
            raise BenchError(f"{server.name} served other bytes (sha256 {got} != {digest})")
        setup_peak[server.name] = vm_hwm_kib(server.pid)
        if not reset_hwm(server.pid):
            notes.append(f"{server.name}: could not reset VmHWM; its peak RSS includes setup.")

    print(f"full-file GETs: {opts.full_runs} per server, interleaved", flush=True)
    for turn in range(opts.full_runs):
        for server in _rotated(servers, turn):
            before = cpu_times(server.pid)
            seconds, _ = download(server.port, server.path, server.headers, opts.size,
                                  verify=False)
            result = full[server.name]
            result.seconds.append(seconds)
            result.cpu = result.cpu + (cpu_times(server.pid) - before)
    for server in servers:
        result = full[server.name]
        print(f"[{server.name}] full file: median {result.median:.0f} MiB/s, "
              f"best {result.best:.0f} MiB/s", flush=True)

    if opts.warmup:
        for server in servers:
            warm = run_wrk(server.port, server.path, server.headers, opts, opts.warmup)
            ranges[server.name].warmup_bad = int(warm["bad_status"] + warm["bad_length"])
    for turn in range(opts.rounds):
        for server in _rotated(servers, turn):
            before = cpu_times(server.pid)
            out = run_wrk(server.port, server.path, server.headers, opts, opts.duration)
            rnd = RangeRound.from_wrk(out, cpu_times(server.pid) - before)
            ranges[server.name].rounds.append(rnd)
            print(f"[{server.name}] round {turn + 1}/{opts.rounds}: {opts.range_kib} KiB "
                  f"ranges {rnd.rps:.0f} req/s, server CPU {rnd.cpu.total / rnd.duration_s:.2f} "
                  f"cores, {rnd.bad_status + rnd.bad_length} bad responses", flush=True)

    results = []
    for server in servers:
        peak = vm_hwm_kib(server.pid)
        sendfile = uses_sendfile(server.pid, server.port, server.path, server.headers)
        results.append(ServerResult(server.name, server.description, full[server.name],
                                    ranges[server.name], peak, setup_peak[server.name],
                                    sendfile))
    return results


CLIENT_BOUND = 0.85  # a server below this many cores was not the bottleneck


def render_markdown(report: Report) -> str:
    """serve_bench's section of docs/benchmarks.md, from one run's results."""
    opts = report.options
    by_name = {r.name: r for r in report.results}
    lines = [
        "## Local disk: nginx vs aiohttp FileResponse vs the gateway",
        "",
        "Generated by `bench/serve_bench.py`, which rewrites only this section.",
        "",
        f"- Date: {report.started:%Y-%m-%d %H:%M} UTC (run took {report.elapsed_s:.0f} s)",
        *(f"- {k}: {v}" for k, v in report.machine.items()),
        f"- CPU pinning: {report.pinning}",
        "",
        "### Method",
        "",
        f"One file of {opts.size_mib} MiB of random bytes is served by three servers, each "
        "a single process on 127.0.0.1:",
        "",
        "1. **nginx**: one worker process, `sendfile on`, `access_log off`, "
        "`keepalive_requests` raised so that connections are not closed after 1000 "
        "requests (aiohttp never closes them); otherwise defaults; the config is generated "
        "into a temp dir.",
        "2. **aiohttp FileResponse**: `bench/fileresponse_app.py`, a handler returning "
        "`web.FileResponse(path)`, no access log.",
        "3. **gateway**: `python -m gateway serve`, 1 worker, `GATEWAY_LOG_LEVEL=warning` "
        "(aiohttp access lines are INFO, so none are written), `LOCAL_STORAGE_FSYNC=false`. "
        "The file is uploaded through `POST /recordings/{id}/media` and read back from "
        "`GET /recordings/{id}/media/{media_id}/raw` with an `X-API-Key` header.",
        "",
        "After setup, `sync` flushes the new files to disk. The servers then take turns, in "
        "a rotating order, so that a slow patch of a shared machine does not land on one "
        "server only:",
        "",
        f"- **Full file**: one untimed GET per server whose SHA-256 is checked (it also "
        f"warms the page cache), then {opts.full_runs} timed GETs each, each on a new "
        "connection, read with `recv_into` into a reused 1 MiB buffer and discarded. "
        "MiB/s = size / time from connect to the last byte; the median is used for the "
        "target.",
        f"- **{opts.range_kib} KiB ranges**: an unrecorded {opts.warmup} s warm-up per server, "
        f"then {opts.rounds} rounds of `wrk -t1 -c{opts.connections} -d{opts.duration}s "
        "-s bench/random_ranges.lua URL -- SIZE BLOCK` per server. Each request asks for "
        f"a random block-aligned `Range: bytes=a-b` of {opts.range_kib} KiB; the script "
        "counts every response that is not a 206 or whose body is not exactly one block. "
        "req/s and latency percentiles (wrk's) are those of the median round; error counts "
        "are summed over all rounds.",
        "- **Peak RSS**: VmHWM of the serving process (nginx: the worker), reset through "
        "`/proc/<pid>/clear_refs` after setup, so it covers the measurements only (the value "
        "before the reset, which for the gateway includes the upload, is in the notes).",
        "- **CPU**: time on CPU of the serving process (all threads, "
        "`/proc/<pid>/task/*/schedstat`; user/sys split from `/proc/<pid>/stat`), around "
        "each measurement. *cores* = CPU seconds per wall "
        "second; *per CPU-s* = work per second of server CPU, i.e. the one-core figure. "
        f"A server using less than {CLIENT_BOUND} cores was waiting for the client "
        "(wrk or the download loop, on the other CPU), so its throughput is a lower bound; "
        "such cells are marked with †.",
        "",
        "### Results",
        "",
        f"| Server | Full file MiB/s (median / best of {opts.full_runs}) "
        f"| {opts.range_kib} KiB ranges req/s | Latency p50 / p99 (ms) "
        "| Non-206 / bad length / socket errors | Peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def mark(cores: float) -> str:
        return " †" if cores < CLIENT_BOUND else ""

    for r in report.results:
        rg = r.ranges
        lines.append(
            f"| {r.name} | {r.full.median:,.0f} / {r.full.best:,.0f}{mark(r.full.cores)} "
            f"| {rg.rps:,.0f}{mark(rg.cores)} "
            f"| {rg.latency_us['p50'] / 1000:.2f} / {rg.latency_us['p99'] / 1000:.2f} "
            f"| {rg.bad_status} / {rg.bad_length} / {rg.socket_errors} "
            f"| {r.peak_rss_kib / KIB:.1f} |")
    lines += [
        "",
        "Per core (server CPU time during the measurements):",
        "",
        "| Server | Full file: server cores | Full file: MiB per CPU-s "
        "| Ranges: server cores (user / sys) | Ranges: req per CPU-s | sendfile(2) used |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in report.results:
        rg = r.ranges
        lines.append(
            f"| {r.name} | {r.full.cores:.2f} | {r.full.mib_per_cpu_s:,.0f} "
            f"| {rg.cores:.2f} ({rg.cpu.user / rg.duration_s:.2f} / "
            f"{rg.cpu.system / rg.duration_s:.2f}) | {rg.rps_per_core:,.0f} | {r.sendfile} |")

    lines += ["", "### Targets", ""]
    gateway, nginx, bare = (by_name.get(n) for n in ("gateway", "nginx", "aiohttp FileResponse"))
    if gateway and nginx and bare:
        full_ratio = gateway.full.median / nginx.full.median
        range_ratio = gateway.ranges.rps / bare.ranges.rps
        core_ratio = gateway.ranges.rps_per_core / bare.ranges.rps_per_core
        lines += [
            "| Target | Measured | Result |",
            "|---|---:|---|",
            f"| gateway full-file MiB/s >= {FULL_FILE_TARGET:.1f} x nginx "
            f"| {full_ratio:.2f} x ({gateway.full.median:,.0f} vs {nginx.full.median:,.0f}) "
            f"| {verdict(full_ratio >= FULL_FILE_TARGET)} |",
            f"| gateway {opts.range_kib} KiB ranges req/s >= {RANGES_TARGET:.1f} x aiohttp "
            f"FileResponse | {range_ratio:.2f} x ({gateway.ranges.rps:,.0f} vs "
            f"{bare.ranges.rps:,.0f}) | {verdict(range_ratio >= RANGES_TARGET)} |",
            "",
            f"For reference: per server CPU-second, gateway ranges vs aiohttp FileResponse "
            f"{core_ratio:.2f} x; gateway ranges vs nginx "
            f"{gateway.ranges.rps / nginx.ranges.rps:.2f} x (req/s) and "
            f"{gateway.ranges.rps_per_core / nginx.ranges.rps_per_core:.2f} x (per CPU-s); "
            f"aiohttp FileResponse full file vs nginx "
            f"{bare.full.median / nginx.full.median:.2f} x.",
        ]
    notes = list(report.notes)
    for r in report.results:
        rounds = ", ".join(f"{rnd.rps:,.0f}" for rnd in r.ranges.rounds)
        notes.append(
            f"{r.name}: full-file runs (MiB/s) "
            + ", ".join(f"{v:,.0f}" for v in r.full.mib_s)
            + f"; range rounds (req/s) {rounds}; median-round latency p90 "
            f"{r.ranges.latency_us['p90'] / 1000:.2f} ms, max "
            f"{r.ranges.latency_us['max'] / 1000:.2f} ms; bad responses in the warm-up "
            f"{r.ranges.warmup_bad}; VmHWM before the reset {r.setup_peak_rss_kib / KIB:.1f} MiB.")
    lines += ["", "### Notes", "", *(f"- {n}" for n in notes)]
    lines += [
        "",
        "### Reproduce",
        "",
        "Needs Debian's `nginx-light` and `wrk` (`apt-get install -y nginx-light wrk`) "
        "and the project's venv (the README's first command makes it):",
        "",
        "```sh",
        ".venv/bin/python bench/serve_bench.py       # defaults: 256 MiB, 3 x 10 s rounds",
        ".venv/bin/python bench/serve_bench.py --size-mib 16 --duration 2 --rounds 1",
        "```",
        "",
        f"This run: `python bench/serve_bench.py --size-mib {opts.size_mib} "
        f"--duration {opts.duration} --rounds {opts.rounds} --warmup {opts.warmup} "
        f"--connections {opts.connections} --full-runs {opts.full_runs} "
        f"--range-kib {opts.range_kib}{'' if opts.pin else ' --no-pin'}`. Everything binds "
        "to 127.0.0.1; the temporary files live under bench/.work/ and are removed "
        "afterwards (`--keep` keeps them, with the servers' logs). Numbers on a shared VM "
        "move by tens of percent from run to run: compare servers within one run.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def check_tools() -> None:
    for tool in (NGINX, WRK):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed")


def run(opts: Options) -> Report:
    check_tools()
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    nginx = subprocess.run([NGINX, "-v"], capture_output=True, text=True, check=False)
    machine = machine_info({"nginx": nginx.stderr.strip().split(": ")[-1]})
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus: set[int] | None = None
    pinning = "off"
    if opts.pin and len(cpus) >= 2:
        client_cpu, server_cpu = cpus[0], cpus[1]
        # Set before any child starts: wrk and the servers inherit it; servers are re-pinned.
        os.sched_setaffinity(0, {client_cpu})
        server_cpus = {server_cpu}
        pinning = (f"servers on CPU {server_cpu}, clients (this script's downloads, wrk) "
                   f"on CPU {client_cpu}")
    elif opts.pin:
        pinning = "off (one CPU only)"
    notes: list[str] = []
    results: list[ServerResult] = []
    with work_dir(opts.keep, "serve-") as work, contextlib.ExitStack() as stack:
        docroot = work / "docroot"
        docroot.mkdir()
        file = docroot / FILE_NAME
        print(f"writing {opts.size_mib} MiB of random bytes to {file}", flush=True)
        digest = make_file(file, opts.size)
        servers = [start_nginx(stack, work, docroot), start_fileresponse(stack, work, file)]
        print("starting the gateway and uploading the file", flush=True)
        gateway, gateway_log = start_gateway(stack, work, file, opts.size, server_cpus)
        servers.append(gateway)
        os.sync()  # the new file and the gateway's copy: no writeback during measurements
        results = measure(servers, opts, digest, server_cpus, notes)
        notes += summarize_log(gateway_log.read_text(errors="replace").splitlines())
    return Report(opts, started, time.monotonic() - t0, machine, pinning, results, notes)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        report = run(opts)
    except BenchError as exc:
        print(f"serve_bench: {exc}", file=sys.stderr)
        return 1
    markdown = render_markdown(report)
    try:
        write_section(opts.output, SECTION, markdown)
    except BenchError as exc:
        print(markdown)
        print(f"serve_bench: {exc}", file=sys.stderr)
        return 1
    print(markdown)
    print(f"wrote {opts.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
