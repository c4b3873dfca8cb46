//! Messages of `courier/test/test.proto`, written by hand with `prost`'s derive
//! (field numbers and types must match the proto file exactly).

/// `courier.test.TestRequest`: what a test handler is asked to do.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TestRequest {
    #[prost(string, tag = "1")]
    pub s: String,
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
    /// Sleep this long before answering.
    #[prost(int32, tag = "3")]
    pub sleep_ms: i32,
    /// Fail with this gRPC code (0: do not fail) and message.
    #[prost(int32, tag = "4")]
    pub fail_code: i32,
    #[prost(string, tag = "5")]
    pub fail_message: String,
    /// Server streaming: how many responses.
    #[prost(int32, tag = "6")]
    pub count: i32,
    /// Fail with this app error value of `TestError` (0: none).
    #[prost(int32, tag = "7")]
    pub app_error: i32,
    /// Reply with the named request header's value in `metadata_value`, and set
    /// it as response header `x-echo-header` and trailer `x-echo-trailer`.
    #[prost(string, tag = "8")]
    pub echo_header: String,
    /// Report the remaining deadline (ms) in `deadline_ms` (-1: none).
    #[prost(bool, tag = "9")]
    pub report_deadline: bool,
}

/// `courier.test.TestResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TestResponse {
    #[prost(string, tag = "1")]
    pub s: String,
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
    #[prost(int32, tag = "3")]
    pub index: i32,
    #[prost(string, tag = "4")]
    pub metadata_value: String,
    #[prost(int64, tag = "5")]
    pub deadline_ms: i64,
    #[prost(string, tag = "6")]
    pub request_id: String,
}

/// `courier.test.TestError`, the app-error enum of the test service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum TestError {
    Unspecified = 0,
    NotReady = 1,
    Gone = 2,
}

/// Full name of [`TestError`], as it travels in the `courier-app-error` trailer.
pub const TEST_ERROR_ENUM: &str = "courier.test.TestError";

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn wire_format_matches_the_proto_field_numbers() {
        // Bytes produced by protoc-generated code for the same values.
        let r = TestRequest {
            s: "a".into(),
            payload: vec![1],
            sleep_ms: 2,
            fail_code: 3,
            fail_message: "m".into(),
            count: 4,
            app_error: 5,
            echo_header: "h".into(),
            report_deadline: true,
        };
        let want: &[u8] = &[
            0x0a, 1, b'a', 0x12, 1, 1, 0x18, 2, 0x20, 3, 0x2a, 1, b'm', 0x30, 4, 0x38, 5, 0x42, 1, b'h', 0x48, 1,
        ];
        assert_eq!(r.encode_to_vec(), want);
        let resp = TestResponse {
            s: "x".into(),
            payload: vec![9],
            index: 7,
            metadata_value: "v".into(),
            deadline_ms: -1,
            request_id: "r".into(),
        };
        let mut want = vec![0x0a, 1, b'x', 0x12, 1, 9, 0x18, 7, 0x22, 1, b'v', 0x28];
        want.extend_from_slice(&[0xff; 9]);
        want.push(0x01);
        want.extend_from_slice(&[0x32, 1, b'r']);
        assert_eq!(resp.encode_to_vec(), want);
        assert_eq!(TestResponse::decode(&want[..]).unwrap(), resp);
    }
}
