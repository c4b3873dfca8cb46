package io.courier.testpeer;

import com.google.protobuf.ByteString;
import courier.test.TestOuterClass.TestRequest;
import courier.test.TestOuterClass.TestResponse;
import io.grpc.CallOptions;
import io.grpc.ClientCall;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * `client --target HOST:PORT [--case NAME|all] [--list]`: the interop matrix's
 * cases with a stock grpc-java client against any server of courier.test.Test.
 * One JSON line per case: {"case": NAME, "ok": true|false, "error": "...", "ms": N};
 * exits 0 when every case passed, 1 otherwise, 2 on bad usage. A stock client has
 * no notion of Courier app errors: its app_error case checks the
 * `courier-app-error` trailer instead.
 */
final class Cases {
    private Cases() {}

    static final int LARGE = 3 * 1024 * 1024;
    /** grpc-core clients round grpc-timeout up to 10 ms; allow the same slack everywhere. */
    static final long ROUNDING_MS = 10;

    /** A case failed: the message says what was expected and what came. */
    static final class Failure extends Exception {
        Failure(String msg) {
            super(msg);
        }
    }

    interface Case {
        void run(ManagedChannel ch) throws Exception;
    }

    static final Map<String, Case> CASES = new LinkedHashMap<>();

    static {
        CASES.put("unary", Cases::unary);
        CASES.put("server_streaming", Cases::serverStreaming);
        CASES.put("client_streaming", Cases::clientStreaming);
        CASES.put("bidi_streaming", Cases::bidiStreaming);
        CASES.put("deadline_exceeded", Cases::deadlineExceeded);
        CASES.put("deadline_propagated", Cases::deadlinePropagated);
        CASES.put("status_codes", Cases::statusCodes);
        CASES.put("app_error", Cases::appError);
        CASES.put("metadata", Cases::metadata);
        CASES.put("large_message", Cases::largeMessage);
    }

    static int run(String[] args) throws InterruptedException {
        String target = null;
        String only = "all";
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--target" -> target = i + 1 < args.length ? args[++i] : null;
                case "--case" -> only = i + 1 < args.length ? args[++i] : "";
                case "--list" -> {
                    CASES.keySet().forEach(System.out::println);
                    return 0;
                }
                default -> {
                    System.err.println("courier-grpc-java-peer client: unknown argument " + args[i]);
                    return 2;
                }
            }
        }
        if (target == null || !(only.equals("all") || CASES.containsKey(only))) {
            System.err.println("usage: courier-grpc-java-peer client --target HOST:PORT [--case NAME|all] [--list]; cases: "
                    + String.join(", ", CASES.keySet()));
            return 2;
        }
        ManagedChannel ch = ManagedChannelBuilder.forTarget(target).usePlaintext().maxInboundMessageSize(8 << 20).build();
        int failed = 0;
        try {
            for (Map.Entry<String, Case> c : CASES.entrySet()) {
                if (!only.equals("all") && !only.equals(c.getKey())) {
                    continue;
                }
                long t0 = System.nanoTime();
                String error = null;
                try {
                    c.getValue().run(ch);
                } catch (Failure f) {
                    error = f.getMessage();
                } catch (Exception e) {
                    error = "unexpected " + e;
                }
                long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0);
                failed += error == null ? 0 : 1;
                System.out.println("{\"case\": " + json(c.getKey()) + ", \"ok\": " + (error == null)
                        + (error == null ? "" : ", \"error\": " + json(error)) + ", \"ms\": " + ms + "}");
                System.out.flush();
            }
        } finally {
            ch.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
        }
        return failed == 0 ? 0 : 1;
    }

    // ---------------------------------------------------------------- calls

    /** What one call gave: its messages, final status, reply headers and trailers. */
    record Result(List<TestResponse> messages, Status status, Metadata headers, Metadata trailers) {
        TestResponse only(String what) throws Failure {
            if (!status.isOk()) {
                throw new Failure(what + ": expected success, got status " + status.getCode() + " " + q(status.getDescription()));
            }
            if (messages.size() != 1) {
                throw new Failure(what + ": expected one response, got " + messages.size());
            }
            return messages.get(0);
        }

        Status failed(String what, Status.Code code) throws Failure {
            if (status.getCode() != code) {
                throw new Failure(what + ": expected status " + code + ", got " + status.getCode() + " " + q(status.getDescription()));
            }
            return status;
        }
    }

    /** Sends `reqs`, half-closes, and collects everything until the call closes. */
    static Result call(ManagedChannel ch, MethodDescriptor<TestRequest, TestResponse> m, Metadata md, long timeoutMs,
                       List<TestRequest> reqs) throws Exception {
        ClientCall<TestRequest, TestResponse> call = ch.newCall(m, CallOptions.DEFAULT.withDeadlineAfter(timeoutMs, TimeUnit.MILLISECONDS));
        CompletableFuture<Result> done = new CompletableFuture<>();
        List<TestResponse> msgs = Collections.synchronizedList(new ArrayList<>());
        Metadata[] headers = {new Metadata()};
        call.start(new ClientCall.Listener<>() {
            @Override
            public void onHeaders(Metadata h) {
                headers[0] = h;
            }

            @Override
            public void onMessage(TestResponse r) {
                msgs.add(r);
            }

            @Override
            public void onClose(Status status, Metadata trailers) {
                done.complete(new Result(new ArrayList<>(msgs), status, headers[0], trailers));
            }
        }, md);
        call.request(Integer.MAX_VALUE);
        for (TestRequest r : reqs) {
            call.sendMessage(r);
        }
        call.halfClose();
        return done.get(timeoutMs + 10_000, TimeUnit.MILLISECONDS);
    }

    static Result call(ManagedChannel ch, MethodDescriptor<TestRequest, TestResponse> m, TestRequest... reqs) throws Exception {
        return call(ch, m, new Metadata(), 10_000, List.of(reqs));
    }

    static TestRequest req(String s) {
        return TestRequest.newBuilder().setS(s).build();
    }

    static void check(String what, Object got, Object want) throws Failure {
        if (!Objects.equals(got, want)) {
            throw new Failure(what + ": expected " + show(want) + ", got " + show(got));
        }
    }

    static void ensure(String what, boolean ok, Object got) throws Failure {
        if (!ok) {
            throw new Failure(what + ": got " + show(got));
        }
    }

    static Metadata md(String... kv) {
        Metadata m = new Metadata();
        for (int i = 0; i < kv.length; i += 2) {
            m.put(Protos.ascii(kv[i]), kv[i + 1]);
        }
        return m;
    }

    static ByteString pattern(int n) {
        byte[] b = new byte[n];
        for (int i = 0; i < n; i++) {
            b[i] = (byte) (i * 7 % 251);
        }
        return ByteString.copyFrom(b);
    }

    // ---------------------------------------------------------------- cases

    static void unary(ManagedChannel ch) throws Exception {
        ByteString payload = pattern(256);
        TestResponse r = call(ch, Protos.UNARY_UNARY, md("x-request-id", "java-rid-1"), 10_000,
                List.of(TestRequest.newBuilder().setS("hello from grpc-java").setPayload(payload).build())).only("UnaryUnary");
        check("UnaryUnary s", r.getS(), "hello from grpc-java");
        check("UnaryUnary payload", r.getPayload(), payload);
        check("UnaryUnary index", r.getIndex(), 0);
        check("UnaryUnary request_id (the caller's x-request-id)", r.getRequestId(), "java-rid-1");
        r = call(ch, Protos.UNARY_UNARY, req("no id")).only("UnaryUnary without x-request-id");
        ensure("UnaryUnary request_id made by the server when none is sent", !r.getRequestId().isEmpty(), r.getRequestId());
    }

    static void serverStreaming(ManagedChannel ch) throws Exception {
        Result res = call(ch, Protos.UNARY_STREAM, TestRequest.newBuilder().setS("tick").setCount(5).build());
        res.failed("UnaryStream count=5", Status.Code.OK);
        check("UnaryStream count=5 indexes", res.messages().stream().map(TestResponse::getIndex).toList(), List.of(0, 1, 2, 3, 4));
        check("UnaryStream count=5 s", res.messages().stream().map(TestResponse::getS).distinct().toList(), List.of("tick"));
        res = call(ch, Protos.UNARY_STREAM, TestRequest.newBuilder().setCount(0).build());
        res.failed("UnaryStream count=0", Status.Code.OK);
        check("UnaryStream count=0 messages", res.messages().size(), 0);
        res = call(ch, Protos.UNARY_STREAM, TestRequest.newBuilder().setCount(2).setFailCode(10).setFailMessage("stop").build());
        check("UnaryStream messages before the failure", res.messages().size(), 2);
        check("UnaryStream failure message", res.failed("UnaryStream count=2 fail_code=ABORTED", Status.Code.ABORTED).getDescription(), "stop");
    }

    static void clientStreaming(ManagedChannel ch) throws Exception {
        TestResponse r = call(ch, Protos.STREAM_UNARY,
                TestRequest.newBuilder().setS("al").setPayload(ByteString.copyFrom(new byte[] {1})).build(),
                TestRequest.newBuilder().setS("pha").setPayload(ByteString.copyFrom(new byte[] {2, 3})).build(),
                req("bet")).only("StreamUnary");
        check("StreamUnary s", r.getS(), "alphabet");
        check("StreamUnary payload", r.getPayload(), ByteString.copyFrom(new byte[] {1, 2, 3}));
        check("StreamUnary of no messages s", call(ch, Protos.STREAM_UNARY).only("StreamUnary of no messages").getS(), "");
        Result res = call(ch, Protos.STREAM_UNARY, req("a"),
                TestRequest.newBuilder().setS("b").setFailCode(3).setFailMessage("bad part").build());
        check("StreamUnary failure message", res.failed("StreamUnary with a failing message", Status.Code.INVALID_ARGUMENT).getDescription(), "bad part");
    }

    static void bidiStreaming(ManagedChannel ch) throws Exception {
        // Ping-pong: each request goes out only after the previous answer came,
        // so the server must answer each message as it arrives.
        ClientCall<TestRequest, TestResponse> call = ch.newCall(Protos.STREAM_STREAM, CallOptions.DEFAULT.withDeadlineAfter(10, TimeUnit.SECONDS));
        BlockingQueue<Object> events = new LinkedBlockingQueue<>();
        call.start(new ClientCall.Listener<>() {
            @Override
            public void onMessage(TestResponse r) {
                events.add(r);
            }

            @Override
            public void onClose(Status status, Metadata trailers) {
                events.add(status);
            }
        }, new Metadata());
        call.request(Integer.MAX_VALUE);
        for (int i = 0; i < 4; i++) {
            call.sendMessage(TestRequest.newBuilder().setS("ping " + i).setPayload(ByteString.copyFrom(new byte[] {(byte) i})).build());
            Object got = events.poll(5, TimeUnit.SECONDS);
            if (!(got instanceof TestResponse r)) {
                call.cancel("case failed", null);
                throw new Failure("StreamStream: expected the answer to ping " + i + " within 5 s, got " + show(got));
            }
            check("StreamStream answer " + i, r.getS() + "/" + r.getIndex(), "ping " + i + "/" + i);
        }
        call.halfClose();
        Object end = events.poll(5, TimeUnit.SECONDS);
        ensure("StreamStream end after half-close: expected OK", end instanceof Status s && s.isOk(), end);

        Result res = call(ch, Protos.STREAM_STREAM, req("one"), req("two"),
                TestRequest.newBuilder().setS("three").setFailCode(10).setFailMessage("third fails").build(), req("never answered"));
        check("StreamStream answers before the failure", res.messages().stream().map(TestResponse::getS).toList(), List.of("one", "two"));
        check("StreamStream failure message", res.failed("StreamStream with a failing message", Status.Code.ABORTED).getDescription(), "third fails");
    }

    static void deadlineExceeded(ManagedChannel ch) throws Exception {
        TestRequest slow = TestRequest.newBuilder().setS("slow").setSleepMs(2000).setCount(1).build();
        call(ch, Protos.UNARY_UNARY, new Metadata(), 100, List.of(slow))
                .failed("UnaryUnary sleep 2000 ms with a 100 ms deadline", Status.Code.DEADLINE_EXCEEDED);
        call(ch, Protos.UNARY_STREAM, new Metadata(), 100, List.of(slow))
                .failed("UnaryStream sleep 2000 ms with a 100 ms deadline", Status.Code.DEADLINE_EXCEEDED);
        check("UnaryUnary after the deadline cases", call(ch, Protos.UNARY_UNARY, req("after")).only("UnaryUnary after").getS(), "after");
    }

    static void deadlinePropagated(ManagedChannel ch) throws Exception {
        TestRequest r = TestRequest.newBuilder().setS("budget").setReportDeadline(true).build();
        long ms = call(ch, Protos.UNARY_UNARY, new Metadata(), 3000, List.of(r)).only("UnaryUnary report_deadline").getDeadlineMs();
        ensure("server-side remaining deadline with a 3 s client deadline: expected 2000..3010 ms", ms >= 2000 && ms <= 3000 + ROUNDING_MS, ms);
    }

    /** The message of status_codes: `%`, an escape-looking `%41`, non-ASCII and a newline. */
    static String statusMessage(Status.Code code) {
        return code.name() + ": 100% sure %41 naïve café ✓ 日本\nsecond line";
    }

    static void statusCodes(ManagedChannel ch) throws Exception {
        for (Status.Code code : Status.Code.values()) {
            if (code == Status.Code.OK) {
                continue;
            }
            String msg = statusMessage(code);
            String what = "UnaryUnary fail_code=" + code;
            Result res = call(ch, Protos.UNARY_UNARY,
                    TestRequest.newBuilder().setS("fail").setFailCode(code.value()).setFailMessage(msg).build());
            check(what + " message", res.failed(what, code).getDescription(), msg);
        }
    }

    static void appError(ManagedChannel ch) throws Exception {
        Object[][] rows = {{2, "it is gone for good", "it is gone for good"}, {1, "", "app error 1"}};
        for (Object[] row : rows) {
            int value = (Integer) row[0];
            String what = "UnaryUnary app_error=" + value;
            Result res = call(ch, Protos.UNARY_UNARY,
                    TestRequest.newBuilder().setS("app").setAppError(value).setFailMessage((String) row[1]).build());
            check(what + " message", res.failed(what, Status.Code.FAILED_PRECONDITION).getDescription(), row[2]);
            check(what + " courier-app-error trailer", res.trailers().get(Protos.APP_ERROR), Protos.TEST_ERROR_ENUM + ":" + value);
        }
    }

    static void metadata(ManagedChannel ch) throws Exception {
        Metadata md = md("x-test-echo", "echo me: 42", "x-request-id", "interop-request-1");
        Result res = call(ch, Protos.UNARY_UNARY, md, 10_000, List.of(TestRequest.newBuilder().setS("meta").setEchoHeader("x-test-echo").build()));
        TestResponse r = res.only("UnaryUnary echo_header");
        check("UnaryUnary metadata_value (request header seen by the server)", r.getMetadataValue(), "echo me: 42");
        check("UnaryUnary reply header x-echo-header", res.headers().get(Protos.ECHO_HEADER), "echo me: 42");
        check("UnaryUnary reply trailer x-echo-trailer", res.trailers().get(Protos.ECHO_TRAILER), "echo me: 42");
        check("UnaryUnary request_id (caller's x-request-id)", r.getRequestId(), "interop-request-1");

        res = call(ch, Protos.UNARY_UNARY, TestRequest.newBuilder().setS("meta").setEchoHeader("x-not-sent").build());
        check("absent header metadata_value", res.only("UnaryUnary echo_header (absent)").getMetadataValue(), "");
        check("absent header reply header", res.headers().get(Protos.ECHO_HEADER), null);

        res = call(ch, Protos.UNARY_STREAM, md, 10_000, List.of(TestRequest.newBuilder().setS("meta stream").setEchoHeader("x-test-echo").setCount(2).build()));
        res.failed("UnaryStream echo_header", Status.Code.OK);
        check("UnaryStream reply header x-echo-header", res.headers().get(Protos.ECHO_HEADER), "echo me: 42");
        check("UnaryStream echo_header messages", res.messages().stream().map(TestResponse::getMetadataValue).toList(), List.of("echo me: 42", "echo me: 42"));
        check("UnaryStream reply trailer x-echo-trailer", res.trailers().get(Protos.ECHO_TRAILER), "echo me: 42");
    }

    static void largeMessage(ManagedChannel ch) throws Exception {
        ByteString payload = pattern(LARGE);
        TestRequest r = TestRequest.newBuilder().setS("large").setPayload(payload).build();
        TestResponse resp = call(ch, Protos.UNARY_UNARY, new Metadata(), 20_000, List.of(r)).only("UnaryUnary 3 MiB");
        check("UnaryUnary 3 MiB payload length", resp.getPayload().size(), LARGE);
        ensure("UnaryUnary 3 MiB payload intact", resp.getPayload().equals(payload), "payload differs");
        Result res = call(ch, Protos.STREAM_STREAM, new Metadata(), 20_000, List.of(r, r));
        res.failed("StreamStream 2 x 3 MiB", Status.Code.OK);
        check("StreamStream 2 x 3 MiB answers", res.messages().size(), 2);
        for (TestResponse m : res.messages()) {
            ensure("StreamStream 3 MiB payload intact", m.getPayload().equals(payload), m.getPayload().size());
        }
    }

    // ---------------------------------------------------------------- text

    static String q(String s) {
        return s == null ? "null" : json(s);
    }

    static String show(Object o) {
        if (o instanceof String s) {
            return json(s);
        }
        if (o instanceof ByteString b) {
            return b.size() + " bytes";
        }
        return String.valueOf(o);
    }

    static String json(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                case '\n' -> b.append("\\n");
                default -> {
                    if (c < 0x20) {
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
                }
            }
        }
        return b.append('"').toString();
    }
}
