//! `corpus.test.Test` (tests/protos/stubgen/corpus/test/test.proto) as a Rust
//! service on Courier, from code that `courier_stubgen::rust::compile` generated
//! in this crate's build script: the messages (prost), the server trait
//! `test_courier::Test`, `test_courier::register` and `test_courier::TestClient`.

pub mod corpus {
    pub mod test {
        include!(concat!(env!("OUT_DIR"), "/corpus.test.rs"));
    }
}

use corpus::test::test_courier::Test;
use corpus::test::{courier::Requests, courier::Responses, TestError, TestRequest, TestResponse};
use courier_core::{Code, Ctx, Status};

/// The Test service's semantics, trimmed to what the example exercises: echo
/// `s`/`payload`, `count` replies, app errors of `TestError`, the deadline seen.
#[derive(Default)]
pub struct Impl;

fn check(req: &TestRequest) -> Result<(), Status> {
    if req.app_error != 0 {
        let e = TestError::try_from(req.app_error).map_err(|_| Status::invalid_argument("no such TestError"))?;
        return Err(e.status(format!("app error {}", req.app_error)));
    }
    if req.fail_code != 0 {
        return Err(Status::new(Code::from_i32(req.fail_code), req.fail_message.clone()));
    }
    Ok(())
}

fn reply(ctx: &Ctx, req: &TestRequest, index: i32) -> TestResponse {
    TestResponse {
        s: req.s.clone(),
        payload: req.payload.clone(),
        index,
        deadline_ms: if req.report_deadline { ctx.time_remaining().map(|d| d.as_millis() as i64).unwrap_or(-1) } else { 0 },
        request_id: ctx.request_id().to_string(),
        ..Default::default()
    }
}

impl Test for Impl {
    async fn unary_unary(&self, ctx: Ctx, request: TestRequest) -> Result<TestResponse, Status> {
        check(&request)?;
        if request.sleep_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(request.sleep_ms as u64)).await;
        }
        Ok(reply(&ctx, &request, 0))
    }

    async fn unary_stream(&self, ctx: Ctx, request: TestRequest, responses: Responses<TestResponse>) -> Result<(), Status> {
        for i in 0..request.count {
            responses.send(&reply(&ctx, &request, i)).await?;
        }
        check(&request)
    }

    async fn stream_unary(&self, _ctx: Ctx, mut requests: Requests<TestRequest>) -> Result<TestResponse, Status> {
        let mut out = TestResponse::default();
        while let Some(r) = requests.message().await? {
            check(&r)?;
            out.s.push_str(&r.s);
            out.payload.extend_from_slice(&r.payload);
        }
        Ok(out)
    }

    async fn stream_stream(&self, ctx: Ctx, mut requests: Requests<TestRequest>, responses: Responses<TestResponse>) -> Result<(), Status> {
        let mut i = 0;
        while let Some(r) = requests.message().await? {
            check(&r)?;
            responses.send(&reply(&ctx, &r, i)).await?;
            i += 1;
        }
        Ok(())
    }
}
