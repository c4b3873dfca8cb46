"""The one place that runs a benchmark server and loads it (bench/README.md).

A `Server` is started pinned (`taskset`, the whole process) or free, its
`PORT n` line awaited, its CPU time read from /proc/PID/stat (utime+stime of
all its threads) and its peak RSS from /proc/PID/status (VmHWM). Loads are
h2load (closed loop, plaintext) or courier-load (bench/src/bin/courier-load.rs:
open loop, mutual TLS, server streaming, reconnect storms), which prints `GO`
when its measured window starts, so the server's CPU is read exactly over it.
Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

HZ = os.sysconf("SC_CLK_TCK")


def log(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads, live and exited), seconds."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / HZ
    except (OSError, IndexError, ValueError):
        return 0.0


def status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_busy() -> float:
    """Busy seconds of the whole machine (all CPUs) so far."""
    f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    v = [int(x) for x in f]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / HZ


@dataclass
class Server:
    """A benchmark server process. `cpus`: "0" pins it to core 0; None leaves it free."""

    name: str
    argv: List[str]
    log_path: Path
    cpus: Optional[str] = None
    env: Dict[str, str] = field(default_factory=dict)
    cwd: Optional[str] = None
    proc: Optional[subprocess.Popen] = None  # type: ignore[type-arg]
    port: int = 0

    def start(self, timeout: float = 60.0) -> "Server":
        argv = (["taskset", "-c", self.cpus] if self.cpus is not None else []) + self.argv
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "w")
        out.write("$ " + " ".join(argv) + "\n")
        out.flush()
        self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **self.env}, cwd=self.cwd, start_new_session=True)
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            m = re.search(r"^PORT (\d+)", self.log_path.read_text(), re.M)
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server {self.name} printed no PORT line:\n{self.log_path.read_text()[-2000:]}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def peak_rss_kib(self) -> int:
        return status_kib(self.pid, "VmHWM")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=5)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=5)

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pin(cpus: Optional[str]) -> List[str]:
    return ["taskset", "-c", cpus] if cpus is not None else []


@dataclass
class Window:
    """What the server did over a measured window."""

    secs: float
    server_cpu_s: float
    load_cpu_s: float
    machine_busy_s: float

    def other_pct(self, ncpu: int) -> float:
        """CPU used by anything but the server and the load generator, in % of the machine."""
        return max(0.0, 100 * (self.machine_busy_s - self.server_cpu_s - self.load_cpu_s) / (self.secs * ncpu))


def h2load(server: Server, path: str, req_file: Path, *, conns: int, streams: int, secs: float, warmup: float,
           cpus: Optional[str], out: Path, threads: int = 1, log_file: Optional[Path] = None) -> Dict[str, object]:
    """Closed-loop h2load; server CPU sampled inside the measured window (by time)."""
    argv = _pin(cpus) + ["h2load", f"http://127.0.0.1:{server.port}{path}", "-H", "content-type: application/grpc",
                         "-H", "te: trailers", "-d", str(req_file), "-c", str(conns), "-m", str(streams),
                         "-t", str(threads), "-D", f"{int(secs * 1000)}ms", "--warm-up-time", f"{int(warmup * 1000)}ms"]
    if log_file is not None:
        argv += ["--log-file", str(log_file)]
    with open(out, "w") as f:
        f.write("$ " + " ".join(argv) + "\n")
        f.flush()
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)
        # h2load connects, warms up, then measures `secs`: sample inside that window.
        time.sleep(warmup + 0.3)
        c0, l0, m0, t0 = server.cpu(), cpu_seconds(p.pid), machine_busy(), time.monotonic()
        time.sleep(max(0.2, secs - 0.6))
        c1, l1, m1, t1 = server.cpu(), cpu_seconds(p.pid), machine_busy(), time.monotonic()
        try:
            p.wait(timeout=secs + warmup + 60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    text = out.read_text()
    r = parse_h2load(text)
    w = Window(t1 - t0, c1 - c0, l1 - l0, m1 - m0)
    r.update(window(w, r.get("reqps", 0.0)))
    if log_file is not None and log_file.exists():
        r.update(h2load_percentiles(log_file))
        log_file.unlink()
    return r


def parse_h2load(text: str) -> Dict[str, object]:
    r: Dict[str, object] = {"ok": False}
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s, ([\d.]+)(\w+)/s", text)
    if m:
        r["reqps"] = float(m.group(1))
        unit = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}.get(m.group(3), 1)
        r["traffic_Bps"] = float(m.group(2)) * unit
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text)
    s = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m and s:
        tot, succ, failed, err, to = int(m.group(1)), int(m.group(4)), int(m.group(5)), int(m.group(6)), int(m.group(7))
        # Not "2xx == total": with --warm-up-time, h2load zeroes its counters while
        # calls are in flight, so status codes and completions can differ by up to
        # the calls in flight (seen with 128 x 1 MiB: 1286 2xx for 1290 done).
        r["ok"] = tot > 0 and succ == tot and failed == err == to == 0 and int(s.group(3)) == int(s.group(4)) == 0
        r["requests"] = tot
    return r


def h2load_percentiles(log_file: Path) -> Dict[str, float]:
    v = sorted(int(line.split("\t")[2]) for line in open(log_file) if line.strip() and line.split("\t")[1] == "200")
    if not v:
        return {}
    q = lambda p: float(v[min(len(v) - 1, int(p * len(v)))])  # noqa: E731
    return {"p50_us": q(0.5), "p99_us": q(0.99), "p999_us": q(0.999)}


def window(w: Window, rate: float) -> Dict[str, float]:
    calls = rate * w.secs
    return {
        "server_cpu_s": w.server_cpu_s,
        "window_s": w.secs,
        "cpu_us_per_call": (w.server_cpu_s * 1e6 / calls) if calls > 0 else 0.0,
        "server_busy_pct": 100 * w.server_cpu_s / w.secs if w.secs > 0 else 0.0,
        "load_busy_pct": 100 * w.load_cpu_s / w.secs if w.secs > 0 else 0.0,
        "other_pct": w.other_pct(os.cpu_count() or 1),
    }


def courier_load(bin_path: Path, server: Optional[Server], args: List[str], *, cpus: Optional[str], out: Path,
                 timeout: float = 120.0, netns: Optional[str] = None) -> Dict[str, object]:
    """Runs courier-load (or any client that prints GO, then a JSON line); the
    server's CPU is read at GO and at the result."""
    argv = (["ip", "netns", "exec", netns] if netns else []) + _pin(cpus) + [str(bin_path), *args]
    with open(out, "w") as f:
        f.write("$ " + " ".join(argv) + "\n")
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(out, "a"), text=True)
    assert p.stdout is not None
    deadline = time.monotonic() + timeout
    c0 = l0 = m0 = t0 = 0.0
    result: Dict[str, object] = {}
    for line in p.stdout:
        line = line.strip()
        if line == "GO":
            c0 = server.cpu() if server else 0.0
            l0, m0, t0 = cpu_seconds(p.pid), machine_busy(), time.monotonic()
        elif line.startswith("{"):
            c1 = server.cpu() if server else 0.0
            l1, m1, t1 = cpu_seconds(p.pid), machine_busy(), time.monotonic()
            result = json.loads(line)
            w = Window(t1 - t0, c1 - c0, l1 - l0, m1 - m0)
            result.update({"server_cpu_s": w.server_cpu_s, "window_s": w.secs,
                           "server_busy_pct": 100 * w.server_cpu_s / w.secs if w.secs else 0.0,
                           "load_busy_pct": 100 * w.load_cpu_s / w.secs if w.secs else 0.0,
                           "other_pct": w.other_pct(os.cpu_count() or 1)})
        if time.monotonic() > deadline:
            p.kill()
            break
    p.wait()
    with open(out, "a") as f:
        f.write(json.dumps(result) + "\n")
    if not result:
        raise RuntimeError(f"{argv[0]} gave no result (exit {p.returncode}):\n{out.read_text()[-2000:]}")
    return result


def run(argv: List[str], **kw: object) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw).stdout  # type: ignore[call-overload]


def first_line(argv: List[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return ((p.stdout or "") + (p.stderr or "")).strip().splitlines()[0].strip()
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"
