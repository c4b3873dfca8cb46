"""`courier deps URL...`: merges the `/deps` of several services' debug
servers into one dependency graph (JSON, Graphviz DOT, or SVG through
Graphviz's `dot`).

Each server knows its callers by identity (caller → service/method, calls,
errors) and what it calls itself through its channels; merged, the graph
answers "who calls whom, how much, and what fails" across the fleet.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import socket
import subprocess
import sys
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

__all__ = ["fetch_deps", "merge", "to_dot", "main"]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("debug", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


def fetch_deps(url: str, timeout: float = 10.0) -> Dict[str, Any]:
    """`/deps` of one debug server: `http://127.0.0.1:PORT`, `127.0.0.1:PORT` or `unix:/path`."""
    conn: http.client.HTTPConnection
    if url.startswith("unix:"):
        conn = _UnixConnection(url[len("unix:") :], timeout)
    else:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{url}: expected http://HOST:PORT or unix:/path")
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", "/deps")
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise ValueError(f"{url}/deps answered {r.status}: {body[:200]!r}")
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError(f"{url}/deps is not a JSON object")
        return data
    finally:
        conn.close()


def _process_name(p: Dict[str, Any]) -> str:
    services = p.get("services") or []
    return ", ".join(services) if services else f"pid {p.get('pid')}"


def merge(graphs: List[Tuple[str, Dict[str, Any]]]) -> Dict[str, Any]:
    """One graph from several `/deps`: processes, and edges of two kinds:
    `caller` (identity → service/method, seen by the server) and `calls`
    (process → service/method, seen by the caller's channels)."""
    processes: List[Dict[str, Any]] = []
    edges: Dict[Tuple[str, str, str], Dict[str, Any]] = {}

    def add(kind: str, src: str, dst: str, calls: int, errors: int, via: Optional[str] = None) -> None:
        e = edges.setdefault((kind, src, dst), {"kind": kind, "from": src, "to": dst, "calls": 0, "errors": 0})
        e["calls"] += calls
        e["errors"] += errors
        if via:
            e.setdefault("targets", [])
            if via not in e["targets"]:
                e["targets"].append(via)

    for url, g in graphs:
        proc = g.get("process") or {}
        name = _process_name(proc)
        processes.append({"url": url, "pid": proc.get("pid"), "services": proc.get("services") or [], "name": name})
        for c in g.get("callers") or []:
            add("caller", str(c["caller"]), f"{c['service']}/{c['method']}", int(c["calls"]), int(c["errors"]))
        for c in g.get("callees") or []:
            add("calls", name, f"{c['service']}/{c['method']}", int(c["calls"]), int(c["errors"]), str(c.get("target", "")))
    return {"processes": processes, "edges": sorted(edges.values(), key=lambda e: (e["kind"], e["from"], e["to"]))}


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph: Dict[str, Any]) -> str:
    """Graphviz DOT: methods clustered by service; identities as ellipses;
    processes as 3-D boxes; red edges carry errors."""
    lines = ["digraph courier_deps {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];', '  edge [fontname="Helvetica", fontsize=9];']
    methods: Dict[str, List[str]] = {}
    for e in graph["edges"]:
        svc, _, m = e["to"].partition("/")
        if m not in methods.setdefault(svc, []):
            methods[svc].append(m)
    for i, (svc, ms) in enumerate(sorted(methods.items())):
        owners = [p["name"] for p in graph["processes"] if svc in p["services"]]
        label = svc + (f"\\n(served by pid {', '.join(str(p['pid']) for p in graph['processes'] if svc in p['services'])})" if owners else "")
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f"    label={_q(label)}; style=rounded; color=\"#9aa5b1\";")
        for m in ms:
            lines.append(f"    {_q(svc + '/' + m)} [label={_q(m)}, shape=box];")
        lines.append("  }")
    nodes_done = set()
    for e in graph["edges"]:
        src = e["from"]
        if (e["kind"], src) not in nodes_done:
            nodes_done.add((e["kind"], src))
            shape = "ellipse" if e["kind"] == "caller" else "box3d"
            lines.append(f"  {_q(e['kind'] + ':' + src)} [label={_q(src)}, shape={shape}];")
        color = "red" if e["errors"] else ("#2e86de" if e["kind"] == "calls" else "#555555")
        style = ", style=dashed" if e["kind"] == "calls" else ""
        label = f"{e['calls']} calls, {e['errors']} errors"
        lines.append(f"  {_q(e['kind'] + ':' + src)} -> {_q(e['to'])} [label={_q(label)}, color={_q(color)}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="courier deps", description="Merge the dependency graphs of several Courier debug servers.")
    ap.add_argument("urls", nargs="+", metavar="URL", help="debug server: http://127.0.0.1:PORT, 127.0.0.1:PORT or unix:/path")
    ap.add_argument("--format", choices=["json", "dot", "svg"], help="output format (default: from -o's extension, else svg)")
    ap.add_argument("-o", "--output", help="write here instead of standard output")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    args = ap.parse_args(argv)
    fmt = args.format or (args.output.rsplit(".", 1)[-1] if args.output and args.output.rsplit(".", 1)[-1] in ("json", "dot", "svg") else "svg")
    graphs = []
    for url in args.urls:
        try:
            graphs.append((url, fetch_deps(url, args.timeout)))
        except (OSError, ValueError) as e:
            print(f"courier deps: cannot read {url}: {e}", file=sys.stderr)
            return 2
    graph = merge(graphs)
    out: bytes
    if fmt == "json":
        out = (json.dumps(graph, indent=2) + "\n").encode()
    elif fmt == "dot":
        out = to_dot(graph).encode()
    else:
        dot = shutil.which("dot")
        if dot is None:
            print("courier deps: SVG needs Graphviz's `dot` (Debian: apt-get install graphviz); use --format dot", file=sys.stderr)
            return 2
        r = subprocess.run([dot, "-Tsvg"], input=to_dot(graph).encode(), capture_output=True, timeout=60)
        if r.returncode != 0:
            print(f"courier deps: dot failed: {r.stderr.decode(errors='replace')}", file=sys.stderr)
            return 2
        out = r.stdout
    if args.output:
        with open(args.output, "wb") as f:
            f.write(out)
    else:
        sys.stdout.buffer.write(out)
    return 0
