"""courier-stubgen: its output against protoc's (grpcio-tools) and
mypy-protobuf's, mypy --strict on the generated code and on code using it, a
file of deliberate mistakes, and bad input. End to end: test_stubgen_e2e.py."""

from __future__ import annotations

import ast
import os
import pathlib
import re
import shutil
import subprocess
import sys
from typing import Any, Dict, List, Set

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTOS = ROOT / "tests" / "protos" / "stubgen"
CORPUS = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "corpus").rglob("*.proto"))
OPTIONS_FILE = PROTOS / "corpus" / "realworld" / "realworld.courier-options"
BIN = pathlib.Path(sys.executable).parent
VERSION_LINE = re.compile(r"^(# Protobuf Python Version: .*|    \d+,)$", re.M)


def stubgen(*args: str, cwd: pathlib.Path = PROTOS) -> subprocess.CompletedProcess[str]:
    """`python -m courier.stubgen ARGS` (the wheel's entry point)."""
    return subprocess.run([sys.executable, "-m", "courier.stubgen", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("courier-stubgen")
    r = stubgen("-I", ".", f"--python_out={out}", f"--courier_options={OPTIONS_FILE}", *CORPUS)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """protoc (grpcio-tools) + mypy-protobuf over the same corpus."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("protoc")
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{ROOT / 'proto'}",
        f"-I{pathlib.Path(protoc.__file__).parent / '_proto'}",
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--python_out={out}",
        f"--mypy_out=quiet:{out}",
        *(str(PROTOS / p) for p in CORPUS),
    ]
    assert protoc.main(args) == 0
    return out


def serialized(path: pathlib.Path) -> bytes:
    m = re.search(r"AddSerializedFile\((b'.*')\)", path.read_text())
    assert m, path
    data = ast.literal_eval(m.group(1))
    assert isinstance(data, bytes)
    return data


@pytest.mark.parametrize("proto", CORPUS)
def test_pb2_is_protocs(ours: pathlib.Path, reference: pathlib.Path, proto: str) -> None:
    name = proto[: -len(".proto")] + "_pb2.py"
    mine, theirs = ours / name, reference / name
    assert serialized(mine) == serialized(theirs), "the embedded FileDescriptorProto differs"
    # The whole module too, but for the runtime version it declares.
    assert VERSION_LINE.sub("", mine.read_text()) == VERSION_LINE.sub("", theirs.read_text())


def test_pb2_descriptors_load_identically(ours: pathlib.Path, reference: pathlib.Path) -> None:
    """Both sets of modules loaded by the protobuf runtime (upb, and the pure
    Python one, which reads the offsets and options fix-ups) give the same
    FileDescriptorProtos, custom options included."""
    script = (
        "import sys, importlib\n"
        "from google.protobuf import descriptor_pb2\n"
        "out = []\n"
        "for m in sys.argv[1:]:\n"
        "    mod = importlib.import_module(m)\n"
        "    p = descriptor_pb2.FileDescriptorProto(); mod.DESCRIPTOR.CopyToProto(p)\n"
        "    out.append(p.SerializeToString(deterministic=True).hex())\n"
        "    for name, msg in mod.DESCRIPTOR.message_types_by_name.items():\n"
        "        out.append(name + ':' + ','.join(f.name for f in msg.fields))\n"
        "print('\\n'.join(out))\n"
    )
    modules = [p[: -len(".proto")].replace("/", ".") + "_pb2" for p in CORPUS]
    results = []
    for impl in ("upb", "python"):
        for d in (ours, reference):
            env = dict(os.environ, PYTHONPATH=str(d), PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=impl)
            r = subprocess.run([sys.executable, "-c", script, *modules], env=env, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            results.append(r.stdout)
    assert results[0] == results[1] and results[2] == results[3]


def shape(tree: ast.AST) -> List[str]:
    """Classes, fields and signatures of a stub, without docstrings."""
    out: List[str] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for n in ast.iter_child_nodes(node):
            if isinstance(n, ast.ClassDef):
                bases = ", ".join(ast.unparse(b) for b in n.bases + [k.value for k in n.keywords])
                out.append(f"class {prefix}{n.name}({bases})")
                walk(n, f"{prefix}{n.name}.")
            elif isinstance(n, ast.FunctionDef):
                deco = ",".join(ast.unparse(d) for d in n.decorator_list)
                out.append(f"def {prefix}{n.name}({ast.unparse(n.args)}) -> {ast.unparse(n.returns) if n.returns else ''} @{deco}")
            elif isinstance(n, ast.AnnAssign):
                out.append(f"{prefix}{ast.unparse(n.target)}: {ast.unparse(n.annotation)}")
            elif isinstance(n, (ast.Import, ast.ImportFrom, ast.Assign)):
                out.append(prefix + ast.unparse(n))

    walk(tree, "")
    return out


@pytest.mark.parametrize("proto", CORPUS)
def test_pyi_agrees_with_mypy_protobuf(ours: pathlib.Path, reference: pathlib.Path, proto: str) -> None:
    name = proto[: -len(".proto")] + "_pb2.pyi"
    mine, theirs = (ours / name).read_text(), (reference / name).read_text()
    assert shape(ast.parse(mine)) == shape(ast.parse(theirs))
    assert mine == theirs


def test_generated_files(ours: pathlib.Path) -> None:
    made = sorted(str(p.relative_to(ours)) for p in ours.rglob("*.py*"))
    courier_modules = [m for m in made if m.endswith("_courier.py")]
    assert courier_modules == [
        "corpus/realworld/test_courier.py",
        "corpus/svc/echo_courier.py",
        "corpus/svc/errors_courier.py",  # app errors only
        "corpus/svc/quota_courier.py",
        "corpus/test/test_courier.py",
    ]
    quota = (ours / "corpus/svc/quota_courier.py").read_text()
    assert "from corpus.svc import errors_courier as corpus_dot_svc_dot_errors__courier" in quota
    assert "corpus_dot_svc_dot_errors__courier.SHARED_ERROR," in quota
    assert len(made) == 2 * len(CORPUS) + len(courier_modules)


def mypy(paths: List[str], cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mypy"), "--strict", "--python-version", "3.10", "--explicit-package-bases", "--no-incremental", *paths],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def typed_tree(ours: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    d = tmp_path_factory.mktemp("typed")
    shutil.copytree(ours, d, dirs_exist_ok=True)
    for f in ("examples.py", "mistakes.py"):
        shutil.copy(PROTOS / "py" / f, d / f)
    return d


def test_mypy_strict_on_generated_code_and_users(typed_tree: pathlib.Path) -> None:
    r = mypy([".", "--exclude", "mistakes.py"], typed_tree)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success" in r.stdout


def test_mistakes_fail_mypy_at_exactly_those_lines(typed_tree: pathlib.Path) -> None:
    text = (typed_tree / "mistakes.py").read_text().splitlines()
    expected = {i + 1 for i, line in enumerate(text) if "  # error:" in line}
    assert len(expected) >= 10
    r = mypy(["mistakes.py"], typed_tree)
    got: Set[int] = {int(m.group(1)) for m in re.finditer(r"^mistakes\.py:(\d+): error:", r.stdout, re.M)}
    assert got == expected, r.stdout


def test_console_script_and_module_agree(tmp_path: pathlib.Path) -> None:
    script = BIN / "courier-stubgen"
    assert script.exists(), "pyproject.toml [project.scripts] courier-stubgen is not installed"
    a, b = tmp_path / "a", tmp_path / "b"
    r1 = subprocess.run([str(script), "-I", ".", f"--python_out={a}", "corpus/test/test.proto"], cwd=PROTOS, capture_output=True, text=True)
    r2 = stubgen("-I", ".", f"--python_out={b}", "corpus/test/test.proto")
    assert r1.returncode == r2.returncode == 0, r1.stderr + r2.stderr
    for f in a.rglob("*.py*"):
        assert f.read_bytes() == (b / f.relative_to(a)).read_bytes()
    h = stubgen("--help")
    assert h.returncode == 0 and "--python_out" in h.stdout and "--deadline" in h.stdout


def test_shipped_options_module_is_current(tmp_path: pathlib.Path) -> None:
    r = stubgen("-I", str(ROOT / "proto"), f"--python_out={tmp_path}", str(ROOT / "proto/courier/options.proto"))
    assert r.returncode == 0, r.stderr
    pkg = ROOT / "py/python/courier"
    for f in ("options_pb2.py", "options_pb2.pyi"):
        assert (tmp_path / "courier" / f).read_text() == (pkg / f).read_text(), f"regenerate py/python/courier/{f}"
    from courier import options_pb2

    assert options_pb2.service_default_deadline_ms.number == 50301


def test_descriptor_set_out_keeps_courier_options(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "set.pb"
    r = stubgen("-I", ".", f"--descriptor_set_out={out}", "corpus/svc/echo.proto")
    assert r.returncode == 0, r.stderr
    from google.protobuf import descriptor_pb2

    from courier import options_pb2

    s = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    echo = next(f for f in s.file if f.name == "corpus/svc/echo.proto")
    assert [f.name for f in s.file][-1] == "corpus/svc/echo.proto"
    quick = echo.service[0].method[1]
    assert quick.options.Extensions[options_pb2.method_default_deadline_ms] == 150
    assert echo.service[0].options.Extensions[options_pb2.service_default_deadline_ms] == 2000


BAD = PROTOS / "bad"


def bad(*files: str, extra: List[str] = []) -> str:
    r = stubgen("-I", str(BAD), "-I", ".", "--python_out=/nonexistent/never-written", *extra, *(str(BAD / f) for f in files))
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "panicked" not in r.stderr and "internal error" not in r.stderr
    return r.stderr


CASES: Dict[str, Any] = {
    "syntax.proto": [r"syntax\.proto:7:\d+: error: .*expected"],
    "missing_import.proto": [r"missing_import\.proto:5:\d+: error: import 'nowhere/gone\.proto' not found"],
    "cycle_a.proto": [r"cycle_b\.proto:5:1: error: import cycle detected: cycle_a\.proto -> cycle_b\.proto -> cycle_a\.proto"],
    "unknown_option.proto": [r"unknown_option\.proto:9:\d+: error: .*courier\.deadline_ms"],
    "unknown_code.proto": [r'unknown_code\.proto:10:\d+: error: unknown gRPC code "NOT_FUND" in \(courier\.grpc_code\) of bad\.code\.Oops\.OOPS_GONE', "help: use one of CANCELLED"],
    "no_deadline.proto": [
        r"no_deadline\.proto:13:3: error: method bad\.deadline\.Legacy\.Get has no deadline",
        r"no_deadline\.proto:14:3: error: method bad\.deadline\.Legacy\.Put has no deadline",
        r"--deadline=bad\.deadline\.Legacy=5s",
        r"--courier_options=FILE",
    ],
    "keyword.proto": [r"keyword\.proto:11:3: error: method name bad\.keyword\.Imports\.import is a Python keyword"],
    "app_errors.proto": [
        r"app_errors\.proto:27:3: error: method bad\.apperr\.Both\.Get could use any of the rpc_error enums bad\.apperr\.AError, bad\.apperr\.BError",
        r"app_errors\.proto:28:3: error: unknown app-error enum \"Nope\"",
        r"app_errors\.proto:31:3: error: app-error enum \"Plain\" of bad\.apperr\.Both\.Plainly is not marked",
        r"app_errors\.proto:12:\d+: error: \(courier\.grpc_code\) on P_ONE but enum bad\.apperr\.Plain is not marked",
        r"app_errors\.proto:34:3: error: method bad\.apperr\.Both\.Twice sets both",
    ],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_names_file_and_line(case: str) -> None:
    err = bad(case)
    for pattern in CASES[case]:
        assert re.search(pattern, err), f"{pattern!r} not in:\n{err}"


def test_out_of_file_deadlines() -> None:
    # The refusal says how; following it works: on the command line...
    ok = stubgen("-I", str(BAD), "--python_out=/tmp/courier-stubgen-ok", "--deadline=bad.deadline.Legacy=5s", "--deadline=bad.deadline.Legacy/Put=none", str(BAD / "no_deadline.proto"))
    assert ok.returncode == 0, ok.stderr
    text = pathlib.Path("/tmp/courier-stubgen-ok/no_deadline_courier.py").read_text()
    assert "    5.0,\n" in text and "courier.NO_DEADLINE" in text
    # ... and a bad options file names its line.
    err = bad("no_deadline.proto", extra=[f"--courier_options={BAD / 'bad.courier-options'}"])
    assert re.search(r"bad\.courier-options:3:1: error: bad deadline \"soon\"", err), err
    err = bad("no_deadline.proto", extra=["--deadline=bad.deadline.Nope=1s", "--deadline=bad.deadline.Legacy=1s"])
    assert 'deadline for "bad.deadline.Nope"' in err and "matches no service or method" in err


def test_usage_errors() -> None:
    r = stubgen("--python_out=x")
    assert r.returncode == 1 and "no input files" in r.stderr
    r = stubgen("--bogus", "a.proto")
    assert r.returncode == 2 and "unknown option" in r.stderr
    r = stubgen("--deadline=x=soon", "a.proto")
    assert r.returncode == 2 and "bad deadline" in r.stderr
    r = stubgen("-I", ".", "--python_out=/tmp/x", "nope.proto")
    assert r.returncode == 1 and "nope.proto" in r.stderr
