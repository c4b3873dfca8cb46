"""`make demo` stays true: tests/demo.py run the way the Makefile's demo target
runs it (the Rust test client built by cargo, the Go demo client built with
`go generate` + `go build`, the Python server and clients from this venv), and
every client's transcript line checked: Python, Rust, Go and stock grpcio over
mutual TLS, and the four client identities the server verified.

Needs cargo and go (as `make test-py` does for the Go peer); a missing tool
fails the test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Each pattern must match a whole line of the demo's output, in this order.
EXPECTED = [
    r"== Courier server, Python handlers \(courier\.Server\), on 127\.0\.0\.1:\d+",
    r"   mutual TLS as spiffe://demo\.example/demo-server; dev CA for spiffe://demo\.example in a temp dir",
    r"== Courier client \(Python\)",
    r"  UnaryUnary    s='hello' -> s='hello'; the server saw (4\d\d\d|5000) ms of a 5 s deadline, request id [0-9a-f]{32}",
    r"  UnaryStream   count=3 -> indexes \[0, 1, 2\]",
    r"  StreamUnary   'a','b','c' -> 'abc'",
    r"  StreamStream  'x','y','z' -> \['x', 'y', 'z'\]",
    r"  deadline      200 ms vs a 5 s handler -> DEADLINE_EXCEEDED after \d+ ms",
    r"  app error     -> FAILED_PRECONDITION, courier\.test\.TestError value 2",
    r"== Courier client \(Rust\): courier-test-client --case demo",
    r"Courier client -> 127\.0\.0\.1:\d+",
    r'  UnaryUnary   s="hello from Courier"  ->  s="hello from Courier" request_id=[0-9a-f]{32} \(.* ms\)',
    r"  UnaryStream  count=3  ->  indexes \[0, 1, 2\]",
    r'  StreamUnary  "Cou" "ri" "er"  ->  s="Courier"',
    r"  UnaryUnary   deadline 3 s  ->  server saw (2\d\d\d|3000) ms left",
    r'  UnaryUnary   fail_code=NOT_FOUND  ->  NOT_FOUND "no such thing: 100% naïve"',
    r"  UnaryUnary   app_error=GONE  ->  FAILED_PRECONDITION app error courier\.test\.TestError:2",
    r"  UnaryUnary   sleep 2000 ms, deadline 100 ms  ->  DEADLINE_EXCEEDED after \d+ ms",
    r"ok   demo \(.* ms\)",
    r"== Courier client \(Go\): go-cgo/examples/democlient",
    r'  UnaryUnary    s="hello from Go" -> s="hello from Go"; the server saw (4\d\d\d|5000) ms of a 5 s deadline, request id [0-9a-f]{32}',
    r"  UnaryStream   count=3 -> indexes \[0 1 2\]",
    r"  StreamUnary   'a','b','c' -> \"abc\"",
    r"  StreamStream  'x','y','z' -> x,y,z",
    r"  deadline      200 ms vs a 5 s handler -> DEADLINE_EXCEEDED after \d+ ms",
    r"  app error     -> FAILED_PRECONDITION, TEST_ERROR_GONE",
    r'  metadata      x-demo=from-go -> metadata_value="from-go", x-echo-header=\[from-go\]',
    r"== stock grpcio client \(Python\)",
    r"  UnaryUnary    s='hello from grpcio' -> s='hello from grpcio', deadline seen (1\d\d\d|2000) ms, x-echo-header='demo-metadata'",
    r"== client identities the server verified \(TLS handshakes\)",
    r"  spiffe://demo\.example/go-client: 1 full, 0 resumed",
    r"  spiffe://demo\.example/grpcio-client: 1 full, 0 resumed",
    r"  spiffe://demo\.example/python-client: 1 full, 0 resumed",
    r"  spiffe://demo\.example/rust-client: 1 full, 0 resumed",
    r"== server stopped gracefully in \d+ ms",
]


def build(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}"


def test_make_demo(tmp_path: Path) -> None:
    env = dict(os.environ)
    cache = Path(env.get("CACHE") or Path.home() / ".cache" / "courier")
    env.setdefault("CARGO_TARGET_DIR", str(cache / "target"))
    env.setdefault("GOMODCACHE", str(cache / "go" / "mod"))
    env.setdefault("GOCACHE", str(cache / "go" / "build"))
    env["COURIER_FFI_PROFILE"] = "debug"
    # The Makefile's demo target: the Rust client, then the Go client.
    build(["cargo", "build", "-q", "-p", "courier-testpeer"], REPO, env)
    build(["go", "generate", "."], REPO / "go-cgo", env)
    go_client = tmp_path / "courier-go-democlient"
    build(["go", "build", "-o", str(go_client), "./examples/democlient"], REPO / "go-cgo", env)
    env["COURIER_GO_DEMO"] = str(go_client)

    r = subprocess.run([sys.executable, str(REPO / "tests" / "demo.py")], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    out = r.stdout
    assert r.returncode == 0, f"demo.py exited {r.returncode}:\n{out}\n{r.stderr}"
    lines = [line for line in out.splitlines() if line.strip()]
    i = 0
    for pattern in EXPECTED:
        while i < len(lines) and not re.fullmatch(pattern, lines[i]):
            i += 1
        assert i < len(lines), f"no line matching {pattern!r} (in order) in the demo's output:\n{out}"
        i += 1
