//! gRPC server reflection (`grpc.reflection.v1.ServerReflection` and
//! `v1alpha`), built into every server next to health, so stock tools
//! (`grpcurl list`, `describe`, calls) work against a Courier server.
//!
//! Language-neutral: bindings and generated code register the serialized
//! `FileDescriptorProto`s of the protos they serve
//! ([`register_file_descriptors`]), in a process-wide registry; the core never
//! decodes more of them than names. `list_services` answers the services this
//! server serves.

use std::collections::{BTreeSet, HashMap};
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;

use crate::call::Handler;
use crate::health::{HealthReporter, HEALTH_SERVICE};
use crate::method::{DeadlinePolicy, MethodDesc, MethodKind};
use crate::status::Status;

pub const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
pub const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

// The parts of descriptor.proto needed to index names.
#[derive(Clone, PartialEq, Message)]
struct FileProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    package: String,
    #[prost(string, repeated, tag = "3")]
    dependency: Vec<String>,
    #[prost(message, repeated, tag = "4")]
    message_type: Vec<MessageProto>,
    #[prost(message, repeated, tag = "5")]
    enum_type: Vec<NamedProto>,
    #[prost(message, repeated, tag = "6")]
    service: Vec<ServiceProto>,
    #[prost(message, repeated, tag = "7")]
    extension: Vec<FieldProto>,
}

#[derive(Clone, PartialEq, Message)]
struct MessageProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "3")]
    nested_type: Vec<MessageProto>,
    #[prost(message, repeated, tag = "4")]
    enum_type: Vec<NamedProto>,
    #[prost(message, repeated, tag = "6")]
    extension: Vec<FieldProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NamedProto {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, Message)]
struct ServiceProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "2")]
    method: Vec<NamedProto>,
}

#[derive(Clone, PartialEq, Message)]
struct FieldProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    extendee: String,
    #[prost(int32, tag = "3")]
    number: i32,
}

/// A `FileDescriptorProto` that could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum ReflectionError {
    #[error("not a FileDescriptorProto: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("a FileDescriptorProto without a name")]
    NoName,
    #[error("file {0:?} is registered with different contents")]
    Conflict(String),
}

#[derive(Default)]
struct Registry {
    files: HashMap<String, (Bytes, Vec<String>)>,
    symbols: HashMap<String, String>,
    /// (extendee full name, number) -> file.
    extensions: HashMap<(String, i32), String>,
}

/// The descriptors of the services built into every server (`proto/grpc/`:
/// health v1, reflection v1 and v1alpha), as courier-stubgen encodes them;
/// stubgen/example's tests check that this is current.
pub const BUILTIN_DESCRIPTOR_SET: &[u8] = include_bytes!("reflection_builtin.binpb");

fn registry() -> &'static RwLock<Registry> {
    static R: OnceLock<RwLock<Registry>> = OnceLock::new();
    R.get_or_init(|| {
        let r = RwLock::new(Registry::default());
        let files = decode_set(BUILTIN_DESCRIPTOR_SET).unwrap_or_default();
        add_files(&mut r.write().unwrap_or_else(|e| e.into_inner()), files).expect("built-in descriptors are valid");
        r
    })
}

fn decode_set(set: &[u8]) -> Result<Vec<Bytes>, prost::DecodeError> {
    #[derive(Clone, PartialEq, Message)]
    struct Set {
        #[prost(bytes = "bytes", repeated, tag = "1")]
        file: Vec<Bytes>,
    }
    Ok(Set::decode(set)?.file)
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Registers serialized `FileDescriptorProto`s (the same file twice is fine).
/// Imports should be registered too, so clients can resolve every type.
pub fn register_file_descriptors<I>(files: I) -> Result<(), ReflectionError>
where
    I: IntoIterator<Item = Bytes>,
{
    add_files(&mut registry().write().unwrap_or_else(|e| e.into_inner()), files)
}

fn add_files<I>(reg: &mut Registry, files: I) -> Result<(), ReflectionError>
where
    I: IntoIterator<Item = Bytes>,
{
    for bytes in files {
        let f = FileProto::decode(bytes.clone())?;
        if f.name.is_empty() {
            return Err(ReflectionError::NoName);
        }
        if let Some((old, _)) = reg.files.get(&f.name) {
            if *old != bytes {
                return Err(ReflectionError::Conflict(f.name));
            }
            continue;
        }
        let file = f.name.clone();
        let mut symbols = Vec::new();
        let mut exts = Vec::new();
        fn message(prefix: &str, m: &MessageProto, symbols: &mut Vec<String>, exts: &mut Vec<(String, i32, String)>) {
            let name = join(prefix, &m.name);
            for n in &m.nested_type {
                message(&name, n, symbols, exts);
            }
            for e in &m.enum_type {
                symbols.push(join(&name, &e.name));
            }
            for x in &m.extension {
                symbols.push(join(&name, &x.name));
                exts.push((x.extendee.trim_start_matches('.').to_string(), x.number, join(&name, &x.name)));
            }
            symbols.push(name);
        }
        for m in &f.message_type {
            message(&f.package, m, &mut symbols, &mut exts);
        }
        for e in &f.enum_type {
            symbols.push(join(&f.package, &e.name));
        }
        for s in &f.service {
            let svc = join(&f.package, &s.name);
            for m in &s.method {
                symbols.push(join(&svc, &m.name));
            }
            symbols.push(svc);
        }
        for x in &f.extension {
            symbols.push(join(&f.package, &x.name));
            exts.push((x.extendee.trim_start_matches('.').to_string(), x.number, join(&f.package, &x.name)));
        }
        for s in symbols {
            reg.symbols.insert(s, file.clone());
        }
        for (extendee, number, _) in exts {
            reg.extensions.insert((extendee, number), file.clone());
        }
        reg.files.insert(file, (bytes, f.dependency));
    }
    Ok(())
}

/// Registers every file of an encoded `FileDescriptorSet` (e.g. from
/// `courier-stubgen --descriptor_set_out` or protox).
pub fn register_file_descriptor_set(set: &[u8]) -> Result<(), ReflectionError> {
    register_file_descriptors(decode_set(set)?)
}

/// True once a file of this name is registered.
pub fn is_registered(file_name: &str) -> bool {
    registry().read().unwrap_or_else(|e| e.into_inner()).files.contains_key(file_name)
}

// grpc/reflection/v1/reflection.proto (v1alpha: the same messages).
#[derive(Clone, PartialEq, Message)]
struct Request {
    #[prost(string, tag = "1")]
    host: String,
    #[prost(oneof = "Req", tags = "3, 4, 5, 6, 7")]
    message_request: Option<Req>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Req {
    #[prost(string, tag = "3")]
    FileByFilename(String),
    #[prost(string, tag = "4")]
    FileContainingSymbol(String),
    #[prost(message, tag = "5")]
    FileContainingExtension(ExtensionRequest),
    #[prost(string, tag = "6")]
    AllExtensionNumbersOfType(String),
    #[prost(string, tag = "7")]
    ListServices(String),
}

#[derive(Clone, PartialEq, Message)]
struct ExtensionRequest {
    #[prost(string, tag = "1")]
    containing_type: String,
    #[prost(int32, tag = "2")]
    extension_number: i32,
}

#[derive(Clone, PartialEq, Message)]
struct Response {
    #[prost(string, tag = "1")]
    valid_host: String,
    #[prost(message, optional, tag = "2")]
    original_request: Option<Request>,
    #[prost(oneof = "Resp", tags = "4, 5, 6, 7")]
    message_response: Option<Resp>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
#[allow(clippy::enum_variant_names)] // the proto's names
enum Resp {
    #[prost(message, tag = "4")]
    FileDescriptorResponse(FileDescriptorResponse),
    #[prost(message, tag = "5")]
    AllExtensionNumbersResponse(ExtensionNumberResponse),
    #[prost(message, tag = "6")]
    ListServicesResponse(ListServiceResponse),
    #[prost(message, tag = "7")]
    ErrorResponse(ErrorResponse),
}

#[derive(Clone, PartialEq, Message)]
struct FileDescriptorResponse {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    file_descriptor_proto: Vec<Bytes>,
}

#[derive(Clone, PartialEq, Message)]
struct ExtensionNumberResponse {
    #[prost(string, tag = "1")]
    base_type_name: String,
    #[prost(int32, repeated, tag = "2")]
    extension_number: Vec<i32>,
}

#[derive(Clone, PartialEq, Message)]
struct ListServiceResponse {
    #[prost(message, repeated, tag = "1")]
    service: Vec<ServiceResponse>,
}

#[derive(Clone, PartialEq, Message)]
struct ServiceResponse {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, Message)]
struct ErrorResponse {
    #[prost(int32, tag = "1")]
    error_code: i32,
    #[prost(string, tag = "2")]
    error_message: String,
}

const NOT_FOUND: i32 = 5;
const INVALID_ARGUMENT: i32 = 3;

/// `file` and everything it imports (transitively), `file` first.
fn with_dependencies(reg: &Registry, file: &str) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![file.to_string()];
    while let Some(f) = stack.pop() {
        if !seen.insert(f.clone()) {
            continue;
        }
        if let Some((bytes, deps)) = reg.files.get(&f) {
            out.push(bytes.clone());
            stack.extend(deps.iter().rev().cloned());
        }
    }
    out
}

fn answer(req: &Request, services: &HealthReporter) -> Resp {
    let reg = registry().read().unwrap_or_else(|e| e.into_inner());
    let error = |code: i32, msg: String| Resp::ErrorResponse(ErrorResponse { error_code: code, error_message: msg });
    let files = |name: &str| Resp::FileDescriptorResponse(FileDescriptorResponse { file_descriptor_proto: with_dependencies(&reg, name) });
    match &req.message_request {
        None => error(INVALID_ARGUMENT, "empty reflection request".into()),
        Some(Req::ListServices(_)) => {
            let mut names: BTreeSet<String> = services.served_services().into_iter().collect();
            names.insert(HEALTH_SERVICE.to_string());
            names.insert(REFLECTION_V1.to_string());
            names.insert(REFLECTION_V1ALPHA.to_string());
            Resp::ListServicesResponse(ListServiceResponse { service: names.into_iter().map(|name| ServiceResponse { name }).collect() })
        }
        Some(Req::FileByFilename(name)) => {
            if reg.files.contains_key(name) {
                files(name)
            } else {
                error(NOT_FOUND, format!("file {name:?} not found"))
            }
        }
        Some(Req::FileContainingSymbol(sym)) => {
            let sym = sym.trim_start_matches('.');
            match reg.symbols.get(sym) {
                Some(f) => files(f),
                None => error(NOT_FOUND, format!("symbol {sym:?} not found")),
            }
        }
        Some(Req::FileContainingExtension(x)) => {
            match reg.extensions.get(&(x.containing_type.trim_start_matches('.').to_string(), x.extension_number)) {
                Some(f) => files(f),
                None => error(NOT_FOUND, format!("extension {} of {:?} not found", x.extension_number, x.containing_type)),
            }
        }
        Some(Req::AllExtensionNumbersOfType(t)) => {
            let t = t.trim_start_matches('.');
            if !reg.symbols.contains_key(t) {
                return error(NOT_FOUND, format!("type {t:?} not found"));
            }
            let mut numbers: Vec<i32> = reg.extensions.keys().filter(|(e, _)| e == t).map(|(_, n)| *n).collect();
            numbers.sort_unstable();
            Resp::AllExtensionNumbersResponse(ExtensionNumberResponse { base_type_name: t.to_string(), extension_number: numbers })
        }
    }
}

/// The method table entries of both reflection services.
pub(crate) fn methods(services: HealthReporter) -> Vec<(MethodDesc, Handler)> {
    let handler = Handler::bidi_streaming(move |_ctx, mut requests, tx| {
        let services = services.clone();
        async move {
            while let Some(msg) = requests.message().await? {
                let req = Request::decode(msg).map_err(|e| Status::invalid_argument(format!("bad ServerReflectionRequest: {e}")))?;
                let resp = Response { valid_host: req.host.clone(), message_response: Some(answer(&req, &services)), original_request: Some(req) };
                tx.send(Bytes::from(resp.encode_to_vec())).await?;
            }
            Ok(())
        }
    });
    [REFLECTION_V1, REFLECTION_V1ALPHA]
        .into_iter()
        .map(|svc| {
            // Reflection streams live as long as the client keeps them: no deadline.
            let _ = Duration::ZERO;
            let desc = MethodDesc::new(&format!("/{svc}/ServerReflectionInfo"), MethodKind::BidiStreaming, DeadlinePolicy::NoDeadline)
                .expect("static method path is valid");
            (desc, handler.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, package: &str, deps: &[&str], msg: &str, svc: Option<&str>) -> Bytes {
        let f = FileProto {
            name: name.into(),
            package: package.into(),
            dependency: deps.iter().map(|d| d.to_string()).collect(),
            message_type: vec![MessageProto {
                name: msg.into(),
                nested_type: vec![MessageProto { name: "Inner".into(), ..Default::default() }],
                ..Default::default()
            }],
            enum_type: vec![NamedProto { name: "Color".into() }],
            service: svc.map(|s| ServiceProto { name: s.into(), method: vec![NamedProto { name: "Get".into() }] }).into_iter().collect(),
            extension: vec![],
        };
        Bytes::from(f.encode_to_vec())
    }

    fn ask(r: Req) -> Resp {
        answer(&Request { host: String::new(), message_request: Some(r) }, &HealthReporter::new())
    }

    fn names(r: Resp) -> Vec<String> {
        match r {
            Resp::FileDescriptorResponse(f) => f.file_descriptor_proto.iter().map(|b| FileProto::decode(b.clone()).unwrap().name).collect(),
            other => panic!("not files: {other:?}"),
        }
    }

    #[test]
    fn symbols_resolve_to_their_file_with_dependencies() {
        register_file_descriptors([file("refl/a.proto", "refl.a", &[], "A", None), file("refl/b.proto", "refl.b", &["refl/a.proto"], "B", Some("Svc"))])
            .unwrap();
        assert_eq!(names(ask(Req::FileContainingSymbol("refl.b.Svc".into()))), ["refl/b.proto", "refl/a.proto"]);
        assert_eq!(names(ask(Req::FileContainingSymbol("refl.b.Svc.Get".into()))), ["refl/b.proto", "refl/a.proto"]);
        assert_eq!(names(ask(Req::FileContainingSymbol(".refl.a.A.Inner".into()))), ["refl/a.proto"]);
        assert_eq!(names(ask(Req::FileContainingSymbol("refl.a.Color".into()))), ["refl/a.proto"]);
        assert_eq!(names(ask(Req::FileByFilename("refl/a.proto".into()))), ["refl/a.proto"]);
        assert!(matches!(ask(Req::FileByFilename("nope.proto".into())), Resp::ErrorResponse(ErrorResponse { error_code: 5, .. })));
        assert!(matches!(ask(Req::FileContainingSymbol("refl.Nope".into())), Resp::ErrorResponse(ErrorResponse { error_code: 5, .. })));
        // The same file again is fine; different contents under the same name are refused.
        register_file_descriptors([file("refl/a.proto", "refl.a", &[], "A", None)]).unwrap();
        assert!(matches!(register_file_descriptors([file("refl/a.proto", "refl.a", &[], "Z", None)]), Err(ReflectionError::Conflict(_))));
        assert!(register_file_descriptors([Bytes::from_static(b"\xff\xff")]).is_err());
    }

    #[test]
    fn list_services_names_the_built_in_ones() {
        match ask(Req::ListServices(String::new())) {
            Resp::ListServicesResponse(l) => {
                let names: Vec<String> = l.service.into_iter().map(|s| s.name).collect();
                assert!(names.contains(&REFLECTION_V1.to_string()) && names.contains(&HEALTH_SERVICE.to_string()), "{names:?}");
            }
            other => panic!("{other:?}"),
        }
    }
}
