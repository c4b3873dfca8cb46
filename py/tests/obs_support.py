"""Helpers of the observability tests: HTTP to the debug server (TCP or unix
socket), free ports, waiting, external tools (installed by .ci/run)."""

from __future__ import annotations

import http.client
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple, TypeVar

# The debug server's unix-socket transport, as `courier deps` uses it.
from courier._deps import _UnixConnection

ROOT = pathlib.Path(__file__).resolve().parents[2]
CACHE = pathlib.Path(os.environ.get("CACHE", str(pathlib.Path.home() / ".cache" / "courier")))
T = TypeVar("T")


def http_request(addr: str, path: str, method: str = "GET", body: bytes = b"", timeout: float = 30.0) -> Tuple[int, bytes, str]:
    """(status, body, content type) of one request to `127.0.0.1:PORT` or `unix:/path`."""
    conn: http.client.HTTPConnection
    if addr.startswith("unix:"):
        conn = _UnixConnection(addr[len("unix:") :], timeout)
    else:
        host, port = addr.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body or None)
        r = conn.getresponse()
        return r.status, r.read(), r.getheader("content-type") or ""
    finally:
        conn.close()


def get_text(addr: str, path: str) -> str:
    status, body, _ = http_request(addr, path)
    assert status == 200, (path, status, body[:500])
    return body.decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(fn: Callable[[], Optional[T]], timeout: float, what: str, every: float = 0.1) -> T:
    """Calls `fn` until it returns something other than None (or timeout)."""
    end = time.monotonic() + timeout
    last_err: Optional[BaseException] = None
    while time.monotonic() < end:
        try:
            v = fn()
            if v is not None:
                return v
        except (OSError, AssertionError, ValueError, KeyError) as e:
            last_err = e
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last_err!r})")


def tool(name: str, cached: Optional[pathlib.Path] = None) -> str:
    """Path of an external tool; fails with how to get it (CI installs them all)."""
    if cached is not None and cached.exists():
        return str(cached)
    p = shutil.which(name)
    if p is None:
        raise AssertionError(f"{name} is not installed: run .ci/run (or `make obs-tools`), which installs what the tests need")
    return p


def jaeger_binary() -> str:
    return tool("jaeger", CACHE / "bin" / "jaeger")


def python_subprocess(code: str, *args: str, env: Optional[dict[str, str]] = None, stdin: bool = False) -> "subprocess.Popen[str]":
    """A Python child that runs `code` with py/tests on its path; text pipes
    (stdin too when `stdin`)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT / "py" / "tests"), e.get("PYTHONPATH", "")])
    e["PYTHONUNBUFFERED"] = "1"
    e.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        text=True,
        env=e,
    )


def read_line(p: "subprocess.Popen[str]", prefix: str, timeout: float = 30.0) -> str:
    """The first stdout line of `p` starting with `prefix` (without it)."""
    assert p.stdout is not None
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = p.stdout.readline()
        if not line:
            err = p.stderr.read() if p.stderr else ""
            raise AssertionError(f"child exited before printing {prefix!r}: {err}")
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise AssertionError(f"no {prefix!r} line in {timeout} s")


def metric_samples(text: str, name: str, **labels: str) -> List[Tuple[Dict[str, str], float]]:
    """The samples (labels, value) of metric `name` in the Prometheus text `text`
    whose labels include `labels`."""
    out = []
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        m = re.match(r"^([a-z_]+)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            out.append((got, float(m.group(4))))
    return out
