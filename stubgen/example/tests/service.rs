//! The generated Rust service and client end to end on Courier: every kind,
//! typed app errors, the deadline from the proto options, reflection registered.

use std::sync::Arc;
use std::time::Duration;

use courier_core::{Channel, ChannelConfig, Code, Ctx, DeadlinePolicy, Server, ServerConfig};
use courier_stubgen_example::corpus::test::{test_courier, TestError, TestRequest};
use courier_stubgen_example::Impl;

fn start() -> (Server, test_courier::TestClient) {
    let server = Server::new(ServerConfig { workers: 1, ..Default::default() });
    test_courier::register(&server, Arc::new(Impl)).unwrap();
    let addr = server.listen("127.0.0.1:0").unwrap();
    server.start().unwrap();
    let channel = Channel::new(&addr.to_string(), &ChannelConfig::default()).unwrap();
    (server, test_courier::TestClient::new(channel))
}

fn req(s: &str) -> TestRequest {
    TestRequest { s: s.into(), ..Default::default() }
}

#[tokio::test]
async fn every_kind_with_ctx() {
    let (server, client) = start();
    let ctx = Ctx::background().with_timeout(Duration::from_secs(5));

    let r = client.unary_unary(&ctx, &req("hi")).await.unwrap();
    assert_eq!(r.s, "hi");

    let mut replies = client.unary_stream(&ctx, &TestRequest { count: 3, ..req("x") }).await.unwrap();
    let mut got = Vec::new();
    while let Some(r) = replies.message().await.unwrap() {
        got.push(r.index);
    }
    assert_eq!(got, [0, 1, 2]);

    let r = client.stream_unary(&ctx, futures_util::stream::iter([req("a"), req("b"), req("c")])).await.unwrap();
    assert_eq!(r.s, "abc");

    let mut replies = client.stream_stream(&ctx, futures_util::stream::iter([req("p"), req("q")])).await.unwrap();
    let mut got = Vec::new();
    while let Some(r) = replies.message().await.unwrap() {
        got.push((r.s, r.index));
    }
    assert_eq!(got, [("p".to_string(), 0), ("q".to_string(), 1)]);
    server.shutdown(Duration::from_secs(1));
}

#[tokio::test]
async fn app_errors_are_typed() {
    let (server, client) = start();
    let ctx = Ctx::background().with_timeout(Duration::from_secs(5));
    let err = client.unary_unary(&ctx, &TestRequest { app_error: TestError::Gone as i32, ..req("") }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(TestError::from_status(&err), Some(TestError::Gone));
    let err = client.unary_unary(&ctx, &TestRequest { app_error: TestError::NotReady as i32, ..req("") }).await.unwrap_err();
    assert_eq!((err.code(), TestError::from_status(&err)), (Code::FailedPrecondition, Some(TestError::NotReady)));
    // Not an app error: no typed value.
    let err = client.unary_unary(&ctx, &TestRequest { fail_code: Code::Aborted as i32, ..req("") }).await.unwrap_err();
    assert_eq!((err.code(), TestError::from_status(&err)), (Code::Aborted, None));
    server.shutdown(Duration::from_secs(1));
}

#[tokio::test]
async fn deadlines_come_from_the_proto_options() {
    for d in test_courier::method_descs() {
        assert_eq!(d.deadline_policy(), DeadlinePolicy::Default(Duration::from_millis(10_000)), "{}", d.path());
        assert_eq!(d.app_error_enum(), Some("corpus.test.TestError"));
    }
    let (server, client) = start();
    // Without a deadline of its own, the call gets the method's 10 s.
    let r = client.unary_unary(&Ctx::background(), &TestRequest { report_deadline: true, ..req("") }).await.unwrap();
    assert!(9_000 < r.deadline_ms && r.deadline_ms <= 10_000, "{}", r.deadline_ms);
    // An earlier caller deadline wins, and is enforced.
    let ctx = Ctx::background().with_timeout(Duration::from_millis(100));
    let err = client.unary_unary(&ctx, &TestRequest { sleep_ms: 1000, ..req("") }).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(courier_core::reflection::is_registered("corpus/test/test.proto"));
    assert!(courier_core::reflection::is_registered("courier/options.proto"));
    server.shutdown(Duration::from_secs(1));
}
