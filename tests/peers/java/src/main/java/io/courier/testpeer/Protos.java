package io.courier.testpeer;

import bench.EchoOuterClass.Req;
import bench.EchoOuterClass.Resp;
import courier.test.TestOuterClass.TestRequest;
import courier.test.TestOuterClass.TestResponse;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.MethodDescriptor.MethodType;
import io.grpc.protobuf.ProtoUtils;

/**
 * The method descriptors of courier.test.Test and bench.Echo, built by hand with
 * grpc-protobuf's marshaller (protoc-gen-grpc-java 1.85's linux-x86_64 executable
 * is not served by Maven Central; this is all its output would add).
 */
final class Protos {
    private Protos() {}

    static final String TEST_SERVICE = "courier.test.Test";
    static final String ECHO_SERVICE = "bench.Echo";

    static final MethodDescriptor<TestRequest, TestResponse> UNARY_UNARY = test("UnaryUnary", MethodType.UNARY);
    static final MethodDescriptor<TestRequest, TestResponse> UNARY_STREAM = test("UnaryStream", MethodType.SERVER_STREAMING);
    static final MethodDescriptor<TestRequest, TestResponse> STREAM_UNARY = test("StreamUnary", MethodType.CLIENT_STREAMING);
    static final MethodDescriptor<TestRequest, TestResponse> STREAM_STREAM = test("StreamStream", MethodType.BIDI_STREAMING);

    static final MethodDescriptor<Req, Resp> ECHO = MethodDescriptor.<Req, Resp>newBuilder()
            .setType(MethodType.UNARY)
            .setFullMethodName(MethodDescriptor.generateFullMethodName(ECHO_SERVICE, "Echo"))
            .setRequestMarshaller(ProtoUtils.marshaller(Req.getDefaultInstance()))
            .setResponseMarshaller(ProtoUtils.marshaller(Resp.getDefaultInstance()))
            .build();

    /** Reply header and trailer of `echo_header`, and Courier's app-error trailer. */
    static final Metadata.Key<String> ECHO_HEADER = ascii("x-echo-header");
    static final Metadata.Key<String> ECHO_TRAILER = ascii("x-echo-trailer");
    static final Metadata.Key<String> REQUEST_ID = ascii("x-request-id");
    static final Metadata.Key<String> APP_ERROR = ascii("courier-app-error");
    static final String TEST_ERROR_ENUM = "courier.test.TestError";

    static Metadata.Key<String> ascii(String name) {
        return Metadata.Key.of(name, Metadata.ASCII_STRING_MARSHALLER);
    }

    private static MethodDescriptor<TestRequest, TestResponse> test(String name, MethodType type) {
        return MethodDescriptor.<TestRequest, TestResponse>newBuilder()
                .setType(type)
                .setFullMethodName(MethodDescriptor.generateFullMethodName(TEST_SERVICE, name))
                .setRequestMarshaller(ProtoUtils.marshaller(TestRequest.getDefaultInstance()))
                .setResponseMarshaller(ProtoUtils.marshaller(TestResponse.getDefaultInstance()))
                .build();
    }
}
