"""Scaling with worker processes: the gateway and nginx, 1 and 2 workers, side by side.

Four servers on 127.0.0.1 serve the same random file (64 MiB by default):

1. nginx with ``worker_processes 1``,
2. nginx with ``worker_processes 2`` (``sendfile on``, ``access_log off``),
3. the gateway with ``GATEWAY_WORKERS=1``,
4. the gateway with ``GATEWAY_WORKERS=2`` (one process per worker on a shared
   SO_REUSEPORT socket, local storage, log level warning),

and each is measured two ways, in rounds that take turns in a rotating order:

a. requests per second of random, block-aligned 64 KiB ``Range`` requests
   (``wrk -t2 -c32`` with bench/random_ranges.lua, which counts every answer that
   is not a 206 with exactly one block);
b. full downloads: ``wrk -t2 -c8`` GETs of the whole file (bench/full_get.lua,
   which keeps no bodies), as MiB/s and requests per second.

Nothing is pinned: the workers need both CPUs, and wrk shares them. CPU time of
every serving process (all threads, /proc/<pid>/task/*/schedstat) and of wrk
(getrusage of the waited-for child) is sampled around each run, so the table says
how much of the two cores each side had. The speedup is 2 workers / 1 worker of
the same server in the same run; the target is >= 1.7x for the gateway.

Results go to the ``scaling_bench`` section of docs/benchmarks.md and the plot to
docs/scaling.png (matplotlib: ``pip install -e '.[bench]'``). nginx and wrk must be
installed (``apt-get install -y nginx-light wrk``).

    .venv/bin/python bench/scaling_bench.py [--size-mib 64] [--duration 10] [--rounds 3]

A quick check: ``--size-mib 8 --duration 2 --rounds 1 --warmup 0 --output /tmp/s.md
--plot /tmp/s.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    BENCH_DIR,
    DEFAULT_OUTPUT,
    HOST,
    KIB,
    MIB,
    ROOT,
    WRK,
    BenchError,
    children,
    cpu_times,
    download,
    machine_busy_s,
    machine_info,
    make_file,
    summarize_log,
    verdict,
    work_dir,
    write_section,
    wrk_ranges,
)
from serve_bench import FILE_NAME, NGINX, Server, start_gateway, start_nginx

SECTION = "scaling_bench"
FULL_SCRIPT = BENCH_DIR / "full_get.lua"
DEFAULT_PLOT = ROOT / "docs" / "scaling.png"
TARGET = 1.7
CLIENT_BOUND = 0.85  # of its workers' cores: below this, the server was not the bottleneck
WORKER_COUNTS = (1, 2)
KINDS = ("ranges", "full")


# --------------------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class Options:
    size_mib: int
    duration: int
    rounds: int
    warmup: int
    range_connections: int
    full_connections: int
    range_kib: int
    bitrate_kbps: int
    seeks_per_minute: float
    output: Path
    plot: Path
    keep: bool

    @property
    def size(self) -> int:
        return self.size_mib * MIB

    @property
    def block(self) -> int:
        return self.range_kib * KIB


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description="The gateway and nginx with 1 and 2 worker processes: 64 KiB ranges and "
                    "full downloads. Rewrites its section of docs/benchmarks.md and "
                    "docs/scaling.png.")
    parser.add_argument("--size-mib", type=int, default=64, help="file size (default 64)")
    parser.add_argument("--duration", type=int, default=10,
                        help="seconds of each measured wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measured runs per server and kind, interleaved (default 3)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="seconds of the unrecorded run per server and kind (default 2)")
    parser.add_argument("--range-connections", type=int, default=32,
                        help="wrk connections for ranges (default 32)")
    parser.add_argument("--full-connections", type=int, default=8,
                        help="wrk connections for full downloads (default 8)")
    parser.add_argument("--range-kib", type=int, default=64, help="Range size in KiB (64)")
    parser.add_argument("--bitrate-kbps", type=int, default=128,
                        help="a listener's stream, for the replica calculation (default 128)")
    parser.add_argument("--seeks-per-minute", type=float, default=2.0,
                        help="a listener's range requests per minute besides the stream, "
                             "for the replica calculation (default 2)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="markdown file whose scaling_bench section to (re)write "
                             "(default docs/benchmarks.md)")
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT,
                        help="PNG to write (default docs/scaling.png)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (file, configs, server logs)")
    args = parser.parse_args(argv)
    if (args.size_mib < 1 or args.duration < 1 or args.rounds < 1 or args.warmup < 0
            or args.range_connections < 1 or args.full_connections < 1
            or args.bitrate_kbps < 1 or args.seeks_per_minute < 0):
        parser.error("sizes, durations and counts must be positive")
    if args.range_kib < 1 or args.range_kib * KIB > args.size_mib * MIB:
        parser.error("--range-kib must be at least 1 and fit in the file")
    return Options(args.size_mib, args.duration, args.rounds, args.warmup,
                   args.range_connections, args.full_connections, args.range_kib,
                   args.bitrate_kbps, args.seeks_per_minute, args.output.resolve(),
                   args.plot.resolve(), args.keep)


# --------------------------------------------------------------------------- measuring


@dataclass(slots=True)
class Target:
    """One server at one worker count, and every process that serves for it."""

    server: str  # "gateway" or "nginx"
    workers: int
    entry: Server
    pids: list[int]

    @property
    def label(self) -> str:
        return f"{self.server} x{self.workers}"

    def cpu_s(self) -> float:
        return sum(cpu_times(pid).total for pid in self.pids)


@dataclass(slots=True)
class Run:
    rps: float
    mib_s: float
    server_cores: float
    client_cores: float
    bad: int
    p99_ms: float


@dataclass(slots=True)
class Series:
    runs: list[Run] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in self.runs))

    @property
    def bad(self) -> int:
        return sum(r.bad for r in self.runs)


def serving_pids(target_server: str, entry: Server, workers: int) -> list[int]:
    """nginx: its master's workers; the gateway: its worker processes (or itself)."""
    if target_server == "nginx":
        stat = Path(f"/proc/{entry.pid}/stat").read_text()
        master = int(stat[stat.rindex(")") + 2:].split()[1])
        pids = children(master)
    elif workers == 1:
        pids = [entry.pid]
    else:  # the worker processes, not multiprocessing's resource tracker
        pids = [pid for pid in children(entry.pid)
                if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()]
    if len(pids) != workers:
        raise BenchError(f"{target_server}: expected {workers} serving processes, found {pids}")
    return pids


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk_full(target: Target, connections: int, seconds: int) -> dict[str, float]:
    entry = target.entry
    cmd = [WRK, "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s",
           "-s", str(FULL_SCRIPT)]
    for name, value in entry.headers.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd.append(f"http://{HOST}:{entry.port}{entry.path}")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 90,
                          check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return {k: float(v) for k, _, v in (item.partition("=") for item in line.split()[1:])}


def one_run(target: Target, kind: str, opts: Options, seconds: int) -> Run:
    entry = target.entry
    server0, client0 = target.cpu_s(), children_cpu_s()
    if kind == "ranges":
        out = wrk_ranges(entry.port, entry.path, entry.headers,
                         connections=opts.range_connections, seconds=seconds,
                         size=opts.size, block=opts.block, threads=2)
        bad = out["bad_status"] + out["bad_length"]
    else:
        out = wrk_full(target, opts.full_connections, seconds)
        # A short body shows as bytes missing: each answer carries the whole file.
        bad = out["bad_status"] + (out["bytes"] < out["requests"] * opts.size)
    duration = out["duration_us"] / 1e6
    errors = out["connect"] + out["read"] + out["write"] + out["timeout"]
    return Run(out["requests"] / duration, out["bytes"] / MIB / duration,
               (target.cpu_s() - server0) / duration, (children_cpu_s() - client0) / duration,
               int(bad + errors), out["p99_us"] / 1000)


def measure(targets: list[Target], opts: Options, digest: str,
            ) -> dict[tuple[str, str], Series]:
    results = {(t.label, kind): Series() for t in targets for kind in KINDS}
    for target in targets:
        entry = target.entry
        print(f"[{target.label}] pids {target.pids}, http://{HOST}:{entry.port}{entry.path}",
              flush=True)
        _, got = download(entry.port, entry.path, entry.headers, opts.size, verify=True)
        if got != digest:
            raise BenchError(f"{target.label} served other bytes (sha256 {got} != {digest})")
        if opts.warmup:
            for kind in KINDS:
                warm = one_run(target, kind, opts, opts.warmup)
                if warm.bad:
                    raise BenchError(f"{target.label}: {warm.bad} bad answers in the warm-up")
    for turn in range(opts.rounds):
        k = turn % len(targets)
        for target in targets[k:] + targets[:k]:
            for kind in KINDS:
                run = one_run(target, kind, opts, opts.duration)
                results[(target.label, kind)].runs.append(run)
                print(f"[{target.label}] round {turn + 1}/{opts.rounds} {kind}: "
                      f"{run.rps:,.0f} req/s, {run.mib_s:,.0f} MiB/s, server "
                      f"{run.server_cores:.2f} cores, wrk {run.client_cores:.2f} cores, "
                      f"{run.bad} bad", flush=True)
    return results


# --------------------------------------------------------------------------- report


@dataclass(slots=True)
class Report:
    opts: Options
    started: dt.datetime
    seconds: float
    machine: dict[str, str]
    results: dict[tuple[str, str], Series]
    notes: list[str]

    def value(self, server: str, workers: int, kind: str) -> float:
        series = self.results[(f"{server} x{workers}", kind)]
        return series.median("rps" if kind == "ranges" else "mib_s")

    def client_bound(self, server: str, workers: int, kind: str) -> bool:
        series = self.results[(f"{server} x{workers}", kind)]
        return series.median("server_cores") < CLIENT_BOUND * workers

    def speedup(self, server: str, kind: str) -> float:
        one = self.value(server, 1, kind)
        return self.value(server, 2, kind) / one if one else 0.0


def plot(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    titles = {"ranges": f"{report.opts.range_kib} KiB random ranges",
              "full": f"full downloads ({report.opts.size_mib} MiB file)"}
    units = {"ranges": "requests per second", "full": "MiB per second"}
    for ax, kind in zip(axes, KINDS, strict=True):
        for server, style in (("gateway", "o-"), ("nginx", "s-")):
            values = [report.value(server, w, kind) for w in WORKER_COUNTS]
            line, = ax.plot(WORKER_COUNTS, values, style, label=server)
            ax.plot(WORKER_COUNTS, [values[0] * w for w in WORKER_COUNTS], ":",
                    color=line.get_color(), label=f"{server}, linear")
            for w, v in zip(WORKER_COUNTS, values, strict=True):
                ax.annotate(f"{v:,.0f}", (w, v), textcoords="offset points", xytext=(6, -4),
                            fontsize=8)
        ax.set_title(titles[kind])
        ax.set_xlabel("worker processes")
        ax.set_ylabel(units[kind])
        ax.set_xticks(WORKER_COUNTS)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    cpus = report.machine["CPUs (nproc)"]
    fig.suptitle(f"Scaling with workers on {cpus} CPUs, wrk on the same machine "
                 f"({report.started:%Y-%m-%d})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replicas(report: Report) -> list[str]:
    """How many 2-core replicas N listeners need, from the gateway's 2-worker figures."""
    opts = report.opts
    headroom = 0.5  # run at half of the saturated figures: peaks, slow clients, a failover
    stream_kib_s = opts.bitrate_kbps * 1000 / 8 / KIB
    range_rps = report.value("gateway", 2, "ranges")
    # Worst case for the gateway: the player fetches the stream in range-sized requests.
    per_listener = stream_kib_s / opts.range_kib + opts.seeks_per_minute / 60
    per_replica = range_rps * headroom / per_listener
    full = report.results[("gateway x2", "full")]
    lines = [
        "### How many replicas",
        "",
        f"From the gateway's 2-worker figures above (one {report.machine['CPUs (nproc)']}-CPU "
        "host), kept at half of what saturated it for peaks, slow clients and a lost replica:",
        "",
        f"- A listener plays {opts.bitrate_kbps} kbit/s = {stream_kib_s:.1f} KiB/s and seeks "
        f"{opts.seeks_per_minute:g} times a minute. At worst its player fetches the stream in "
        f"{opts.range_kib} KiB ranges: {stream_kib_s:.1f} / {opts.range_kib} + "
        f"{opts.seeks_per_minute:g} / 60 = {per_listener:.3f} requests per second.",
        f"- One replica: {range_rps:,.0f} req/s x 0.5 / {per_listener:.3f} = "
        f"{per_replica:,.0f} listeners. N listeners need ceil(N / {per_replica:,.0f}) + 1 "
        "replicas (one spare):",
    ]
    for n in (1_000, 10_000, 100_000):
        lines.append(f"  - N = {n:,}: {math.ceil(n / per_replica) + 1} replicas.")
    lines += [
        f"- Bandwidth is not the limit: {per_replica:,.0f} listeners x {stream_kib_s:.1f} KiB/s "
        f"= {per_replica * stream_kib_s / KIB:,.0f} MiB/s, against "
        f"{full.median('mib_s'):,.0f} MiB/s of full downloads measured (and those were "
        "bound by wrk, not by the gateway).",
        "- These figures are for local disk with sendfile. Through object storage, count "
        "memory per open stream too: about 35 KiB each in the S3 section above when the "
        "body goes by splice (plain HTTP on both sides), about 0.3 MiB when it is copied "
        "(TLS), so 10,000 S3 listeners hold 0.35 to 3 GiB across the replicas; and the "
        "store's own throughput bounds everything behind it.",
    ]
    return lines


def _efficiency_note(ratio: float) -> str:
    if ratio > 1.1:
        return ("A request cost less CPU with 2 workers than with 1: unpinned, the single "
                "worker shares its CPU with wrk's threads and moves between the CPUs, so part "
                "of the speedup is that handicap going away, not capacity added. "
                "bench/serve_bench.py measures one pinned worker.")
    if ratio >= 0.9:
        return ("A request costs about the same with 2 workers: what the second one adds is "
                "bounded by the CPU that wrk leaves it, not by the workers getting in each "
                "other's way.")
    return ("Requests cost more with 2 workers: part of the loss is the workers getting in "
            "each other's way (the shared socket, the catalog), not only wrk's share.")


def render_markdown(report: Report) -> str:
    opts = report.opts
    out = [
        "## Scaling with workers: the gateway and nginx, 1 and 2 processes",
        "",
        "Generated by `bench/scaling_bench.py`, which rewrites only this section and "
        "`docs/scaling.png`.",
        "",
        f"- Date: {report.started:%Y-%m-%d %H:%M} UTC (run took {report.seconds:.0f} s)",
    ]
    out += [f"- {k}: {v}" for k, v in report.machine.items()]
    out += [
        "- CPU pinning: none (the workers need both CPUs; wrk runs beside them)",
        "",
        "### Method",
        "",
        f"The same {opts.size_mib} MiB random file is served by nginx (`worker_processes` 1 "
        "and 2, `sendfile on`, `access_log off`) and by the gateway (`GATEWAY_WORKERS` 1 and 2, "
        "local storage, `GATEWAY_LOG_LEVEL=warning`; the file uploaded through each gateway, "
        "then read through `GET /recordings/{id}/media/{media_id}/raw` with an API key). Every "
        "server's first full GET is checked against the file's SHA-256. Then, per server, an "
        f"unrecorded {opts.warmup} s run of each kind, and {opts.rounds} rounds of "
        f"{opts.duration} s runs taking turns in a rotating order:",
        "",
        f"- **ranges**: `wrk -t2 -c{opts.range_connections} -s bench/random_ranges.lua`, random "
        f"block-aligned {opts.range_kib} KiB ranges; anything but a 206 with one block is "
        "counted as bad;",
        f"- **full**: `wrk -t2 -c{opts.full_connections} -s bench/full_get.lua`, whole-file "
        "GETs; bodies are counted, not kept; a non-2xx answer or missing bytes count as bad.",
        "",
        "Medians of the rounds. *Server cores* and *wrk cores* are CPU seconds per second of "
        "the serving processes (all threads) and of wrk. With two CPUs, wrk's share is CPU "
        "that the second worker cannot have, so neither server can reach 2x here; nginx "
        "in the same run shows what the machine allows.",
        "",
        "### Results",
        "",
        "| Server | Workers | 64 KiB ranges req/s | p99 ms | server / wrk cores "
        "| Full MiB/s | full req/s | server / wrk cores | Bad answers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for server in ("gateway", "nginx"):
        for workers in WORKER_COUNTS:
            label = f"{server} x{workers}"
            r, f = report.results[(label, "ranges")], report.results[(label, "full")]
            marks = ["" if not report.client_bound(server, workers, kind) else " †"
                     for kind in KINDS]
            out.append(
                f"| {server} | {workers} | {r.median('rps'):,.0f}{marks[0]} "
                f"| {r.median('p99_ms'):.1f} "
                f"| {r.median('server_cores'):.2f} / {r.median('client_cores'):.2f} "
                f"| {f.median('mib_s'):,.0f}{marks[1]} | {f.median('rps'):,.1f} "
                f"| {f.median('server_cores'):.2f} / {f.median('client_cores'):.2f} "
                f"| {r.bad + f.bad} |")
    out += [
        "",
        f"† The server used less than {CLIENT_BOUND:.0%} of its workers' cores: it waited for "
        "wrk, which had the rest of the machine, so the figure says more about the client "
        "than about the server.",
    ]
    out += [
        "",
        "![Requests per second and MiB/s with 1 and 2 workers](scaling.png)",
        "",
        "### Targets",
        "",
        "| Target | Measured | Result |",
        "|---|---:|---|",
    ]
    for kind, name in (("ranges", "64 KiB ranges req/s"), ("full", "full-download MiB/s")):
        s = report.speedup("gateway", kind)
        bound = all(report.client_bound("gateway", w, kind) for w in WORKER_COUNTS)
        note = " (both runs bound by wrk †: not a measure of the gateway)" if bound else ""
        out.append(f"| gateway 2 workers >= {TARGET} x 1 worker, {name} | {s:.2f} x "
                   f"(nginx in the same run: {report.speedup('nginx', kind):.2f} x) "
                   f"| {verdict(s >= TARGET)}{note} |")
    per_cpu = [report.results[(f"gateway x{w}", "ranges")] for w in WORKER_COUNTS]
    efficiency = [r.median("rps") / max(r.median("server_cores"), 1e-9) for r in per_cpu]
    out += [
        "",
        f"Per CPU-second of the gateway's own processes, ranges went from {efficiency[0]:,.0f} "
        f"requests with 1 worker to {efficiency[1]:,.0f} with 2 "
        f"({efficiency[1] / max(efficiency[0], 1e-9):.2f} x). " + _efficiency_note(
            efficiency[1] / max(efficiency[0], 1e-9)),
    ]
    out += ["", *replicas(report), "", "### Notes", ""]
    out += [f"- {note}" for note in report.notes]
    out += [
        "",
        "### Reproduce",
        "",
        "```",
        "apt-get install -y nginx-light wrk && .venv/bin/pip install -e '.[bench]'",
        ".venv/bin/python bench/scaling_bench.py",
        "```",
        "",
        f"This run: `python bench/scaling_bench.py --size-mib {opts.size_mib} --duration "
        f"{opts.duration} --rounds {opts.rounds} --warmup {opts.warmup} --range-connections "
        f"{opts.range_connections} --full-connections {opts.full_connections}`.",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def run(opts: Options) -> Report:
    for tool in (WRK, NGINX):
        if subprocess.run(["which", tool], capture_output=True, check=False).returncode:
            raise BenchError(f"{tool} is not installed (apt-get install -y nginx-light wrk)")
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    busy0 = machine_busy_s()
    nginx_v = subprocess.run([NGINX, "-v"], capture_output=True, text=True, check=False)
    machine = machine_info({"nginx": nginx_v.stderr.strip().split(": ")[-1]})
    notes: list[str] = []
    with work_dir(opts.keep, "scaling-") as work, contextlib.ExitStack() as stack:
        docroot = work / "docroot"
        docroot.mkdir()
        file = docroot / FILE_NAME
        print(f"writing {opts.size_mib} MiB of random bytes to {file}", flush=True)
        digest = make_file(file, opts.size)
        targets: list[Target] = []
        logs = []
        for workers in WORKER_COUNTS:
            entry = start_nginx(stack, work, docroot, workers)
            targets.append(Target("nginx", workers, entry,
                                  serving_pids("nginx", entry, workers)))
        for workers in WORKER_COUNTS:
            print(f"starting the gateway with {workers} worker(s), uploading the file",
                  flush=True)
            entry, log = start_gateway(stack, work, file, opts.size, None, workers)
            logs.append(log)
            targets.append(Target("gateway", workers, entry,
                                  serving_pids("gateway", entry, workers)))
        os.sync()
        results = measure(targets, opts, digest)
        served = sum(t.cpu_s() for t in targets)
        for log in logs:
            notes += summarize_log(log.read_text(errors="replace").splitlines())
    elapsed = time.monotonic() - t0
    others = (machine_busy_s() - busy0 - served) / elapsed
    notes.insert(0, f"Everything else on the machine (wrk, this script, other processes) used "
                    f"about {max(others, 0.0):.2f} CPUs on average over the run.")
    return Report(opts, started, elapsed, machine, results, notes)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        report = run(opts)
    except BenchError as exc:
        print(f"scaling_bench: {exc}", file=sys.stderr)
        return 1
    markdown = render_markdown(report)
    try:
        write_section(opts.output, SECTION, markdown)
        plot(report, opts.plot)
    except BenchError as exc:
        print(markdown)
        print(f"scaling_bench: {exc}", file=sys.stderr)
        return 1
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
