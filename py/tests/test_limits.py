"""Limits from Python: a limits file on courier.Server, hot reload, refusal."""

from __future__ import annotations

import pathlib
import time
from typing import Any

import pytest

import courier
from courier import StatusCode
from testservice import handlers, make_service, SyncTest

DENY = "limits:\n  courier.test.Test:\n    default:\n      rate_acls:\n        unauthenticated: 0\n"
ALLOW = "limits:\n  courier.test.Test:\n    default:\n      rate_acls:\n        unauthenticated: -1\n"


def serve(pb: Any, limits: pathlib.Path) -> tuple[courier.Server, courier.Channel]:
    server = courier.Server(workers=1, max_concurrency=2, limits=limits)
    server.add_handlers(make_service(pb), handlers(SyncTest(pb)))
    port = server.listen("127.0.0.1:0")
    server.start()
    return server, courier.Channel(f"127.0.0.1:{port}")


def wait_for_reload(server: courier.Server, count: int) -> dict[str, Any]:
    for _ in range(300):
        st = server.limits_status()
        assert st is not None
        if st["reloads"]["ok"] + st["reloads"]["failed"] >= count:
            return st
        time.sleep(0.01)
    raise AssertionError("no reload within 3 s")


def test_acl_and_hot_reload(pb: Any, tmp_path: pathlib.Path) -> None:
    f = tmp_path / "limits.yaml"
    f.write_text(DENY)
    server, ch = serve(pb, f)
    try:
        m = make_service(pb).method("UnaryUnary")
        ctx = courier.Context.background()
        with pytest.raises(courier.RpcError) as e:
            ch.unary(ctx, m, pb.TestRequest(s="x"))
        assert e.value.code == StatusCode.UNAUTHENTICATED
        f.write_text(ALLOW)
        st = wait_for_reload(server, 1)
        assert st["last_reload"]["ok"] and st["limits"]["courier.test.Test"]["default"]["rate_acls"]["unauthenticated"] == -1
        assert ch.unary(ctx, m, pb.TestRequest(s="x")).s == "x"
        # A broken file is refused with its line; the old limits stay.
        f.write_text("limits:\n  courier.test.Test:\n    default:\n      queue: sideways\n")
        st = wait_for_reload(server, 2)
        assert not st["last_reload"]["ok"]
        assert "limits.yaml:4: " in st["last_reload"]["error"] and "sideways" in st["last_reload"]["error"]
        assert ch.unary(ctx, m, pb.TestRequest(s="still")).s == "still"
    finally:
        server.stop(1.0)


def test_invalid_file_at_start_names_the_line(pb: Any, tmp_path: pathlib.Path) -> None:
    f = tmp_path / "limits.yaml"
    f.write_text("limits:\n  courier.test.Test:\n    default:\n      max_concurrency: -3\n")
    server = courier.Server(workers=1, limits=f)
    server.add_handlers(make_service(pb), handlers(SyncTest(pb)))
    server.listen("127.0.0.1:0")
    with pytest.raises(ValueError, match=r"limits.yaml:4: .*max_concurrency"):
        server.start()


def test_queue_sheds_overload_before_python_sees_the_call(pb: Any, tmp_path: pathlib.Path) -> None:
    f = tmp_path / "limits.yaml"
    f.write_text("limits:\n  courier.test.Test:\n    UnaryUnary:\n      max_concurrency: 1\n      queue_size: 1\n      queue_timeout_ms: 100\n")
    impl = SyncTest(pb)
    server = courier.Server(workers=1, max_concurrency=4, limits=f)
    server.add_handlers(make_service(pb), handlers(impl))
    port = server.listen("127.0.0.1:0")
    server.start()
    try:
        from concurrent.futures import ThreadPoolExecutor

        ch = courier.Channel(f"127.0.0.1:{port}")
        m = make_service(pb).method("UnaryUnary")
        with ThreadPoolExecutor(4) as pool:
            busy = pool.submit(ch.unary, courier.Context.background(), m, pb.TestRequest(s="busy", sleep_ms=400))
            time.sleep(0.1)
            queued = pool.submit(ch.unary, courier.Context.background(), m, pb.TestRequest(s="queued"))
            time.sleep(0.03)
            with pytest.raises(courier.RpcError) as full:
                ch.unary(courier.Context.background(), m, pb.TestRequest(s="full"))
            assert full.value.code == StatusCode.UNAVAILABLE and "full" in full.value.details
            with pytest.raises(courier.RpcError) as timed_out:
                queued.result()
            assert timed_out.value.code == StatusCode.UNAVAILABLE and "timed out" in timed_out.value.details
            assert busy.result().s == "busy"
        assert impl.started == 1, "rejected calls never reached Python"
    finally:
        server.stop(1.0)
