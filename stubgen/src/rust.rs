//! Rust services: a `prost-build` [`ServiceGenerator`] that emits, per proto
//! service, a module `<service>_courier` with
//!
//! * a server trait (`async fn`-style methods taking an explicit [`Ctx`]) and
//!   `register(&Server, Arc<impl Trait>)`, which puts every method in the
//!   server's table with the deadline and app-error enum of the proto options
//!   (and registers the files' descriptors for server reflection);
//! * a client over a [`Channel`] whose methods take the caller's `&Ctx`;
//!
//! and, per package, typed request/response streams and, for each top-level
//! `rpc_error` enum, `status()`/`from_status()` to raise and read app errors.
//!
//! Generated code needs `courier-core`, `prost`, `bytes` and `futures-util`.
//! Use [`compile`] from a build script:
//!
//! ```no_run
//! // build.rs
//! courier_stubgen::rust::compile(&["protos"], &["protos/a/b.proto"], &Default::default(), None).unwrap();
//! // lib.rs: include!(concat!(env!("OUT_DIR"), "/a.b.rs"));
//! ```
//!
//! [`Ctx`]: https://docs.rs/courier-core
//! [`Channel`]: https://docs.rs/courier-core

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use prost_build::{Service, ServiceGenerator};

use crate::compile::{Compiled, Error};
use crate::model::{Deadline, DeadlineOverrides, Model};

/// The Courier service generator for `prost-build`, built from the checked
/// model (deadlines and app errors are not in prost's view of the options).
pub struct CourierServiceGenerator {
    model: Model,
    /// Encoded FileDescriptorSet (options kept), registered for reflection.
    descriptor_set: Vec<u8>,
    /// Packages that got at least one service (helpers are emitted once each).
    packages: BTreeMap<String, bool>,
}

impl CourierServiceGenerator {
    pub fn new(compiled: &Compiled, model: Model) -> CourierServiceGenerator {
        CourierServiceGenerator { model, descriptor_set: compiled.encode_file_descriptor_set(), packages: BTreeMap::new() }
    }
}

/// `UnaryUnary` -> `unary_unary`.
fn snake(name: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = name.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev_lower = i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if i > 0 && (prev_lower || (chars[i - 1].is_uppercase() && next_lower)) {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn doc(buf: &mut String, indent: &str, lines: &[String]) {
    for l in lines {
        let _ = writeln!(buf, "{indent}///{}{}", if l.is_empty() { "" } else { " " }, l.trim_end());
    }
}

fn byte_literal(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len() * 2 + 3);
    s.push_str("b\"");
    for &b in data {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s.push('"');
    s
}

impl ServiceGenerator for CourierServiceGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let full = if service.package.is_empty() { service.proto_name.clone() } else { format!("{}.{}", service.package, service.proto_name) };
        self.packages.insert(service.package.clone(), true);
        let Some(model) = self.model.service(&full).cloned() else {
            let _ = writeln!(buf, "compile_error!(\"courier-stubgen has no model of service {full}\");");
            return;
        };
        let trait_name = service.name.clone();
        let module = format!("{}_courier", snake(&service.proto_name));
        let n = model.methods.len();
        let _ = writeln!(buf, "/// Courier server trait, client and method table of `{full}`.");
        let _ = writeln!(buf, "pub mod {module} {{");
        let _ = writeln!(buf, "    #![allow(clippy::all, unused_imports)]");
        let _ = writeln!(buf, "    use super::*;");
        let _ = writeln!(buf, "    use ::courier_core::{{Ctx, Status}};");
        let _ = writeln!(buf, "    use ::prost::Message as _;\n");
        let _ = writeln!(buf, "    /// Full name of the service.");
        let _ = writeln!(buf, "    pub const SERVICE: &str = \"{full}\";\n");
        // Method table.
        let _ = writeln!(buf, "    /// The method table: paths, kinds, default deadlines (from the proto options) and app-error enums.");
        let _ = writeln!(buf, "    pub fn method_descs() -> &'static [::courier_core::MethodDesc; {n}] {{");
        let _ = writeln!(buf, "        static DESCS: ::std::sync::OnceLock<[::courier_core::MethodDesc; {n}]> = ::std::sync::OnceLock::new();");
        let _ = writeln!(buf, "        DESCS.get_or_init(|| [");
        for m in &model.methods {
            let kind = match (m.desc.is_client_streaming(), m.desc.is_server_streaming()) {
                (false, false) => "Unary",
                (false, true) => "ServerStreaming",
                (true, false) => "ClientStreaming",
                (true, true) => "BidiStreaming",
            };
            let deadline = match m.deadline {
                Deadline::NoDeadline => "::courier_core::DeadlinePolicy::NoDeadline".to_string(),
                Deadline::Default(d) => format!("::courier_core::DeadlinePolicy::Default(::std::time::Duration::from_millis({}))", d.as_millis()),
            };
            let _ = writeln!(buf, "            {{");
            let _ = writeln!(
                buf,
                "                let d = ::courier_core::MethodDesc::new(\"/{full}/{}\", ::courier_core::MethodKind::{kind}, {deadline}).expect(\"valid method path\");",
                m.desc.name()
            );
            match &m.app_error {
                Some(e) => {
                    let _ = writeln!(buf, "                d.with_app_error_enum(\"{e}\")");
                }
                None => {
                    let _ = writeln!(buf, "                d");
                }
            }
            let _ = writeln!(buf, "            }},");
        }
        let _ = writeln!(buf, "        ])");
        let _ = writeln!(buf, "    }}\n");

        // Server trait.
        let mut trait_doc = service.comments.leading.clone();
        if !trait_doc.is_empty() {
            trait_doc.push(String::new());
        }
        trait_doc.push(format!("Handlers of `{full}`: every method gets the call's `ctx` (deadline, cancellation,"));
        trait_doc.push("peer identity, metadata); an `Err` status ends the call with it (see the app-error".to_string());
        trait_doc.push("enums' `status()`). Serve with [`register`].".to_string());
        doc(buf, "    ", &trait_doc);
        let _ = writeln!(buf, "    pub trait {trait_name}: Send + Sync + 'static {{");
        for m in &service.methods {
            doc(buf, "        ", &m.comments.leading);
            let (i, o) = (&m.input_type, &m.output_type);
            let sig = match (m.client_streaming, m.server_streaming) {
                (false, false) => format!("request: {i}) -> impl ::core::future::Future<Output = Result<{o}, Status>> + Send"),
                (false, true) => format!("request: {i}, responses: super::courier::Responses<{o}>) -> impl ::core::future::Future<Output = Result<(), Status>> + Send"),
                (true, false) => format!("requests: super::courier::Requests<{i}>) -> impl ::core::future::Future<Output = Result<{o}, Status>> + Send"),
                (true, true) => format!("requests: super::courier::Requests<{i}>, responses: super::courier::Responses<{o}>) -> impl ::core::future::Future<Output = Result<(), Status>> + Send"),
            };
            let _ = writeln!(buf, "        fn {}(&self, ctx: Ctx, {sig};", m.name);
        }
        let _ = writeln!(buf, "    }}\n");

        // Registration.
        let _ = writeln!(buf, "    /// Serves `service` on `server`: every method with its deadline and app-error enum; the");
        let _ = writeln!(buf, "    /// proto files' descriptors are registered for server reflection.");
        let _ = writeln!(buf, "    pub fn register<S: {trait_name}>(server: &::courier_core::Server, service: ::std::sync::Arc<S>) -> Result<(), ::courier_core::ServerError> {{");
        let _ = writeln!(buf, "        super::courier::register_descriptors();");
        let _ = writeln!(buf, "        let descs = method_descs();");
        for (idx, m) in service.methods.iter().enumerate() {
            let (i, name) = (&m.input_type, &m.name);
            let _ = writeln!(buf, "        let s = service.clone();");
            let handler = match (m.client_streaming, m.server_streaming) {
                (false, false) => format!(
                    "::courier_core::Handler::unary(move |ctx, msg| {{ let s = s.clone(); async move {{ let req = super::courier::decode::<{i}>(&msg)?; let resp = s.{name}(ctx, req).await?; Ok(resp.encode_to_vec().into()) }} }})"
                ),
                (false, true) => format!(
                    "::courier_core::Handler::server_streaming(move |ctx, msg, tx| {{ let s = s.clone(); async move {{ let req = super::courier::decode::<{i}>(&msg)?; s.{name}(ctx, req, super::courier::Responses::new(tx)).await }} }})"
                ),
                (true, false) => format!(
                    "::courier_core::Handler::client_streaming(move |ctx, reqs| {{ let s = s.clone(); async move {{ let resp = s.{name}(ctx, super::courier::Requests::new(reqs)).await?; Ok(resp.encode_to_vec().into()) }} }})"
                ),
                (true, true) => format!(
                    "::courier_core::Handler::bidi_streaming(move |ctx, reqs, tx| {{ let s = s.clone(); async move {{ s.{name}(ctx, super::courier::Requests::new(reqs), super::courier::Responses::new(tx)).await }} }})"
                ),
            };
            let _ = writeln!(buf, "        server.register(descs[{idx}].clone(), {handler})?;");
        }
        let _ = writeln!(buf, "        let _ = service;");
        let _ = writeln!(buf, "        Ok(())");
        let _ = writeln!(buf, "    }}\n");

        // Client.
        let client = format!("{}Client", service.name);
        let _ = writeln!(buf, "    /// Calls `{full}` over a [`::courier_core::Channel`]; every call takes the caller's `ctx`,");
        let _ = writeln!(buf, "    /// whose deadline (or the method's default, whichever is earlier) travels with it.");
        let _ = writeln!(buf, "    #[derive(Clone, Debug)]");
        let _ = writeln!(buf, "    pub struct {client} {{");
        let _ = writeln!(buf, "        pub channel: ::courier_core::Channel,");
        let _ = writeln!(buf, "    }}\n");
        let _ = writeln!(buf, "    impl {client} {{");
        let _ = writeln!(buf, "        pub fn new(channel: ::courier_core::Channel) -> Self {{");
        let _ = writeln!(buf, "            {client} {{ channel }}");
        let _ = writeln!(buf, "        }}");
        for (idx, m) in service.methods.iter().enumerate() {
            let (i, o, name) = (&m.input_type, &m.output_type, &m.name);
            let _ = writeln!(buf);
            doc(buf, "        ", &m.comments.leading);
            match (m.client_streaming, m.server_streaming) {
                (false, false) => {
                    let _ = writeln!(buf, "        pub async fn {name}(&self, ctx: &Ctx, request: &{i}) -> Result<{o}, Status> {{");
                    let _ = writeln!(buf, "            let reply = self.channel.unary(ctx, &method_descs()[{idx}], request.encode_to_vec().into(), &Default::default()).await?;");
                    let _ = writeln!(buf, "            super::courier::decode_reply(&reply.message)");
                }
                (false, true) => {
                    let _ = writeln!(buf, "        pub async fn {name}(&self, ctx: &Ctx, request: &{i}) -> Result<super::courier::Replies<{o}>, Status> {{");
                    let _ = writeln!(buf, "            let replies = self.channel.server_streaming(ctx, &method_descs()[{idx}], request.encode_to_vec().into(), &Default::default()).await?;");
                    let _ = writeln!(buf, "            Ok(super::courier::Replies::new(replies))");
                }
                (true, false) => {
                    let _ = writeln!(buf, "        pub async fn {name}<R>(&self, ctx: &Ctx, requests: R) -> Result<{o}, Status>");
                    let _ = writeln!(buf, "        where R: ::futures_util::Stream<Item = {i}> + Send + 'static {{");
                    let _ = writeln!(buf, "            let reply = self.channel.client_streaming(ctx, &method_descs()[{idx}], super::courier::encode_stream(requests), &Default::default()).await?;");
                    let _ = writeln!(buf, "            super::courier::decode_reply(&reply.message)");
                }
                (true, true) => {
                    let _ = writeln!(buf, "        pub async fn {name}<R>(&self, ctx: &Ctx, requests: R) -> Result<super::courier::Replies<{o}>, Status>");
                    let _ = writeln!(buf, "        where R: ::futures_util::Stream<Item = {i}> + Send + 'static {{");
                    let _ = writeln!(buf, "            let replies = self.channel.bidi_streaming(ctx, &method_descs()[{idx}], super::courier::encode_stream(requests), &Default::default()).await?;");
                    let _ = writeln!(buf, "            Ok(super::courier::Replies::new(replies))");
                }
            }
            let _ = writeln!(buf, "        }}");
        }
        let _ = writeln!(buf, "    }}");
        let _ = writeln!(buf, "}}");
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        let mut app_errors = String::new();
        for e in self.model.app_errors.values() {
            if e.desc.package_name() != package || e.desc.parent_message().is_some() {
                continue;
            }
            let name = e.desc.name();
            let rust = prost_type_name(name);
            let arms: Vec<String> = e.codes.iter().map(|(v, _, c)| format!("{v} => {},", crate::model::GRPC_CODES.iter().position(|x| x == c).unwrap_or(2))).collect();
            let _ = writeln!(
                app_errors,
                r#"
impl {rust} {{
    /// Full name of this `rpc_error` enum, as it travels in the `courier-app-error` trailer.
    pub const COURIER_APP_ERROR_ENUM: &'static str = "{full}";

    /// This app error as a status: the value's `(courier.grpc_code)` (UNKNOWN if none) and the value.
    pub fn status(self, message: impl Into<String>) -> ::courier_core::Status {{
        let code = match self as i32 {{ {arms} _ => 2 }};
        ::courier_core::Status::app_error(
            ::courier_core::Code::from_i32(code),
            message,
            ::courier_core::AppError {{ enum_name: Self::COURIER_APP_ERROR_ENUM.to_string(), value: self as i32 }},
        )
    }}

    /// The value of this enum that `status` carries, if it carries one.
    pub fn from_status(status: &::courier_core::Status) -> Option<Self> {{
        let a = status.app_error_value()?;
        if a.enum_name != Self::COURIER_APP_ERROR_ENUM {{
            return None;
        }}
        Self::try_from(a.value).ok()
    }}
}}"#,
                full = e.full_name(),
                arms = arms.join(" "),
            );
        }
        if !self.packages.contains_key(package) && app_errors.is_empty() {
            return;
        }
        buf.push_str(&app_errors);
        if !self.packages.contains_key(package) {
            return;
        }
        let set = byte_literal(&self.descriptor_set);
        let _ = write!(
            buf,
            r#"
/// Courier's typed wrappers over the call boundary, for this package's services.
pub mod courier {{
    #![allow(dead_code, clippy::all)]
    use ::courier_core::Status;

    /// The proto files of these services (imports and options included).
    pub const FILE_DESCRIPTOR_SET: &[u8] = {set};

    /// Registers [`FILE_DESCRIPTOR_SET`] for server reflection (once per process).
    pub fn register_descriptors() {{
        static ONCE: ::std::sync::Once = ::std::sync::Once::new();
        ONCE.call_once(|| {{
            if let Err(e) = ::courier_core::reflection::register_file_descriptor_set(FILE_DESCRIPTOR_SET) {{
                eprintln!("courier: cannot register descriptors for reflection: {{e}}");
            }}
        }});
    }}

    pub fn decode<T: ::prost::Message + Default>(b: &[u8]) -> Result<T, Status> {{
        T::decode(b).map_err(|e| Status::invalid_argument(format!("bad request message: {{e}}")))
    }}

    pub fn decode_reply<T: ::prost::Message + Default>(b: &[u8]) -> Result<T, Status> {{
        T::decode(b).map_err(|e| Status::internal(format!("bad response message: {{e}}")))
    }}

    pub fn encode_stream<T, S>(requests: S) -> impl ::futures_util::Stream<Item = ::bytes::Bytes> + Send + 'static
    where
        T: ::prost::Message,
        S: ::futures_util::Stream<Item = T> + Send + 'static,
    {{
        ::futures_util::StreamExt::map(requests, |m| ::bytes::Bytes::from(m.encode_to_vec()))
    }}

    /// The request messages of a client- or bidi-streaming call.
    pub struct Requests<T> {{
        inner: ::courier_core::RequestStream,
        _t: ::std::marker::PhantomData<fn() -> T>,
    }}

    impl<T: ::prost::Message + Default> Requests<T> {{
        pub fn new(inner: ::courier_core::RequestStream) -> Self {{
            Requests {{ inner, _t: ::std::marker::PhantomData }}
        }}

        /// The next request; `Ok(None)` once the client is done sending.
        pub async fn message(&mut self) -> Result<Option<T>, Status> {{
            match self.inner.message().await? {{
                Some(b) => decode(&b).map(Some),
                None => Ok(None),
            }}
        }}
    }}

    /// Sends the response messages of a server- or bidi-streaming call.
    pub struct Responses<T> {{
        inner: ::courier_core::ResponseSender,
        _t: ::std::marker::PhantomData<fn(T)>,
    }}

    impl<T: ::prost::Message> Responses<T> {{
        pub fn new(inner: ::courier_core::ResponseSender) -> Self {{
            Responses {{ inner, _t: ::std::marker::PhantomData }}
        }}

        /// Sends one response; waits while the client is behind; `CANCELLED` once the call is over.
        pub async fn send(&self, message: &T) -> Result<(), Status> {{
            self.inner.send(message.encode_to_vec().into()).await
        }}
    }}

    /// The response messages of a server- or bidi-streaming call.
    pub struct Replies<T> {{
        inner: ::courier_core::ReplyStream,
        _t: ::std::marker::PhantomData<fn() -> T>,
    }}

    impl<T: ::prost::Message + Default> Replies<T> {{
        pub fn new(inner: ::courier_core::ReplyStream) -> Self {{
            Replies {{ inner, _t: ::std::marker::PhantomData }}
        }}

        /// The next response; `Ok(None)` at the end of an OK stream.
        pub async fn message(&mut self) -> Result<Option<T>, Status> {{
            match self.inner.message().await? {{
                Some(b) => decode_reply(&b).map(Some),
                None => Ok(None),
            }}
        }}

        /// The untyped stream: response headers, trailers.
        pub fn inner(&self) -> &::courier_core::ReplyStream {{
            &self.inner
        }}
    }}
}}
"#
        );
    }
}

/// prost's Rust name of a top-level type (`to_upper_camel`).
fn prost_type_name(proto: &str) -> String {
    let mut out = String::new();
    let mut upper = true;
    let chars: Vec<char> = proto.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == '_' {
            upper = true;
            continue;
        }
        if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else if c.is_uppercase() && i > 0 && chars[i - 1].is_uppercase() && !chars.get(i + 1).is_some_and(|n| n.is_lowercase()) {
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Compiles `files` (with `includes`) into Rust: prost messages plus Courier
/// services, written to `out_dir` (default: `$OUT_DIR`). For build scripts;
/// errors name file and line.
pub fn compile(includes: &[impl AsRef<Path>], files: &[impl AsRef<Path>], overrides: &DeadlineOverrides, out_dir: Option<&Path>) -> Result<(), Vec<Error>> {
    let includes: Vec<PathBuf> = includes.iter().map(|p| p.as_ref().to_path_buf()).collect();
    let files: Vec<PathBuf> = files.iter().map(|p| p.as_ref().to_path_buf()).collect();
    let compiled = crate::compile(&includes, &files)?;
    let model = crate::model::build(&compiled, overrides)?;
    let fds = prost_types::FileDescriptorSet { file: compiled.pool.file_descriptor_protos().cloned().collect() };
    let mut config = prost_build::Config::new();
    if let Some(out) = out_dir {
        config.out_dir(out);
    }
    config.service_generator(Box::new(CourierServiceGenerator::new(&compiled, model)));
    config.compile_fds(fds).map_err(|e| vec![Error::new(format!("prost-build: {e}"))])?;
    for f in &files {
        if let Some(s) = f.to_str() {
            println!("cargo:rerun-if-changed={s}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(snake("UnaryUnary"), "unary_unary");
        assert_eq!(snake("GetHTTPStatus"), "get_http_status");
        assert_eq!(prost_type_name("TestError"), "TestError");
        assert_eq!(prost_type_name("HTTPError"), "HttpError");
        assert_eq!(prost_type_name("echo_error"), "EchoError");
    }
}
