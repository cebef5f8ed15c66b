"""S3 path benchmark: the gateway streaming from S3 (moto) vs a direct presigned GET.

What it measures, on one object of random bytes (64 MiB by default) that the gateway
stores in S3, where the S3 is moto in server mode (``moto_server``, its own process,
on 127.0.0.1) and the gateway is ``python -m gateway serve`` (its own process,
``STORAGE_BACKEND=s3``, 1 worker, log level warning). Two ways to the same bytes:

- **gateway**: ``GET /recordings/{id}/media/{media_id}/raw`` with ``X-API-Key``; the
  gateway answers from a cached HEAD (``GATEWAY_CACHE_TTL``) and one ranged
  GetObject per request, streamed through;
- **direct**: the presigned GetObject URL that ``GET .../download`` hands out,
  straight to moto (``Range`` headers are not signed, so ranges work too).

a. full-object throughput: one untimed GET per path whose SHA-256 is checked, then
   ``--full-runs`` timed GETs each, interleaved; MiB/s, median and best;
b. random, block-aligned 64 KiB ``Range`` requests with ``wrk -t1`` and
   bench/random_ranges.lua (every response that is not a 206 with one block is
   counted), of an object of their own (``--range-size-mib``, 1 MiB: moto copies the
   whole object for every GET, which at 64 MiB takes 42 ms a request): req/s at
   ``--connections`` connections, and latency at one connection
   (``-c1``), whose median difference is the latency the gateway adds; ``--rounds``
   rounds of ``--duration`` seconds each, interleaved, median round reported;
   the full-object and the ``-c1`` runs take two more paths in turn, for reference: a
   bare aiohttp relay of the same presigned GETs (bench/relay_app.py), which shows what
   aiohttp itself, server and client, and the extra hop cost on this machine at that
   moment, so that the gateway's own share can be told apart; and nginx as a reverse
   proxy to moto (if installed), what the hop costs when written in C;
c. peak RSS (VmHWM, reset through /proc/<pid>/clear_refs just before) of the gateway
   while ``--streams`` (200) aiohttp clients stream a whole object through it at the
   same time: every client holds its response unread until all of them have their
   headers (slow readers: every stream open, every buffer full), then all read to
   the end. The object for this part is ``--rss-size-mib`` (16) MiB, because moto
   keeps the whole body of every GET in memory while it sends it (200 x 64 MiB would
   be 12.5 GiB of moto); the gateway's memory per stream does not grow with the
   object. Established connections gateway->moto and clients->gateway are sampled
   to show how many streams really overlapped.

CPU time of the gateway (all threads) and of moto (utime + stime, which keeps the time
of moto's finished per-request threads) is sampled around every measurement. With two
or more CPUs, moto (the stand-in for a remote S3) gets one CPU to itself and the
gateway shares the other with the clients (this script and wrk).

Run it with the project's venv (wrk must be installed; moto[server] comes with the
test extras; nginx, for its reference, if installed):

    .venv/bin/python bench/s3_bench.py [--size-mib 64] [--duration 10]

A quick check: ``.venv/bin/python bench/s3_bench.py --size-mib 8 --duration 2 --rounds 1
--streams 50 --output /tmp/s3.md``. It rewrites its own section of docs/benchmarks.md
(between ``<!-- s3_bench:begin -->`` and ``<!-- s3_bench:end -->``; the rest of the
file, e.g. bench/serve_bench.py's section, is kept) and cleans up its temporary
directory under bench/.work/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import http.client
import importlib.metadata
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from common import (
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
    machine_busy_s,
    machine_info,
    make_file,
    pin,
    reset_hwm,
    start,
    stop,
    summarize_log,
    verdict,
    vm_hwm_kib,
    vm_rss_kib,
    wait_ready,
    work_dir,
    write_section,
    wrk_ranges,
)

SECTION = "s3_bench"
BUCKET = "bench-recordings"
GATEWAY, DIRECT, RELAY, PROXY = "gateway", "direct", "aiohttp relay", "nginx proxy"
RELAY_APP = Path(__file__).resolve().parent / "relay_app.py"
NGINX = "/usr/sbin/nginx"
PROXY_BUFFERS = "proxy_buffer_size 256k; proxy_buffers 8 256k; proxy_busy_buffers_size 512k;"
"""nginx's buffers for the reference proxy: unbuffered (`proxy_buffering off`, reads of
its 4 KiB `proxy_buffer_size`) it moved a 64 MiB object at 340 MiB/s, under half the rate
it reaches with these on the same machine."""

# Targets the gateway is held to.
FULL_TARGET = 0.9  # gateway full-object MiB/s >= 0.9 x direct presigned GET
LATENCY_TARGET_MS = 1.0  # p50(gateway) - p50(direct) at one connection <= 1 ms
RSS_TARGET_BYTES = 150_000_000  # gateway peak RSS with 200 streams < 150 MB
BUSY = 0.85  # a process using at least this many cores was the bottleneck
MEM_SHARE = 0.5  # moto may use at most this share of MemAvailable in part c

MOTO_CLOSES_NOTE = (
    "moto answers every request with `Connection: close`, so each ranged GET from the "
    "gateway opens a new TCP connection and moto starts a new thread for it (a profile of "
    "the gateway showed one connect() per request); wrk's direct requests pay the same. "
    "A real S3 or MinIO keeps connections alive, so the gateway's share of the added "
    "latency measured here is an upper bound."
)


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
    range_size_mib: int
    streams: int
    rss_size_mib: int
    cache_ttl: float
    hold_timeout: float
    output: Path
    pin: bool
    keep: bool

    @property
    def size(self) -> int:
        return self.size_mib * MIB

    @property
    def range_size(self) -> int:
        return self.range_size_mib * MIB

    @property
    def rss_size(self) -> int:
        return self.rss_size_mib * MIB

    @property
    def block(self) -> int:
        return self.range_kib * KIB

    def command(self) -> str:
        return (f"python bench/s3_bench.py --size-mib {self.size_mib} --duration {self.duration} "
                f"--rounds {self.rounds} --warmup {self.warmup} --connections {self.connections} "
                f"--full-runs {self.full_runs} --range-kib {self.range_kib} "
                f"--range-size-mib {self.range_size_mib} "
                f"--streams {self.streams} --rss-size-mib {self.rss_size_mib} "
                f"--cache-ttl {self.cache_ttl:g}{'' if self.pin else ' --no-pin'}")


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description="The gateway on S3 (moto server) vs direct presigned GETs: full object, "
                    "64 KiB ranges, memory with 200 streams. Rewrites its section of "
                    "docs/benchmarks.md.")
    parser.add_argument("--size-mib", type=int, default=64, help="object size (default 64)")
    parser.add_argument("--duration", type=int, default=10,
                        help="seconds of each measured wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measured wrk runs per path and connection count (default 3)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="seconds of the unrecorded wrk run per path first (default 2)")
    parser.add_argument("--connections", type=int, default=8,
                        help="wrk connections of the throughput runs (default 8)")
    parser.add_argument("--full-runs", type=int, default=5,
                        help="timed full-object GETs per path (default 5)")
    parser.add_argument("--range-kib", type=int, default=64, help="Range size in KiB (64)")
    parser.add_argument("--range-size-mib", type=int, default=1,
                        help="size of the object the range runs read (default 1)")
    parser.add_argument("--streams", type=int, default=200,
                        help="concurrent streams through the gateway for peak RSS (200)")
    parser.add_argument("--rss-size-mib", type=int, default=16,
                        help="size of the object those streams read (default 16)")
    parser.add_argument("--cache-ttl", type=float, default=5.0,
                        help="GATEWAY_CACHE_TTL given to the gateway (default 5)")
    parser.add_argument("--hold-timeout", type=float, default=120.0,
                        help="longest wait for all streams' headers before reading (120 s)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="markdown file whose s3_bench section to (re)write, created if "
                             "missing (default docs/benchmarks.md)")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin moto and the gateway+clients to separate CPUs")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (objects, data dir, logs)")
    args = parser.parse_args(argv)
    if (args.size_mib < 1 or args.duration < 1 or args.rounds < 1 or args.warmup < 0
            or args.full_runs < 1 or args.connections < 1 or args.streams < 1
            or args.rss_size_mib < 1 or args.range_size_mib < 1 or args.cache_ttl < 0
            or args.hold_timeout <= 0):
        parser.error("sizes, durations and counts must be positive")
    if args.range_kib < 1 or args.range_kib * KIB > args.range_size_mib * MIB:
        parser.error("--range-kib must be at least 1 and fit in the object")
    return Options(args.size_mib, args.duration, args.rounds, args.warmup, args.connections,
                   args.full_runs, args.range_kib, args.range_size_mib, args.streams,
                   args.rss_size_mib, args.cache_ttl, args.hold_timeout,
                   args.output.resolve(), args.pin, args.keep)


# --------------------------------------------------------------------------- results


@dataclass(slots=True)
class Cpu:
    """CPU seconds of the gateway and of moto over one measurement."""

    gateway: CpuTimes = field(default_factory=lambda: CpuTimes(0.0, 0.0, 0.0))
    moto: CpuTimes = field(default_factory=lambda: CpuTimes(0.0, 0.0, 0.0))

    def __add__(self, other: Cpu) -> Cpu:
        return Cpu(self.gateway + other.gateway, self.moto + other.moto)


@dataclass(slots=True)
class FullResult:
    size: int
    seconds: list[float] = field(default_factory=list)
    cpu: Cpu = field(default_factory=Cpu)

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
    def wall(self) -> float:
        return sum(self.seconds)


@dataclass(slots=True)
class RangeRound:
    requests: int
    duration_s: float
    bad_status: int
    bad_length: int
    socket_errors: int
    latency_us: dict[str, float]
    cpu: Cpu

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s

    @classmethod
    def from_wrk(cls, out: dict[str, float], cpu: Cpu) -> RangeRound:
        return cls(
            requests=int(out["requests"]),
            duration_s=out["duration_us"] / 1e6,
            bad_status=int(out["bad_status"]),
            bad_length=int(out["bad_length"]),
            socket_errors=sum(int(out[k]) for k in ("connect", "read", "write", "timeout")),
            latency_us={k: out[f"{k}_us"] for k in ("p50", "p90", "p99", "max", "mean")},
            cpu=cpu,
        )


@dataclass(slots=True)
class RangeResult:
    connections: int
    rounds: list[RangeRound] = field(default_factory=list)
    warmup_bad: int = 0

    @property
    def median_round(self) -> RangeRound:
        ordered = sorted(self.rounds, key=lambda r: r.rps)
        return ordered[(len(ordered) - 1) // 2]

    @property
    def rps(self) -> float:
        return self.median_round.rps

    def latency_us_median(self, key: str) -> float:
        """Median over the rounds of one of wrk's latency figures (p50, p99, ...)."""
        return statistics.median(r.latency_us[key] for r in self.rounds)

    @property
    def p50_ms(self) -> float:
        return self.latency_us_median("p50") / 1000

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.rounds)

    @property
    def duration_s(self) -> float:
        return sum(r.duration_s for r in self.rounds)

    @property
    def cpu(self) -> Cpu:
        return sum((r.cpu for r in self.rounds), Cpu())

    @property
    def bad_status(self) -> int:
        return sum(r.bad_status for r in self.rounds)

    @property
    def bad_length(self) -> int:
        return sum(r.bad_length for r in self.rounds)

    @property
    def socket_errors(self) -> int:
        return sum(r.socket_errors for r in self.rounds)


@dataclass(slots=True)
class StreamRecord:
    status: int = 0
    received: int = 0
    sent_at: float = 0.0
    headers_at: float = 0.0
    done_at: float = 0.0
    error: str = ""


@dataclass(slots=True)
class StreamsResult:
    streams: int
    size: int
    records: list[StreamRecord]
    started: float
    released: float  # when every stream had its headers (or the hold timed out)
    finished: float
    open_at_release: int
    max_upstream: int  # established gateway -> moto connections, sampled
    max_clients: int  # established client -> gateway connections, sampled
    rss_before_kib: int
    peak_kib: int  # gateway VmHWM over the whole part
    peak_held_kib: int  # highest sampled gateway VmRSS while every stream was held
    moto_peak_kib: int
    cpu: Cpu
    hold_timed_out: bool

    @property
    def complete(self) -> int:
        return sum(1 for r in self.records
                   if r.status == 200 and r.received == self.size and not r.error)

    @property
    def failed(self) -> int:
        return len(self.records) - self.complete

    @property
    def max_overlap(self) -> int:
        """Most streams between their headers and their last byte at one time."""
        events = sorted([(r.headers_at, 1) for r in self.records if r.headers_at]
                        + [(r.done_at, -1) for r in self.records if r.headers_at])
        current = best = 0
        for _, step in events:
            current += step
            best = max(best, current)
        return best


@dataclass(slots=True)
class Report:
    options: Options
    started: dt.datetime
    elapsed_s: float
    machine: dict[str, str]
    pinning: str
    full: dict[str, FullResult]
    ranges: dict[str, RangeResult]
    latency: dict[str, RangeResult]
    streams: StreamsResult
    gateway_peak_ab_kib: int  # gateway VmHWM over parts a and b
    gateway_setup_peak_kib: int
    s3_calls: Counter[str]
    store_connection: str  # moto's Connection header
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    port: int
    path: str
    headers: dict[str, str]


@dataclass(slots=True)
class Rig:
    moto: subprocess.Popen[bytes]
    moto_port: int
    moto_log: Path
    gateway: subprocess.Popen[bytes]
    gateway_port: int
    gateway_log: Path
    key: str
    fronts: dict[str, int] = field(default_factory=dict)  # reference route -> its pid

    def cpu(self, route: str = GATEWAY) -> Cpu:
        """CPU so far of moto and of the process in front of it on `route` (the gateway,
        or a reference's), counted as the `gateway` of the result."""
        # moto answers each connection on a thread of its own that ends with it, so its
        # live threads' schedstat would lose time: utime + stime keeps it (10 ms ticks).
        moto = cpu_times(self.moto.pid)
        return Cpu(cpu_times(self.fronts.get(route, self.gateway.pid)),
                   CpuTimes(moto.user + moto.system, moto.user, moto.system))


def moto_server() -> str:
    beside = Path(sys.executable).parent / "moto_server"
    found = str(beside) if beside.exists() else shutil.which("moto_server")
    if found is None:
        raise BenchError("moto_server is not installed (pip install 'moto[server]')")
    return found


def check_tools() -> str:
    if shutil.which(WRK) is None:
        raise BenchError(f"{WRK} is not installed")
    return moto_server()


def start_moto(stack: contextlib.ExitStack, work: Path, cpus: set[int] | None,
               ) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    log = work / "moto.out"
    proc = start([moto_server(), "-H", HOST, "-p", str(port)], log)
    stack.callback(lambda: stop(proc))
    wait_ready(proc, port, "/", log)
    pin(proc.pid, cpus)  # its request threads, started by the main one, inherit it
    status, body = http_request(port, "PUT", f"/{BUCKET}")
    if status != 200:
        raise BenchError(f"moto: PUT /{BUCKET}: {status} {body[:300]!r}")
    return proc, port, log


def gateway_env(work: Path, moto_port: int, port: int, cache_ttl: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GATEWAY_", "LOCAL_STORAGE_", "STORAGE_", "S3_", "MINIO_",
                                "AWS_"))}
    env.update({
        "STORAGE_BACKEND": "s3",
        "S3_ENDPOINT": f"http://{HOST}:{moto_port}",
        "S3_BUCKET": BUCKET,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",  # moto's dummy credentials
        "AWS_REGION": "us-east-1",
        # No ~/.aws files: only what is set here.
        "AWS_CONFIG_FILE": str(work / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(work / "no-aws-credentials"),
        "GATEWAY_DATA_DIR": str(work / "data"),
        "GATEWAY_HOST": HOST,
        "GATEWAY_PORT": str(port),
        "GATEWAY_WORKERS": "1",
        "GATEWAY_LOG_LEVEL": "warning",
        "GATEWAY_CACHE_TTL": f"{cache_ttl:g}",
    })
    return env


def start_gateway(stack: contextlib.ExitStack, work: Path, moto_port: int, cache_ttl: float,
                  ) -> tuple[subprocess.Popen[bytes], int, Path, str]:
    port = free_port()
    env = gateway_env(work, moto_port, port, cache_ttl)
    created = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "create", "--user-id", "1",
         "--role", "recorder"],
        env=env, capture_output=True, text=True, check=False, timeout=60)
    if created.returncode != 0:
        raise BenchError(f"gateway keys create: {created.returncode}\n{created.stderr[-2000:]}")
    key = created.stdout.strip().splitlines()[-1]
    log = work / "gateway.out"
    proc = start([sys.executable, "-m", "gateway", "serve"], log, env)
    stack.callback(lambda: stop(proc))
    wait_ready(proc, port, "/healthz", log)
    return proc, port, log, key


def start_relay(stack: contextlib.ExitStack, work: Path, moto_port: int,
                directs: Sequence[Route]) -> tuple[subprocess.Popen[bytes], list[Route]]:
    """bench/relay_app.py in front of the presigned URLs of `directs`; a route to each."""
    port = free_port()
    log = work / "relay.out"
    cmd = [sys.executable, str(RELAY_APP), "--port", str(port)]
    for direct in directs:
        cmd += ["--url", f"http://{HOST}:{moto_port}{direct.path}"]
    proc = start(cmd, log)
    stack.callback(lambda: stop(proc))
    wait_ready(proc, port, "/healthz", log)
    return proc, [Route(RELAY, port, f"/object/{i}", {}) for i in range(len(directs))]


def start_proxy(stack: contextlib.ExitStack, work: Path, moto_port: int,
                directs: Sequence[Route]) -> tuple[int, list[Route]] | None:
    """nginx (one worker) as a reverse proxy to moto; its worker's pid and a route to
    each of `directs` through it. None without nginx."""
    if not Path(NGINX).exists():
        return None
    port = free_port()
    prefix = work / "nginx"
    prefix.mkdir()
    user = "user root root;" if os.geteuid() == 0 else ""  # else nobody: no temp dir access
    temp_paths = " ".join(f"{kind}_temp_path {prefix / kind};"
                          for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = prefix / "nginx.conf"
    conf.write_text(f"""\
{user}
worker_processes 1;
daemon off;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'error.log'} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    {temp_paths}
    server {{
        listen {HOST}:{port};
        location / {{
            proxy_pass http://{HOST}:{moto_port};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            {PROXY_BUFFERS}
            proxy_max_temp_file_size 0;
        }}
    }}
}}
""")
    log = work / "nginx.out"
    proc = start([NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                 log)
    workers: list[int] = []
    stack.callback(lambda: stop(proc, signal.SIGTERM, workers))
    wait_ready(proc, port, "/", log)
    workers.extend(children(proc.pid))
    if len(workers) != 1:
        raise BenchError(f"expected one nginx worker, found {workers}")
    return workers[0], [Route(PROXY, port, direct.path, {}) for direct in directs]


def s3_objects(moto_port: int) -> dict[str, int]:
    """Keys and sizes in the bucket (ListObjectsV2, unsigned: moto does not check)."""
    status, body = http_request(moto_port, "GET", f"/{BUCKET}?list-type=2")
    if status != 200:
        raise BenchError(f"moto: list {BUCKET}: {status} {body[:300]!r}")
    text = body.decode()
    return {m.group(1): int(m.group(2)) for m in re.finditer(
        r"<Contents>.*?<Key>([^<]+)</Key>.*?<Size>(\d+)</Size>.*?</Contents>", text, re.DOTALL)}


def upload(rig: Rig, file: Path, size: int) -> tuple[Route, Route]:
    """One recording with one media file through the gateway; its raw and direct routes."""
    auth = {"X-API-Key": rig.key}
    port = rig.gateway_port
    status, body = http_request(port, "POST", "/recordings",
                                {**auth, "Content-Type": "application/json"}, b"{}")
    if status != 201:
        raise BenchError(f"POST /recordings: {status} {body[:300]!r}")
    recording = json.loads(body)
    recording_id, session_uid = recording["id"], recording["session_uid"]
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
    media = json.loads(body)
    if media.get("storage_backend") != "s3":
        raise BenchError(f"the media file went to {media.get('storage_backend')!r}, not s3")
    key = f"recordings/1/{recording_id}/{session_uid}.mp3"
    stored = s3_objects(rig.moto_port)
    if stored.get(key) != size:
        raise BenchError(f"s3://{BUCKET}/{key} is not there with {size} bytes: {stored}")
    media_id = media["id"]
    raw = Route(GATEWAY, port, f"/recordings/{recording_id}/media/{media_id}/raw", auth)
    status, body = http_request(port, "GET",
                                f"/recordings/{recording_id}/media/{media_id}/download", auth)
    if status != 200:
        raise BenchError(f"GET .../download: {status} {body[:300]!r}")
    url = urlsplit(json.loads(body)["download_url"])
    if url.hostname != HOST or url.port != rig.moto_port or not url.path.endswith(key):
        raise BenchError(f"download_url does not point at moto's {key}: {url.geturl()}")
    direct = Route(DIRECT, rig.moto_port, f"{url.path}?{url.query}", {})
    return raw, direct


def connection_header(route: Route) -> str:
    """The Connection header of one small ranged GET on `route` ('' if none)."""
    conn = http.client.HTTPConnection(HOST, route.port, timeout=10)
    try:
        conn.request("GET", route.path, headers={**route.headers, "Range": "bytes=0-0"})
        response = conn.getresponse()
        response.read()
        return response.getheader("Connection", "") or ""
    finally:
        conn.close()


# --------------------------------------------------------------------------- measuring


def _rotated(routes: list[Route], turn: int) -> list[Route]:
    k = turn % len(routes)
    return routes[k:] + routes[:k]


def measure_full(rig: Rig, routes: list[Route], opts: Options, digest: str,
                 ) -> dict[str, FullResult]:
    full = {r.name: FullResult(opts.size) for r in routes}
    for route in routes:
        _, got = download(route.port, route.path, route.headers, opts.size, verify=True)
        if got != digest:
            raise BenchError(f"{route.name} served other bytes (sha256 {got} != {digest})")
    print(f"full-object GETs: {opts.full_runs} per path, interleaved", flush=True)
    for turn in range(opts.full_runs):
        for route in _rotated(routes, turn):
            before = rig.cpu(route.name)
            seconds, _ = download(route.port, route.path, route.headers, opts.size,
                                  verify=False)
            after = rig.cpu(route.name)
            result = full[route.name]
            result.seconds.append(seconds)
            result.cpu = result.cpu + Cpu(after.gateway - before.gateway,
                                          after.moto - before.moto)
    for name, result in full.items():
        print(f"[{name}] full object: median {result.median:.0f} MiB/s, "
              f"best {result.best:.0f} MiB/s", flush=True)
    return full


def measure_ranges(rig: Rig, routes: list[Route], opts: Options, connections: int,
                   ) -> dict[str, RangeResult]:
    """wrk's random ranges over `routes`, which lead to an object of opts.range_size."""
    results = {r.name: RangeResult(connections) for r in routes}
    if opts.warmup:
        for route in routes:
            warm = wrk_ranges(route.port, route.path, route.headers, connections=connections,
                              seconds=opts.warmup, size=opts.range_size,
                              block=opts.block)
            results[route.name].warmup_bad = int(warm["bad_status"] + warm["bad_length"])
    for turn in range(opts.rounds):
        for route in _rotated(routes, turn):
            before = rig.cpu(route.name)
            out = wrk_ranges(route.port, route.path, route.headers, connections=connections,
                             seconds=opts.duration, size=opts.range_size,
                             block=opts.block)
            after = rig.cpu(route.name)
            rnd = RangeRound.from_wrk(out, Cpu(after.gateway - before.gateway,
                                               after.moto - before.moto))
            results[route.name].rounds.append(rnd)
            print(f"[{route.name}] -c{connections} round {turn + 1}/{opts.rounds}: "
                  f"{rnd.rps:.1f} req/s, p50 {rnd.latency_us['p50'] / 1000:.2f} ms, "
                  f"{'gateway' if route.name in (GATEWAY, DIRECT) else route.name} "
                  f"{rnd.cpu.gateway.total / rnd.duration_s:.2f} cores, moto "
                  f"{rnd.cpu.moto.total / rnd.duration_s:.2f} cores, "
                  f"{rnd.bad_status + rnd.bad_length + rnd.socket_errors} bad", flush=True)
    return results


def _established(port: int) -> int:
    """Established IPv4 connections whose remote end is 127.0.0.1:`port` (client sides)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
            count += 1
    return count


@dataclass(slots=True)
class Sample:
    at: float
    rss_kib: int
    upstream: int
    clients: int


class Sampler:
    """Samples the gateway's RSS and the connection counts on a thread, every 20 ms."""

    def __init__(self, rig: Rig) -> None:
        self._rig = rig
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.samples: list[Sample] = []

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, BenchError):
                self.samples.append(Sample(time.monotonic(), vm_rss_kib(self._rig.gateway.pid),
                                           _established(self._rig.moto_port),
                                           _established(self._rig.gateway_port)))
            self._stop.wait(0.02)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


async def _stream(session: aiohttp.ClientSession, route: Route, record: StreamRecord,
                  settled: list[int], all_settled: asyncio.Event, gate: asyncio.Event) -> None:
    """GET the whole object; hold it unread until `gate` opens, then read it all."""
    record.sent_at = time.monotonic()
    headed = False
    try:
        async with session.get(f"http://{HOST}:{route.port}{route.path}",
                               headers=route.headers) as response:
            record.status = response.status
            record.headers_at = time.monotonic()
            headed = True
            settled[0] += 1
            if settled[0] == settled[1]:
                all_settled.set()
            await gate.wait()
            async for chunk in response.content.iter_any():
                record.received += len(chunk)
    except (aiohttp.ClientError, TimeoutError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        record.done_at = time.monotonic()
        if not headed:
            settled[0] += 1
            if settled[0] == settled[1]:
                all_settled.set()


async def _streams(route: Route, opts: Options) -> tuple[list[StreamRecord], float, float,
                                                          bool]:
    records = [StreamRecord() for _ in range(opts.streams)]
    settled = [0, opts.streams]  # streams with headers or failed, of how many
    all_settled, gate = asyncio.Event(), asyncio.Event()
    connector = aiohttp.TCPConnector(limit=opts.streams, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30,
                                    sock_read=opts.hold_timeout + 60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(_stream(session, route, rec, settled, all_settled, gate))
                 for rec in records]
        timed_out = False
        try:
            await asyncio.wait_for(all_settled.wait(), opts.hold_timeout)
        except TimeoutError:
            timed_out = True
        released = time.monotonic()
        gate.set()
        await asyncio.gather(*tasks)
        finished = time.monotonic()
    return records, released, finished, timed_out


def measure_streams(rig: Rig, route: Route, opts: Options) -> StreamsResult:
    print(f"{opts.streams} concurrent streams of {opts.rss_size_mib} MiB through the gateway",
          flush=True)
    if not reset_hwm(rig.gateway.pid):
        raise BenchError("cannot reset the gateway's VmHWM (/proc/<pid>/clear_refs)")
    reset_hwm(rig.moto.pid)
    rss_before = vm_rss_kib(rig.gateway.pid)
    before = rig.cpu()
    started = time.monotonic()
    with Sampler(rig) as sampler:
        records, released, finished, timed_out = asyncio.run(_streams(route, opts))
    after = rig.cpu()
    samples = sampler.samples
    open_at_release = sum(1 for r in records
                          if r.headers_at and r.headers_at <= released and r.done_at >= released)
    held = [s.rss_kib for s in samples if s.at <= released]
    return StreamsResult(
        streams=opts.streams, size=opts.rss_size, records=records, started=started,
        released=released, finished=finished, open_at_release=open_at_release,
        max_upstream=max((s.upstream for s in samples), default=0),
        max_clients=max((s.clients for s in samples), default=0),
        rss_before_kib=rss_before, peak_kib=vm_hwm_kib(rig.gateway.pid),
        peak_held_kib=max(held, default=0), moto_peak_kib=vm_hwm_kib(rig.moto.pid),
        cpu=Cpu(after.gateway - before.gateway, after.moto - before.moto),
        hold_timed_out=timed_out)


def s3_calls(moto_log: Path) -> Counter[str]:
    """Requests moto answered, by method and status (werkzeug's request log)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", moto_log.read_text(errors="replace"))  # colours
    return Counter(f"{m.group(1)} {m.group(2)}" for m in re.finditer(
        r'"([A-Z]+) \S+ HTTP/1\.[01]" (\d{3})', text))


def own_cpu_s() -> float:
    """CPU seconds of this process and its waited-for children (wrk, keys create)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * KIB
    return 0


def run(opts: Options) -> Report:
    check_tools()
    need = opts.streams * opts.rss_size
    if need > MEM_SHARE * mem_available():
        raise BenchError(f"part c would keep {need / MIB:,.0f} MiB in moto (it holds every "
                         f"GET body in memory), more than {MEM_SHARE:.0%} of MemAvailable; "
                         "lower --rss-size-mib or --streams")
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    busy0, own0 = machine_busy_s(), own_cpu_s()
    machine = machine_info({
        "moto": importlib.metadata.version("moto"),
        "aiobotocore / botocore": f"{importlib.metadata.version('aiobotocore')} / "
                                  f"{importlib.metadata.version('botocore')}",
    })
    cpus = sorted(os.sched_getaffinity(0))
    moto_cpus: set[int] | None = None
    pinning = "off"
    if opts.pin and len(cpus) >= 2:
        client_cpu, moto_cpu = cpus[0], cpus[1]
        os.sched_setaffinity(0, {client_cpu})  # inherited by wrk and the gateway
        moto_cpus = {moto_cpu}
        pinning = (f"moto on CPU {moto_cpu}; the gateway and the clients (this script's "
                   f"downloads and streams, wrk) on CPU {client_cpu}")
    elif opts.pin:
        pinning = "off (one CPU only)"
    notes: list[str] = []
    with work_dir(opts.keep, "s3-") as work, contextlib.ExitStack() as stack:
        file = work / "object.bin"
        print(f"writing {opts.size_mib} MiB of random bytes to {file}", flush=True)
        digest = make_file(file, opts.size)
        print("starting moto and the gateway, uploading through the gateway", flush=True)
        moto, moto_port, moto_log = start_moto(stack, work, moto_cpus)
        gateway, gateway_port, gateway_log, key = start_gateway(stack, work, moto_port,
                                                                opts.cache_ttl)
        rig = Rig(moto, moto_port, moto_log, gateway, gateway_port, gateway_log, key)
        raw, direct = upload(rig, file, opts.size)
        stream_route = raw
        if opts.rss_size != opts.size:
            small = work / "streams.bin"
            make_file(small, opts.rss_size)
            stream_route, _ = upload(rig, small, opts.rss_size)
            small.unlink()
        print(f"[gateway] pid {gateway.pid}, http://{HOST}:{gateway_port}{raw.path}\n"
              f"[direct] moto pid {moto.pid}, http://{HOST}:{moto_port}{direct.path[:80]}...",
              flush=True)
        routes = [raw, direct]
        range_routes = routes
        if opts.range_size != opts.size:
            small = work / "ranges.bin"
            make_file(small, opts.range_size)
            range_routes = list(upload(rig, small, opts.range_size))
            small.unlink()
        store_connection = connection_header(direct)
        relay, (relay_full, relay_ranges) = start_relay(stack, work, moto_port,
                                                        [direct, range_routes[1]])
        rig.fronts[RELAY] = relay.pid
        refs_full, refs_ranges = [relay_full], [relay_ranges]
        proxy = start_proxy(stack, work, moto_port, [direct, range_routes[1]])
        if proxy is None:
            notes.append(f"{NGINX} is not installed: no nginx proxy for reference.")
        else:
            rig.fronts[PROXY], (proxy_full, proxy_ranges) = proxy
            refs_full.append(proxy_full)
            refs_ranges.append(proxy_ranges)
        setup_peak = vm_hwm_kib(gateway.pid)
        if not reset_hwm(gateway.pid):
            notes.append("Could not reset the gateway's VmHWM: its peaks include setup.")
        full = measure_full(rig, [*routes, *refs_full], opts, digest)
        ranges = measure_ranges(rig, range_routes, opts, opts.connections)
        latency = measure_ranges(rig, [*range_routes, *refs_ranges], opts, 1)
        peak_ab = vm_hwm_kib(gateway.pid)
        streams = measure_streams(rig, stream_route, opts)
        print(f"[gateway] {streams.complete}/{streams.streams} streams complete, "
              f"{streams.open_at_release} open at once, peak RSS "
              f"{streams.peak_kib / KIB:.1f} MiB", flush=True)
        calls = s3_calls(moto_log)
        # Everything else the machine did meanwhile (another job disturbs the numbers).
        servers = rig.cpu()
        others = (machine_busy_s() - busy0 - (own_cpu_s() - own0) - servers.gateway.total
                  - servers.moto.total) / (time.monotonic() - t0)
        notes.append(f"Other processes on the machine (and kernel threads) used about "
                     f"{max(others, 0.0):.2f} CPUs on average during the run"
                     + ("; that is enough to disturb the numbers: run again on a quiet "
                        "machine." if others > 0.2 else " (quiet)."))
        notes += summarize_log(gateway_log.read_text(errors="replace").splitlines())
    return Report(opts, started, time.monotonic() - t0, machine, pinning, full, ranges,
                  latency, streams, peak_ab, setup_peak, calls, store_connection, notes)


# --------------------------------------------------------------------------- report


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _busy(cores: float) -> str:
    return f"{cores:.2f}" + (" ‡" if cores >= BUSY else "")


def render_markdown(report: Report) -> str:
    """s3_bench's section of docs/benchmarks.md, from one run's results."""
    opts = report.options
    full, ranges, latency, st = report.full, report.ranges, report.latency, report.streams
    gw_full, dir_full = full[GATEWAY], full[DIRECT]
    full_ratio = _ratio(gw_full.median, dir_full.median)
    added_ms = latency[GATEWAY].p50_ms - latency[DIRECT].p50_ms
    relay_ms = latency[RELAY].p50_ms - latency[DIRECT].p50_ms
    rps_ratio = _ratio(ranges[GATEWAY].rps, ranges[DIRECT].rps)
    peak_bytes = st.peak_kib * KIB
    hold_s = st.released - st.started
    lines = [
        "## S3 (moto): the gateway vs direct presigned GETs",
        "",
        "Generated by `bench/s3_bench.py`, which rewrites only this section.",
        "",
        f"- Date: {report.started:%Y-%m-%d %H:%M} UTC (run took {report.elapsed_s:.0f} s)",
        *(f"- {k}: {v}" for k, v in report.machine.items()),
        f"- CPU pinning: {report.pinning}",
        f"- Gateway settings: `STORAGE_BACKEND=s3`, `GATEWAY_CACHE_TTL={opts.cache_ttl:g}`, "
        "`GATEWAY_S3_MAX_CONNECTIONS` default (256), `GATEWAY_WORKERS=1`, "
        "`GATEWAY_LOG_LEVEL=warning`",
        "",
        "### Method",
        "",
        "Two processes on 127.0.0.1: moto's S3 in server mode (`moto_server -H 127.0.0.1 "
        "-p PORT`, a threaded werkzeug server; a bucket is created with a PUT) and the "
        "gateway (`python -m gateway serve` with `STORAGE_BACKEND=s3`, `S3_ENDPOINT` at "
        "moto, moto's dummy credentials). A key comes from `python -m gateway keys create "
        f"--user-id 1 --role recorder`; {opts.size_mib} MiB of random bytes are uploaded "
        "through the gateway (`POST /recordings`, then `POST /recordings/{id}/media"
        "?type=audio&format=mp3`), and the script checks that the object is in the bucket "
        "at `recordings/1/<recording id>/<session_uid>.mp3` with the right size. The same "
        "bytes are then read two ways, and two more for reference:",
        "",
        "- **gateway**: `GET /recordings/{id}/media/{media_id}/raw` with `X-API-Key`. The "
        "gateway keeps the object's HEAD for `GATEWAY_CACHE_TTL` "
        f"({opts.cache_ttl:g} s), so each request costs the store one GET (a GetObject "
        "with If-Match, and the Range asked for, none for the whole object; moto's request "
        "counts are in the notes), streamed through.",
        "- **direct**: the presigned GetObject URL from `GET .../download`, straight to moto "
        "(Range headers are not part of the signature, so wrk can send its own).",
        "- **aiohttp relay** (a reference, held to no target): `bench/relay_app.py`, a bare "
        "aiohttp app on the gateway's CPU that answers each request with one GET of the same "
        "presigned URL (the client's Range passed on), streamed back the usual way "
        "(`iter_any()`, `response.write()`). It has no authentication, catalog, metrics or "
        "range logic: what it adds to direct is what aiohttp itself, server and client, and "
        "the extra hop cost on this machine in the same minutes; the gateway's own share is "
        "the difference. It takes part in the full-object and the `-c1` runs.",
        "- **nginx proxy** (a reference too, if nginx is installed): one nginx worker on the "
        "gateway's CPU, `proxy_pass` to moto, HTTP/1.1, "
        f"`{PROXY_BUFFERS}` (unbuffered, it moved a 64 MiB object at under half "
        "this rate), the same presigned URL path: what a hop written in C costs in the same "
        "place. Same runs as the relay.",
        "",
        "The paths take turns (interleaved, rotating order):",
        "",
        f"- **Full object**: one untimed GET per path whose SHA-256 is checked, then "
        f"{opts.full_runs} timed GETs each on a new connection, read with `recv_into` into a "
        "reused 1 MiB buffer. MiB/s = size / time from connect to the last byte; the "
        "median is used for the target.",
        f"- **{opts.range_kib} KiB ranges**, of an object of their own "
        f"({opts.range_size_mib} MiB, uploaded the same way; see below why): per path an "
        f"unrecorded {opts.warmup} s warm-up, then {opts.rounds} rounds of "
        f"`wrk -t1 -c{opts.connections} -d{opts.duration}s -s "
        "bench/random_ranges.lua URL -- SIZE BLOCK` (random block-aligned ranges; every "
        "response that is not a 206 with exactly one block is counted). req/s is the "
        f"median round's. {opts.connections} connections, because moto answers one request "
        "at a time anyway (one core, the GIL) and more connections only queue there: "
        "latency grows with the count, req/s does not. The added latency comes from "
        f"separate runs at one connection (same warm-up and {opts.rounds} x "
        f"{opts.duration} s rounds, `-c1`): median over rounds of wrk's p50, gateway minus "
        "direct.",
        f"- **{opts.streams} streams**: the gateway's VmHWM is reset through "
        f"`/proc/<pid>/clear_refs`, then {opts.streams} aiohttp clients (one connection "
        f"each, in this script) GET a whole {opts.rss_size_mib} MiB object through the "
        "gateway at once. Each one holds its response unread until every stream has its "
        "headers (slow readers: all streams open with full buffers at the same time), then "
        "all read to the end. A thread samples the gateway's VmRSS and the established "
        "connections gateway -> moto and clients -> gateway every 20 ms. This part reads "
        f"its own {opts.rss_size_mib} MiB object because moto keeps the whole body of "
        f"every GET in memory while sending it: {opts.streams} x {opts.size_mib} MiB would "
        f"be {opts.streams * opts.size_mib / 1024:.1f} GiB of moto; the gateway's memory "
        "per stream (its buffers) does not depend on the object's size.",
        "- **CPU**: the gateway's time on CPU (all threads, `/proc/<pid>/task/*/schedstat`) "
        "and moto's (utime + stime of `/proc/<pid>/stat`, 10 ms ticks, which keeps the "
        "time of its finished per-connection threads), around each measurement. "
        f"*cores* = CPU seconds per wall second; ‡ marks a process at {BUSY} cores or more, "
        "the bottleneck.",
        "",
        "moto stands in for a remote S3, so it gets a CPU of its own; the gateway (and each "
        "reference) shares the other one with the clients, whose load is small next to its "
        "own (one `recv_into` loop, or one wrk thread at a few hundred requests per second "
        "at most), except in the streams part, where memory, not speed, is measured. Unlike S3, "
        "moto reads the whole object for every GetObject, even a "
        f"{opts.range_kib} KiB range (`key.value`), so its time per request grows with the "
        "object: about 42 ms for a range of a 64 MiB object, 2 ms of a 1 MiB one. The "
        "range runs use a small object so that moto's copying, and its variation from one "
        "round to the next (a millisecond or more at 64 MiB), do not drown the gateway's "
        "share, which is what the latency target is about.",
        "",
        "### Results",
        "",
        f"| Path | Full object MiB/s (median / best of {opts.full_runs}) "
        f"| {opts.range_kib} KiB ranges req/s (-c{opts.connections}) "
        f"| Latency p50 / p99 ms (-c{opts.connections}) | Latency p50 / p99 ms (-c1) "
        "| Non-206 / bad length / socket errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, label in ((GATEWAY, "gateway (raw)"), (DIRECT, "direct (presigned GET)")):
        fr, rg, lt = full[name], ranges[name], latency[name]
        lines.append(
            f"| {label} | {fr.median:,.0f} / {fr.best:,.0f} | {rg.rps:,.1f} "
            f"| {_ms(rg.latency_us_median('p50'))} / {_ms(rg.latency_us_median('p99'))} "
            f"| {_ms(lt.latency_us_median('p50'))} / {_ms(lt.latency_us_median('p99'))} "
            f"| {rg.bad_status + lt.bad_status} / {rg.bad_length + lt.bad_length} / "
            f"{rg.socket_errors + lt.socket_errors} |")
    lines += [
        "",
        "CPU during the measurements (gateway / moto):",
        "",
        "| Path | Full object: CPU-s per GET | Full object: gateway MiB per CPU-s "
        f"| Ranges -c{opts.connections}: cores | Ranges -c{opts.connections}: CPU ms per "
        "request | Ranges -c1: cores |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, label in ((GATEWAY, "gateway (raw)"), (DIRECT, "direct (presigned GET)")):
        fr, rg, lt = full[name], ranges[name], latency[name]
        runs = len(fr.seconds)
        gw_mib = (fr.size * runs / MIB / fr.cpu.gateway.total
                  if name == GATEWAY and fr.cpu.gateway.total else 0.0)
        lines.append(
            f"| {label} | {fr.cpu.gateway.total / runs:.3f} / {fr.cpu.moto.total / runs:.3f} "
            f"| {f'{gw_mib:,.0f}' if gw_mib else '-'} "
            f"| {_busy(rg.cpu.gateway.total / rg.duration_s)} / "
            f"{_busy(rg.cpu.moto.total / rg.duration_s)} "
            f"| {rg.cpu.gateway.total * 1000 / max(rg.requests, 1):.2f} / "
            f"{rg.cpu.moto.total * 1000 / max(rg.requests, 1):.2f} "
            f"| {_busy(lt.cpu.gateway.total / lt.duration_s)} / "
            f"{_busy(lt.cpu.moto.total / lt.duration_s)} |")
    lines += [
        "",
        "Beside the references, measured in the same turns (CPU of the process in front of "
        "moto):",
        "",
        "| Path | Full object MiB/s (median / best) | Full object vs direct "
        "| Full object: CPU-s per GET | Latency p50 / p99 ms (-c1) "
        "| Added p50 vs direct (ms, -c1) | CPU ms per request (-c1) "
        "| Non-206 / bad length / socket errors (-c1) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label in ((GATEWAY, "gateway (raw)"), (PROXY, "nginx proxy"),
                        (RELAY, "aiohttp relay (bare)"), (DIRECT, "direct (presigned GET)")):
        if name not in full:
            continue
        fr, lt = full[name], latency[name]
        front = name != DIRECT
        added = f"{lt.p50_ms - latency[DIRECT].p50_ms:+.2f}" if front else "-"
        per_request = (f"{lt.cpu.gateway.total * 1000 / max(lt.requests, 1):.2f}" if front
                       else "-")
        per_get = f"{fr.cpu.gateway.total / len(fr.seconds):.3f}" if front else "-"
        lines.append(
            f"| {label} | {fr.median:,.0f} / {fr.best:,.0f} "
            f"| {_ratio(fr.median, dir_full.median):.2f} x | {per_get} "
            f"| {_ms(lt.latency_us_median('p50'))} / "
            f"{_ms(lt.latency_us_median('p99'))} | {added} | {per_request} "
            f"| {lt.bad_status} / {lt.bad_length} / {lt.socket_errors} |")
    lines += [
        "",
        f"{st.streams} concurrent streams through the gateway ({st.size // MIB} MiB each):",
        "",
        "| Streams complete / failed | Open at once (headers, not finished) "
        "| Max established gateway -> moto | Max established clients -> gateway "
        "| Gateway RSS before (MiB) | Gateway peak RSS, VmHWM (MiB) "
        "| Highest sampled RSS while all held (MiB) | Per stream above before (KiB) "
        "| Hold / total time (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {st.complete} / {st.failed} | {st.open_at_release} (max overlap "
        f"{st.max_overlap}) | {st.max_upstream} | {st.max_clients} "
        f"| {st.rss_before_kib / KIB:.1f} | {st.peak_kib / KIB:.1f} "
        f"| {st.peak_held_kib / KIB:.1f} "
        f"| {(st.peak_kib - st.rss_before_kib) / st.streams:,.0f} "
        f"| {hold_s:.1f} / {st.finished - st.started:.1f} |",
        "",
        "### Targets",
        "",
        "| Target | Measured | Result |",
        "|---|---:|---|",
        f"| gateway full-object MiB/s >= {FULL_TARGET:.1f} x direct "
        f"| {full_ratio:.2f} x ({gw_full.median:,.0f} vs {dir_full.median:,.0f}) "
        f"| {verdict(full_ratio >= FULL_TARGET)} |",
        f"| added latency per {opts.range_kib} KiB range at -c1, p50(gateway) - p50(direct), "
        f"<= {LATENCY_TARGET_MS:g} ms | {added_ms:+.2f} ms ({latency[GATEWAY].p50_ms:.2f} vs "
        f"{latency[DIRECT].p50_ms:.2f}) | {verdict(added_ms <= LATENCY_TARGET_MS)} |",
        f"| gateway peak RSS with {st.streams} concurrent streams < "
        f"{RSS_TARGET_BYTES / 1e6:.0f} MB | {peak_bytes / 1e6:.1f} MB "
        f"({st.peak_kib / KIB:.1f} MiB; {st.open_at_release} streams open at once) "
        f"| {verdict(peak_bytes < RSS_TARGET_BYTES and st.failed == 0)} |",
        "",
        f"Of the gateway's {added_ms:+.2f} ms, a bare aiohttp relay of the same GETs, "
        f"measured in the same rounds, adds {relay_ms:+.2f} ms by itself: the gateway's own "
        f"share (authentication, catalog, ranges and preconditions, metrics, the relay) is "
        f"{added_ms - relay_ms:+.2f} ms. Full objects through the bare relay: "
        f"{_ratio(full[RELAY].median, dir_full.median):.2f} x direct"
        + (f"; through nginx: {_ratio(full[PROXY].median, dir_full.median):.2f} x direct, "
           f"{latency[PROXY].p50_ms - latency[DIRECT].p50_ms:+.2f} ms per range at -c1."
           if PROXY in full else "."),
        "",
        f"For reference: {opts.range_kib} KiB ranges req/s at -c{opts.connections}, gateway "
        f"vs direct {rps_ratio:.2f} x ({ranges[GATEWAY].rps:,.1f} vs "
        f"{ranges[DIRECT].rps:,.1f}).",
    ]
    notes = list(report.notes)
    if report.store_connection.lower() == "close":  # seen on one direct request
        notes.append(MOTO_CLOSES_NOTE)
    for name in (PROXY, RELAY):
        if name in full:
            notes.append(
                f"{name}: full-object runs (MiB/s) "
                + ", ".join(f"{v:,.0f}" for v in full[name].mib_s) + "; -c1 rounds p50 (ms) "
                + ", ".join(_ms(r.latency_us["p50"]) for r in latency[name].rounds)
                + f"; bad responses in the warm-up {latency[name].warmup_bad}.")
    for name in (GATEWAY, DIRECT):
        fr, rg, lt = full[name], ranges[name], latency[name]
        notes.append(
            f"{name}: full-object runs (MiB/s) " + ", ".join(f"{v:,.0f}" for v in fr.mib_s)
            + f"; -c{opts.connections} rounds (req/s) "
            + ", ".join(f"{r.rps:,.1f}" for r in rg.rounds)
            + "; -c1 rounds p50 (ms) "
            + ", ".join(_ms(r.latency_us["p50"]) for r in lt.rounds)
            + f"; bad responses in the warm-ups {rg.warmup_bad + lt.warmup_bad}.")
    notes.append(
        f"Gateway VmHWM: {report.gateway_setup_peak_kib / KIB:.1f} MiB after setup (startup and "
        f"the uploads), {report.gateway_peak_ab_kib / KIB:.1f} MiB over the full-object and "
        f"range runs; {st.streams} streams: gateway CPU {st.cpu.gateway.total:.2f} s, "
        f"moto {st.cpu.moto.total:.2f} s, moto peak RSS {st.moto_peak_kib / KIB:,.0f} MiB"
        + (f"; the hold timed out after {opts.hold_timeout:g} s" if st.hold_timed_out else "")
        + ".")
    errors = Counter(r.error for r in st.records if r.error)
    notes += [f"Stream error x{n}: `{err}`" for err, n in errors.most_common(5)]
    statuses = Counter(r.status for r in st.records if r.status != 200)
    if statuses:
        notes.append("Stream statuses other than 200: "
                     + ", ".join(f"{s} x{n}" for s, n in statuses.most_common()))
    if report.s3_calls:
        notes.append("Requests moto answered over the whole run (method, status; from its "
                      "request log, all paths and setup): "
                      + ", ".join(f"{k} x{n:,}" for k, n in sorted(report.s3_calls.items()))
                      + ".")
    lines += ["", "### Notes", "", *(f"- {n}" for n in notes)]
    lines += [
        "",
        "### Reproduce",
        "",
        "Needs `wrk` (`apt-get install -y wrk`) and the project's venv with the test extras "
        "(moto[server]); the nginx reference needs `nginx-light`, and is left out without it:",
        "",
        "```sh",
        ".venv/bin/python bench/s3_bench.py       # defaults: 64 MiB, 3 x 10 s rounds",
        ".venv/bin/python bench/s3_bench.py --size-mib 8 --duration 2 --rounds 1 "
        "--streams 50 --output /tmp/s3.md",
        "```",
        "",
        f"This run: `{opts.command()}`. Everything binds to 127.0.0.1; the temporary files "
        "live under bench/.work/ and are removed afterwards (`--keep` keeps them, with "
        "moto's and the gateway's logs). moto is a test double, not S3: the absolute "
        "numbers say little about a real store; the gateway's share (CPU per request and "
        "per MiB, memory per stream, added latency) is what carries over.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        report = run(opts)
        markdown = render_markdown(report)
        print(markdown)
        write_section(opts.output, SECTION, markdown)
    except BenchError as exc:
        print(f"s3_bench: {exc}", file=sys.stderr)
        return 1
    print(f"wrote the {SECTION} section of {opts.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
