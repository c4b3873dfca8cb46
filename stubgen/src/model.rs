//! Courier's proto options, read and checked: per service and method the
//! deadline and the app-error enum, per `rpc_error` enum the gRPC code of each
//! value. Deadlines are mandatory: a method without one is an error naming its
//! file, line and name, and saying how to give one.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use prost_reflect::{DescriptorPool, EnumDescriptor, ExtensionDescriptor, FileDescriptor, MethodDescriptor, ServiceDescriptor, Value};

use crate::compile::{error_at, Compiled, Error};

/// gRPC status code names, by number.
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// A method's default deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    /// Calls without an earlier deadline of their own get this one.
    Default(Duration),
    /// No deadline unless the caller sets one.
    NoDeadline,
}

impl Deadline {
    /// Parses `500ms`, `5s`, `2m`, `1.5s` or `none`.
    pub fn parse(s: &str) -> Result<Deadline, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("none") {
            return Ok(Deadline::NoDeadline);
        }
        let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
            Some(i) => (&s[..i], s[i..].trim()),
            None => (s, ""),
        };
        let n: f64 = num.parse().map_err(|_| format!("bad deadline {s:?}: expected e.g. 500ms, 5s, 2m or none"))?;
        let ms = match unit {
            "ms" => n,
            "s" => n * 1000.0,
            "m" | "min" => n * 60_000.0,
            "h" => n * 3_600_000.0,
            _ => return Err(format!("bad deadline {s:?}: the unit must be ms, s, m or h (or the word none)")),
        };
        if ms.is_nan() || ms < 1.0 || !ms.is_finite() || ms > 1e13 {
            return Err(format!("bad deadline {s:?}: must be at least 1ms"));
        }
        Ok(Deadline::Default(Duration::from_millis(ms.round() as u64)))
    }
}

/// Deadlines given outside the proto files (for protos a team cannot edit):
/// by service (`pkg.Service`) or method (`pkg.Service/Method`), from the
/// command line (`--deadline`) or an options file (`--courier_options`).
#[derive(Clone, Debug, Default)]
pub struct DeadlineOverrides {
    /// Key -> (deadline, where it was given).
    entries: BTreeMap<String, (Deadline, String)>,
}

impl DeadlineOverrides {
    /// Adds `KEY=DURATION` (a `--deadline` flag). Later entries win.
    pub fn add_flag(&mut self, flag: &str) -> Result<(), Error> {
        let (k, v) = flag.split_once('=').ok_or_else(|| {
            Error::new(format!("--deadline {flag:?}: expected SERVICE=DURATION or SERVICE/METHOD=DURATION (e.g. pkg.Svc=5s)"))
        })?;
        let d = Deadline::parse(v).map_err(|e| Error::new(format!("--deadline {flag:?}: {e}")))?;
        self.insert(k.trim(), d, format!("--deadline {flag}"));
        Ok(())
    }

    /// Reads an options file: one `SERVICE[/METHOD] = DURATION` per line,
    /// `#` comments. Errors name the file and line.
    pub fn add_file(&mut self, path: &Path) -> Result<(), Vec<Error>> {
        let name = path.to_string_lossy().into_owned();
        let text = std::fs::read_to_string(path).map_err(|e| vec![Error::at(&name, None, None, format!("cannot read options file: {e}"))])?;
        let mut errors = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = |msg: String| Error::at(&name, Some(i + 1), Some(1), msg);
            let Some((k, v)) = line.split_once('=') else {
                errors.push(at(format!("expected `SERVICE[/METHOD] = DURATION`, got {line:?}")));
                continue;
            };
            let key = k.trim();
            if key.is_empty() || key.contains(char::is_whitespace) {
                errors.push(at(format!("bad service or method name {key:?}")));
                continue;
            }
            match Deadline::parse(v) {
                Ok(d) => self.insert(key, d, format!("{name}:{}", i + 1)),
                Err(e) => errors.push(at(e)),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn insert(&mut self, key: &str, d: Deadline, origin: String) {
        let key = key.trim_start_matches('.').to_string();
        self.entries.insert(key, (d, origin));
    }

    fn get(&self, key: &str) -> Option<&(Deadline, String)> {
        self.entries.get(key)
    }

    /// Adds every entry of `other` (which wins over entries already here).
    pub fn extend(&mut self, other: DeadlineOverrides) {
        self.entries.extend(other.entries);
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keys that matched no service or method of the input.
    fn unused(&self, used: &std::collections::HashSet<String>) -> Vec<(String, String)> {
        self.entries.iter().filter(|(k, _)| !used.contains(*k)).map(|(k, (_, o))| (k.clone(), o.clone())).collect()
    }
}

/// An enum marked `(courier.rpc_error)`, with each value's gRPC code.
#[derive(Clone, Debug)]
pub struct AppErrorEnum {
    pub desc: EnumDescriptor,
    /// (value number, value name, gRPC code name); unmapped values are absent.
    pub codes: Vec<(i32, String, &'static str)>,
}

impl AppErrorEnum {
    pub fn full_name(&self) -> &str {
        self.desc.full_name()
    }
}

/// One method with its resolved Courier options.
#[derive(Clone, Debug)]
pub struct MethodModel {
    pub desc: MethodDescriptor,
    pub deadline: Deadline,
    /// Full name of the method's app-error enum.
    pub app_error: Option<String>,
}

/// One service with its methods.
#[derive(Clone, Debug)]
pub struct ServiceModel {
    pub desc: ServiceDescriptor,
    pub methods: Vec<MethodModel>,
}

/// Courier's view of the files to generate.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// Services by file name.
    pub services: BTreeMap<String, Vec<ServiceModel>>,
    /// `rpc_error` enums of every file (imports too), by full name.
    pub app_errors: BTreeMap<String, AppErrorEnum>,
}

impl Model {
    pub fn services_of(&self, file: &str) -> &[ServiceModel] {
        self.services.get(file).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The `rpc_error` enums declared in `file`.
    pub fn app_errors_of<'a>(&'a self, file: &'a str) -> impl Iterator<Item = &'a AppErrorEnum> + 'a {
        self.app_errors.values().filter(move |e| e.desc.parent_file().name() == file)
    }

    pub fn service(&self, full_name: &str) -> Option<&ServiceModel> {
        self.services.values().flatten().find(|s| s.desc.full_name() == full_name)
    }
}

struct Exts {
    service_deadline: Option<ExtensionDescriptor>,
    service_app_error: Option<ExtensionDescriptor>,
    method_deadline: Option<ExtensionDescriptor>,
    method_no_deadline: Option<ExtensionDescriptor>,
    method_app_error: Option<ExtensionDescriptor>,
    rpc_error: Option<ExtensionDescriptor>,
    grpc_code: Option<ExtensionDescriptor>,
}

impl Exts {
    fn of(pool: &DescriptorPool) -> Exts {
        let g = |n: &str| pool.get_extension_by_name(&format!("courier.{n}"));
        Exts {
            service_deadline: g("service_default_deadline_ms"),
            service_app_error: g("service_app_error"),
            method_deadline: g("method_default_deadline_ms"),
            method_no_deadline: g("method_no_deadline"),
            method_app_error: g("method_app_error"),
            rpc_error: g("rpc_error"),
            grpc_code: g("grpc_code"),
        }
    }
}

fn ext_value(opts: &prost_reflect::DynamicMessage, ext: &Option<ExtensionDescriptor>) -> Option<Value> {
    let ext = ext.as_ref()?;
    if opts.has_extension(ext) {
        Some(opts.get_extension(ext).into_owned())
    } else {
        None
    }
}

/// Reads and checks the Courier options of `compiled` (errors: every problem found).
pub fn build(compiled: &Compiled, overrides: &DeadlineOverrides) -> Result<Model, Vec<Error>> {
    let pool = &compiled.pool;
    let exts = Exts::of(pool);
    let mut errors = Vec::new();
    let mut model = Model::default();

    // App-error enums, in every file (a method may name an imported one).
    for file in pool.files() {
        collect_enums(&file, &exts, &mut model, &mut errors);
    }

    let mut used = std::collections::HashSet::new();
    for file in compiled.files() {
        let mut services = Vec::new();
        let file_enums: Vec<String> = model.app_errors_of(file.name()).map(|e| e.full_name().to_string()).collect();
        for svc in file.services() {
            let sopts = svc.options();
            let svc_deadline = match ext_value(&sopts, &exts.service_deadline) {
                Some(v) => match v.as_u64() {
                    Some(0) | None => {
                        errors.push(error_at(&file, svc.path(), format!("(courier.service_default_deadline_ms) of {} must be positive", svc.full_name())));
                        None
                    }
                    Some(ms) => Some((Deadline::Default(Duration::from_millis(ms)), "service option".to_string())),
                },
                None => None,
            };
            let svc_app_error = ext_value(&sopts, &exts.service_app_error).and_then(|v| v.as_str().map(str::to_string));
            let mut methods = Vec::new();
            for m in svc.methods() {
                let key_svc = svc.full_name().to_string();
                let key_m = format!("{}/{}", svc.full_name(), m.name());
                let mopts = m.options();
                let mut in_file: Option<Deadline> = None;
                if let Some(v) = ext_value(&mopts, &exts.method_deadline) {
                    match v.as_u64() {
                        Some(0) | None => errors.push(error_at(&file, m.path(), format!("(courier.method_default_deadline_ms) of {} must be positive", m.full_name()))),
                        Some(ms) => in_file = Some(Deadline::Default(Duration::from_millis(ms))),
                    }
                }
                if ext_value(&mopts, &exts.method_no_deadline).and_then(|v| v.as_bool()) == Some(true) {
                    if in_file.is_some() {
                        errors.push(error_at(
                            &file,
                            m.path(),
                            format!("method {} sets both (courier.method_default_deadline_ms) and (courier.method_no_deadline): choose one", m.full_name()),
                        ));
                    }
                    in_file = Some(Deadline::NoDeadline);
                }
                // Precedence: out-of-file method, in-file method, out-of-file service, in-file service.
                let deadline = if let Some((d, _)) = overrides.get(&key_m) {
                    used.insert(key_m.clone());
                    Some(*d)
                } else if let Some(d) = in_file {
                    Some(d)
                } else if let Some((d, _)) = overrides.get(&key_svc) {
                    used.insert(key_svc.clone());
                    Some(*d)
                } else {
                    svc_deadline.as_ref().map(|(d, _)| *d)
                };
                if overrides.get(&key_svc).is_some() {
                    used.insert(key_svc.clone());
                }
                let Some(deadline) = deadline else {
                    errors.push(missing_deadline(&file, &svc, &m));
                    continue;
                };
                let app_error = resolve_app_error(&file, &svc, &m, &mopts, &exts, svc_app_error.as_deref(), &file_enums, &model, &mut errors);
                methods.push(MethodModel { desc: m, deadline, app_error });
            }
            services.push(ServiceModel { desc: svc, methods });
        }
        model.services.insert(file.name().to_string(), services);
    }
    for (key, origin) in overrides.unused(&used) {
        errors.push(Error::new(format!("deadline for {key:?} ({origin}) matches no service or method of the input")));
    }
    if errors.is_empty() {
        Ok(model)
    } else {
        Err(errors)
    }
}

fn missing_deadline(file: &FileDescriptor, svc: &ServiceDescriptor, m: &MethodDescriptor) -> Error {
    let svc_name = svc.full_name();
    error_at(file, m.path(), format!("method {svc_name}.{} has no deadline (Courier deadlines are mandatory)", m.name())).with_help(format!(
        "set `option (courier.method_default_deadline_ms) = N;` on the method, `option (courier.service_default_deadline_ms) = N;` \
         on the service, or `option (courier.method_no_deadline) = true;` (import \"courier/options.proto\"). \
         For a proto you cannot edit, give it outside the file: `--deadline={svc_name}=5s` or `--deadline={svc_name}/{m}=500ms` \
         (`none` for no deadline) on the command line, or a line `{svc_name} = 5s` in a file passed with `--courier_options=FILE`",
        m = m.name()
    ))
}

fn collect_enums(file: &FileDescriptor, exts: &Exts, model: &mut Model, errors: &mut Vec<Error>) {
    let mut enums: Vec<EnumDescriptor> = file.enums().collect();
    let mut stack: Vec<prost_reflect::MessageDescriptor> = file.messages().collect();
    while let Some(m) = stack.pop() {
        enums.extend(m.child_enums());
        stack.extend(m.child_messages());
    }
    for e in enums {
        let is_rpc_error = ext_value(&e.options(), &exts.rpc_error).and_then(|v| v.as_bool()) == Some(true);
        let mut codes = Vec::new();
        for v in e.values() {
            let Some(code) = ext_value(&v.options(), &exts.grpc_code) else { continue };
            let code = code.as_str().unwrap_or_default().to_string();
            if !is_rpc_error {
                errors.push(error_at(
                    file,
                    v.path(),
                    format!("(courier.grpc_code) on {} but enum {} is not marked `option (courier.rpc_error) = true;`", v.name(), e.full_name()),
                ));
                continue;
            }
            match GRPC_CODES.iter().position(|c| *c == code) {
                Some(0) => errors.push(error_at(file, v.path(), format!("(courier.grpc_code) of {}.{} is OK: an app error needs an error code", e.full_name(), v.name()))),
                Some(i) => codes.push((v.number(), v.name().to_string(), GRPC_CODES[i])),
                None => errors.push(
                    error_at(file, v.path(), format!("unknown gRPC code {code:?} in (courier.grpc_code) of {}.{}", e.full_name(), v.name()))
                        .with_help(format!("use one of {}", GRPC_CODES[1..].join(", "))),
                ),
            }
        }
        if is_rpc_error {
            model.app_errors.insert(e.full_name().to_string(), AppErrorEnum { desc: e, codes });
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn resolve_app_error(
    file: &FileDescriptor,
    svc: &ServiceDescriptor,
    m: &MethodDescriptor,
    mopts: &prost_reflect::DynamicMessage,
    exts: &Exts,
    svc_app_error: Option<&str>,
    file_enums: &[String],
    model: &Model,
    errors: &mut Vec<Error>,
) -> Option<String> {
    let (named, path): (Option<String>, &[i32]) = match ext_value(mopts, &exts.method_app_error).and_then(|v| v.as_str().map(str::to_string)) {
        Some(n) => (Some(n), m.path()),
        None => (svc_app_error.map(str::to_string), svc.path()),
    };
    if let Some(name) = named {
        let name = name.trim_start_matches('.');
        let pkg = file.package_name();
        let candidates = [format!("{pkg}.{name}"), name.to_string()];
        for c in &candidates {
            if model.app_errors.contains_key(c) {
                return Some(c.clone());
            }
        }
        let exists = candidates.iter().any(|c| file.parent_pool().get_enum_by_name(c).is_some());
        let msg = if exists {
            format!("app-error enum {name:?} of {} is not marked `option (courier.rpc_error) = true;`", m.full_name())
        } else {
            format!("unknown app-error enum {name:?} for {}", m.full_name())
        };
        errors.push(error_at(file, path, msg));
        return None;
    }
    match file_enums {
        [] => None,
        [one] => Some(one.clone()),
        many => {
            errors.push(
                error_at(file, m.path(), format!("method {} could use any of the rpc_error enums {}", m.full_name(), many.join(", ")))
                    .with_help("name one with `option (courier.service_app_error) = \"Enum\";` on the service or `option (courier.method_app_error) = \"Enum\";` on the method"),
            );
            None
        }
    }
}
