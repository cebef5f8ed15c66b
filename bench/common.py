"""Helpers shared by the benchmarks in bench/ (serve_bench.py, s3_bench.py).

Processes (start, stop, pin to CPUs, wait until they answer), /proc sampling
(CPU time of all threads, peak RSS and its reset), plain HTTP clients (one
request; one full download into a reused buffer), wrk with bench/random_ranges.lua,
machine information, a summary of a gateway log, and the writer of one section
of docs/benchmarks.md: every script owns the part between its
``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` comments and rewrites only that.

Not a benchmark itself; the scripts import it from their own directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
WORK_PARENT = BENCH_DIR / ".work"
LUA_SCRIPT = BENCH_DIR / "random_ranges.lua"
DEFAULT_OUTPUT = ROOT / "docs" / "benchmarks.md"
WRK = "wrk"
HOST = "127.0.0.1"
MIB = 1024 * 1024
KIB = 1024
RECV_CHUNK = 1 * MIB
CLK_TCK = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT = 30.0

DOC_TITLE = "# Benchmarks"
DOC_INTRO = (
    "Each section below is written by the script it names, which rewrites only its own "
    "section (between its `<!-- NAME:begin -->` and `<!-- NAME:end -->` comments) and "
    "leaves the rest of this file alone."
)


class BenchError(Exception):
    """The benchmark cannot go on (a server failed, a response was wrong)."""


def new_key(env: dict[str, str]) -> str:
    """A recorder's API key for user 1: `gateway keys create` prints it as its last line."""
    done = subprocess.run([sys.executable, "-m", "gateway", "keys", "create", "--user-id", "1"],
                          env=env, capture_output=True, text=True, timeout=60, check=False,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise BenchError(f"gateway keys create failed: {done.stderr}")
    return done.stdout.strip().splitlines()[-1]


# --------------------------------------------------------------------------- /proc helpers


@dataclass(slots=True)
class CpuTimes:
    """CPU seconds of a process: `total` (ns-precise), and a coarse user/system split."""

    total: float  # time on CPU of all its threads, /proc/<pid>/task/*/schedstat
    user: float  # utime of /proc/<pid>/stat (clock ticks)
    system: float  # stime

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.total - other.total, self.user - other.user,
                        self.system - other.system)

    def __add__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.total + other.total, self.user + other.user,
                        self.system + other.system)


def cpu_times(pid: int) -> CpuTimes:
    """CPU time of the whole process (all threads), in seconds."""
    on_cpu_ns = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            on_cpu_ns += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return CpuTimes(on_cpu_ns / 1e9, int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK)


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size (VmHWM) of `pid`, in KiB."""
    return _status_kib(pid, "VmHWM")


def vm_rss_kib(pid: int) -> int:
    """Current resident set size (VmRSS) of `pid`, in KiB."""
    return _status_kib(pid, "VmRSS")


def _status_kib(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    raise BenchError(f"no {name} for pid {pid}")


def reset_hwm(pid: int) -> bool:
    """Reset the peak RSS to the current RSS (Linux >= 4.0); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def pin(pid: int, cpus: set[int] | None) -> None:
    """Pin every thread of `pid`; threads started later inherit it from their creator."""
    if cpus is None:
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), cpus)


def machine_busy_s() -> float:
    """CPU seconds all CPUs have spent in processes since boot (/proc/stat user, nice,
    system; not interrupts, which no process is charged for, nor steal)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (values[0] + values[1] + values[2]) / CLK_TCK


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            found.append(int(entry))
    return found


# --------------------------------------------------------------------------- HTTP clients


def http_request(
    port: int, method: str, path: str, headers: dict[str, str] | None = None,
    body: bytes | None = None, timeout: float = 10.0,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def download(port: int, path: str, headers: dict[str, str], size: int,
             *, verify: bool) -> tuple[float, str | None]:
    """GET the whole file on a fresh connection; (seconds to the last byte, SHA-256)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    hasher = hashlib.sha256() if verify else None
    buf = bytearray(RECV_CHUNK)
    view = memoryview(buf)
    with socket.create_connection((HOST, port), timeout=60) as sock:
        start = time.perf_counter()
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            n = sock.recv_into(buf)
            if n == 0:
                raise BenchError(f"connection closed in the headers of GET {path}")
            head += view[:n]
        raw_headers, _, rest = head.partition(b"\r\n\r\n")
        status_line, *header_lines = raw_headers.decode("latin-1").split("\r\n")
        fields = {k.strip().lower(): v.strip()
                  for k, _, v in (h.partition(":") for h in header_lines)}
        if status_line.split()[1] != "200" or fields.get("content-length") != str(size):
            raise BenchError(f"GET {path}: {status_line!r}, "
                             f"Content-Length {fields.get('content-length')!r}, wanted {size}")
        received = len(rest)
        if hasher is not None:
            hasher.update(rest)
        while received < size:
            n = sock.recv_into(view, min(RECV_CHUNK, size - received))
            if n == 0:
                raise BenchError(f"GET {path}: connection closed after {received} bytes")
            if hasher is not None:
                hasher.update(view[:n])
            received += n
        elapsed = time.perf_counter() - start
    return elapsed, None if hasher is None else hasher.hexdigest()


def wait_ready(proc: subprocess.Popen[bytes], port: int, path: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{proc.args!r} exited with {proc.returncode}:\n"
                             f"{log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _ = http_request(port, "GET", path, timeout=1.0)
            if status == 200:
                return
        time.sleep(0.1)
    raise BenchError(f"{proc.args!r} did not answer GET {path} within {READY_TIMEOUT:.0f}s")


def wrk_ranges(port: int, path: str, headers: dict[str, str], *, connections: int,
               seconds: int, size: int, block: int, timeout_s: int = 5,
               threads: int = 1) -> dict[str, float]:
    """One wrk run of bench/random_ranges.lua (`-t1` unless told); its BENCH line's numbers."""
    cmd = [WRK, f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
           "--timeout", f"{timeout_s}s", "-s", str(LUA_SCRIPT)]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd += [f"http://{HOST}:{port}{path}", "--", str(size), str(block)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60,
                          check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return {k: float(v) for k, _, v in (item.partition("=") for item in line.split()[1:])}


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None,
          ) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
         also: Sequence[int] = ()) -> None:
    """Stop `proc` (and leftover pids `also`, e.g. nginx's worker) by their ids."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:  # a frozen machine: do not lose the results
                print(f"warning: pid {proc.pid} did not exit after SIGKILL", file=sys.stderr)
    for pid in also:
        with contextlib.suppress(OSError):
            # Only if the pid still names an nginx process (its master may have been killed).
            if b"nginx" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)


def make_file(path: Path, size: int) -> str:
    """`size` random bytes into `path`; their SHA-256."""
    hasher = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(4 * MIB, left))
            hasher.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return hasher.hexdigest()


@contextlib.contextmanager
def work_dir(keep: bool, prefix: str) -> Iterator[Path]:
    """A fresh directory under bench/.work/, removed afterwards unless `keep`."""
    WORK_PARENT.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=WORK_PARENT))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}", flush=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- reporting


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def machine_info(servers: dict[str, str] | None = None) -> dict[str, str]:
    """CPU, memory, kernel, versions (`servers`: extra name -> version, after aiohttp)."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    wrk = subprocess.run([WRK, "-v"], capture_output=True, text=True, check=False)
    mem = "unknown"
    with contextlib.suppress(OSError, IndexError, ValueError):
        kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem = f"{kib / MIB:.1f} GiB"
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "gateway").splitlines()
    source = f"git {commit}" + (f" + uncommitted changes in {len(dirty)} gateway/ file(s)"
                                if dirty else " (gateway/ clean)")
    return {
        "CPUs (nproc)": str(len(os.sched_getaffinity(0))),
        "CPU model": model,
        "Memory": mem,
        "Kernel": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        **(servers or {}),
        "wrk": (wrk.stdout or wrk.stderr).strip().splitlines()[0].split(" Copyright")[0],
        "Gateway source": source,
    }


def summarize_log(lines: list[str]) -> list[str]:
    """Notes on what the gateway logged (it should log nothing at level warning)."""
    body = [ln for ln in lines if not ln.startswith("Gateway listening on")]
    if not body:
        return ["Gateway log: nothing but its start line (no access log at "
                "GATEWAY_LOG_LEVEL=warning, and no warnings or errors)."]
    records = Counter(m.group(1) for ln in body
                      if (m := re.match(r"\S+ \S+ ([A-Z]+) \d+ ", ln)))
    messages = Counter(m.group(1) for ln in body
                       if (m := re.match(r"\S+ \S+ [A-Z]+ \d+ (\S+: [^/]*)", ln)))
    exceptions = Counter(m.group(1) for ln in body
                         if (m := re.match(r"([A-Za-z_][\w.]*(?:Error|Exception)\b.*)", ln)))
    notes = [f"Gateway log: {len(body)} lines, records by level "
             + ", ".join(f"{lvl} {n}" for lvl, n in records.most_common()) + "."]
    notes += [f"Gateway log message x{n}: `{msg.strip()}`" for msg, n in messages.most_common(5)]
    notes += [f"Gateway log exception x{n}: `{exc[:200]}`"
              for exc, n in exceptions.most_common(5)]
    return notes


def verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**FAIL**"


def write_section(path: Path, name: str, markdown: str) -> None:
    """Put `markdown` between the `name` markers of `path`, leaving the rest alone.

    The file is created (title and intro) if missing; a section that is not there
    yet is appended. Broken markers (one without the other, twice, out of order)
    stop with BenchError rather than guess what to overwrite.
    """
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{markdown.strip()}\n{end}\n"
    text = path.read_text() if path.exists() else f"{DOC_TITLE}\n\n{DOC_INTRO}\n"
    begins = [m.start() for m in re.finditer(f"^{re.escape(begin)}$", text, re.MULTILINE)]
    ends = [m.end() for m in re.finditer(f"^{re.escape(end)}\\n?", text, re.MULTILINE)]
    if len(begins) == len(ends) == 1 and begins[0] < ends[0]:
        text = text[:begins[0]] + block + text[ends[0]:]
    elif not begins and not ends:
        text = text.rstrip("\n") + "\n\n" + block
    else:
        raise BenchError(f"{path}: the {begin} / {end} markers are broken "
                         "(each must appear once, begin first); fix them by hand")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
