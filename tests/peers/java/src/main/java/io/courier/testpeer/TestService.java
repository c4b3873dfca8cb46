package io.courier.testpeer;

import courier.test.TestOuterClass.TestRequest;
import courier.test.TestOuterClass.TestResponse;
import io.grpc.Context;
import io.grpc.Contexts;
import io.grpc.Deadline;
import io.grpc.ForwardingServerCall;
import io.grpc.Metadata;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.ServerServiceDefinition;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ServerCalls;
import io.grpc.stub.StreamObserver;
import java.util.Locale;
import java.util.UUID;
import java.util.concurrent.TimeUnit;

/**
 * courier.test.Test on stock grpc-java, with the semantics of
 * tests/peer/src/service.rs. For each request message, in order:
 * 1. echo_header: the named request header's value goes to metadata_value and is
 *    set as reply header x-echo-header (before the first response message only)
 *    and reply trailer x-echo-trailer; a missing header gives "" and sets nothing.
 * 2. sleep_ms: sleep (ends early if the call is cancelled or its deadline passes).
 * 3. app_error != 0: FAILED_PRECONDITION, message fail_message (or "app error N"),
 *    trailer courier-app-error: courier.test.TestError:N (what a Courier server sends).
 * 4. fail_code != 0: that code and fail_message.
 * 5. reply s and payload echoed, deadline_ms if report_deadline (-1 without a
 *    deadline), request_id from x-request-id (made up when absent).
 * UnaryStream sends `count` messages, then the failure; StreamUnary concatenates;
 * StreamStream answers each message as it arrives and ends at the first failure.
 */
final class TestService {
    private TestService() {}

    /** What the interceptor keeps per call: request headers, reply metadata to add. */
    private static final class CallState {
        final Metadata requestHeaders;
        final Metadata replyHeaders = new Metadata();
        final Metadata replyTrailers = new Metadata();
        boolean headersSent;

        CallState(Metadata requestHeaders) {
            this.requestHeaders = requestHeaders;
        }
    }

    private static final Context.Key<CallState> STATE = Context.key("courier-test-call");

    private static final ServerInterceptor INTERCEPTOR = new ServerInterceptor() {
        @Override
        public <Q, R> ServerCall.Listener<Q> interceptCall(ServerCall<Q, R> call, Metadata headers, ServerCallHandler<Q, R> next) {
            CallState st = new CallState(headers);
            ServerCall<Q, R> wrapped = new ForwardingServerCall.SimpleForwardingServerCall<Q, R>(call) {
                @Override
                public void sendHeaders(Metadata h) {
                    synchronized (st) {
                        h.merge(st.replyHeaders);
                        st.headersSent = true;
                    }
                    super.sendHeaders(h);
                }

                @Override
                public void close(Status status, Metadata trailers) {
                    synchronized (st) {
                        trailers.merge(st.replyTrailers);
                    }
                    super.close(status, trailers);
                }
            };
            return Contexts.interceptCall(Context.current().withValue(STATE, st), wrapped, headers, next);
        }
    };

    static ServerServiceDefinition definition() {
        ServerServiceDefinition def = ServerServiceDefinition.builder(Protos.TEST_SERVICE)
                .addMethod(Protos.UNARY_UNARY, ServerCalls.asyncUnaryCall(TestService::unaryUnary))
                .addMethod(Protos.UNARY_STREAM, ServerCalls.asyncServerStreamingCall(TestService::unaryStream))
                .addMethod(Protos.STREAM_UNARY, ServerCalls.asyncClientStreamingCall(TestService::streamUnary))
                .addMethod(Protos.STREAM_STREAM, ServerCalls.asyncBidiStreamingCall(TestService::streamStream))
                .build();
        return ServerInterceptors.intercept(def, INTERCEPTOR);
    }

    /** Steps 1-4: the metadata value and the failure (null: none). */
    private record Applied(String value, StatusRuntimeException failure) {}

    /** Steps 1-4; throws only when the call ends while sleeping. */
    private static Applied apply(TestRequest req) {
        CallState st = STATE.get();
        String value = "";
        if (!req.getEchoHeader().isEmpty()) {
            String v = st.requestHeaders.get(Protos.ascii(req.getEchoHeader().toLowerCase(Locale.ROOT)));
            if (v != null) {
                value = v;
                synchronized (st) {
                    if (!st.headersSent) {
                        st.replyHeaders.put(Protos.ECHO_HEADER, v);
                    }
                    st.replyTrailers.put(Protos.ECHO_TRAILER, v);
                }
            }
        }
        if (req.getSleepMs() > 0) {
            sleep(req.getSleepMs());
        }
        if (req.getAppError() != 0) {
            String msg = req.getFailMessage().isEmpty() ? "app error " + req.getAppError() : req.getFailMessage();
            Metadata trailers = new Metadata();
            trailers.put(Protos.APP_ERROR, Protos.TEST_ERROR_ENUM + ":" + req.getAppError());
            return new Applied(value, Status.FAILED_PRECONDITION.withDescription(msg).asRuntimeException(trailers));
        }
        if (req.getFailCode() != 0) {
            return new Applied(value, Status.fromCodeValue(req.getFailCode()).withDescription(req.getFailMessage()).asRuntimeException());
        }
        return new Applied(value, null);
    }

    private static void sleep(int ms) {
        Context ctx = Context.current();
        long end = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(ms);
        for (long left; (left = end - System.nanoTime()) > 0; ) {
            if (ctx.isCancelled()) {
                Deadline d = ctx.getDeadline();
                if (d != null && d.isExpired()) {
                    throw Status.DEADLINE_EXCEEDED.withDescription("deadline exceeded while sleeping").asRuntimeException();
                }
                throw Status.CANCELLED.withDescription("cancelled while sleeping").asRuntimeException();
            }
            try {
                Thread.sleep(Math.max(1, Math.min(5, TimeUnit.NANOSECONDS.toMillis(left))));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw Status.CANCELLED.withDescription("interrupted").asRuntimeException();
            }
        }
    }

    private static long deadlineMs(boolean report) {
        if (!report) {
            return 0;
        }
        Deadline d = Context.current().getDeadline();
        return d == null ? -1 : d.timeRemaining(TimeUnit.MILLISECONDS);
    }

    private static String requestId() {
        String id = STATE.get().requestHeaders.get(Protos.REQUEST_ID);
        return id != null ? id : UUID.randomUUID().toString().replace("-", "");
    }

    private static TestResponse response(TestRequest req, Applied a, int index) {
        return TestResponse.newBuilder()
                .setS(req.getS())
                .setPayload(req.getPayload())
                .setIndex(index)
                .setMetadataValue(a.value())
                .setDeadlineMs(deadlineMs(req.getReportDeadline()))
                .setRequestId(requestId())
                .build();
    }

    private static void unaryUnary(TestRequest req, StreamObserver<TestResponse> out) {
        try {
            Applied a = apply(req);
            if (a.failure() != null) {
                out.onError(a.failure());
                return;
            }
            out.onNext(response(req, a, 0));
            out.onCompleted();
        } catch (StatusRuntimeException e) {
            out.onError(e);
        }
    }

    private static void unaryStream(TestRequest req, StreamObserver<TestResponse> out) {
        try {
            Applied a = apply(req);
            for (int i = 0; i < req.getCount(); i++) {
                out.onNext(response(req, a, i));
            }
            if (a.failure() != null) {
                out.onError(a.failure());
            } else {
                out.onCompleted();
            }
        } catch (StatusRuntimeException e) {
            out.onError(e);
        }
    }

    /**
     * A request stream handled message by message: steps 1-4 on each as it
     * arrives, the first failure ends the call (later messages are ignored).
     */
    private abstract static class PerMessage implements StreamObserver<TestRequest> {
        final StreamObserver<TestResponse> out;
        private boolean done;

        PerMessage(StreamObserver<TestResponse> out) {
            this.out = out;
        }

        /** A request that passed steps 1-4. */
        abstract void accept(TestRequest req, Applied a);

        /** The client half-closed and nothing failed. */
        abstract void finish();

        @Override
        public void onNext(TestRequest req) {
            if (done) {
                return;
            }
            try {
                Applied a = apply(req);
                if (a.failure() != null) {
                    done = true;
                    out.onError(a.failure());
                    return;
                }
                accept(req, a);
            } catch (StatusRuntimeException e) {
                done = true;
                out.onError(e);
            }
        }

        @Override
        public void onError(Throwable t) {
            done = true;
        }

        @Override
        public void onCompleted() {
            if (!done) {
                done = true;
                finish();
            }
        }
    }

    private static StreamObserver<TestRequest> streamUnary(StreamObserver<TestResponse> out) {
        TestResponse.Builder acc = TestResponse.newBuilder().setRequestId(requestId());
        return new PerMessage(out) {
            @Override
            void accept(TestRequest req, Applied a) {
                acc.setS(acc.getS() + req.getS());
                acc.setPayload(acc.getPayload().concat(req.getPayload()));
                if (!req.getEchoHeader().isEmpty()) {
                    acc.setMetadataValue(a.value());
                }
                if (req.getReportDeadline()) {
                    acc.setDeadlineMs(deadlineMs(true));
                }
            }

            @Override
            void finish() {
                out.onNext(acc.build());
                out.onCompleted();
            }
        };
    }

    private static StreamObserver<TestRequest> streamStream(StreamObserver<TestResponse> out) {
        return new PerMessage(out) {
            int index;

            @Override
            void accept(TestRequest req, Applied a) {
                out.onNext(response(req, a, index++));
            }

            @Override
            void finish() {
                out.onCompleted();
            }
        };
    }
}
