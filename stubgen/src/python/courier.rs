//! `x_courier.py`: per service a servicer base class (sync and asyncio), a
//! client (sync and asyncio) and the method table with deadlines and app-error
//! enums; per `rpc_error` enum its `courier.AppErrorEnum` and a typed
//! exception. Everything has an explicit `ctx` and passes `mypy --strict`.

use std::collections::BTreeSet;
use std::fmt::Write;

use prost_reflect::{EnumDescriptor, FileDescriptor, MessageDescriptor};

use super::{module_alias, module_name};
use crate::compile::Compiled;
use crate::model::{AppErrorEnum, Deadline, MethodModel, Model, ServiceModel};

/// `LoadBalancerStats` -> `LOAD_BALANCER_STATS`.
pub fn upper_snake(name: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = name.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == '.' || c == '_' {
            if !out.ends_with('_') {
                out.push('_');
            }
            continue;
        }
        if c.is_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if (prev.is_lowercase() || prev.is_ascii_digit() || (prev.is_uppercase() && next_lower)) && !out.ends_with('_') {
                out.push('_');
            }
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The name of a service's method table: `ECHO_SERVICE`, `TEST_SERVICE`.
pub fn service_table_name(svc: &str) -> String {
    let u = upper_snake(svc);
    if u.ends_with("_SERVICE") || u == "SERVICE" {
        u
    } else {
        format!("{u}_SERVICE")
    }
}

/// Prefix of a service's method constants: `ECHO_`, `TEST_SERVICE_`.
fn method_prefix(svc: &str) -> String {
    format!("{}_", upper_snake(svc))
}

/// The Python name of an enum or message relative to its file (`Outer.Inner`).
fn relative_name(full: &str, file: &FileDescriptor) -> String {
    let pkg = file.package_name();
    if pkg.is_empty() {
        full.to_string()
    } else {
        full[pkg.len() + 1..].to_string()
    }
}

/// The AppErrorEnum constant of an `rpc_error` enum: `ECHO_ERROR`.
pub fn enum_const(e: &EnumDescriptor) -> String {
    upper_snake(&relative_name(e.full_name(), &e.parent_file()))
}

/// The typed exception of an `rpc_error` enum: `EchoError` -> `EchoAppError`.
pub fn exception_name(e: &EnumDescriptor) -> String {
    let rel = relative_name(e.full_name(), &e.parent_file()).replace('.', "");
    let base = rel.strip_suffix("Error").filter(|b| !b.is_empty()).unwrap_or(&rel);
    format!("{base}AppError")
}

struct Ctx<'a> {
    compiled: &'a Compiled,
    file: &'a FileDescriptor,
    /// Files whose `_pb2` module is imported.
    pb2: BTreeSet<String>,
    /// Files whose `_courier` module is imported (app errors declared elsewhere).
    courier: BTreeSet<String>,
}

impl Ctx<'_> {
    fn message(&mut self, m: &MessageDescriptor) -> String {
        let f = m.parent_file();
        self.pb2.insert(f.name().to_string());
        format!("{}.{}", module_alias(f.name()), relative_name(m.full_name(), &f))
    }

    fn enum_value_type(&mut self, e: &EnumDescriptor) -> String {
        let f = e.parent_file();
        self.pb2.insert(f.name().to_string());
        format!("{}.{}.ValueType", module_alias(f.name()), relative_name(e.full_name(), &f))
    }

    /// The Python expression of an app-error enum's AppErrorEnum constant.
    fn app_error(&mut self, model: &Model, full: &str) -> String {
        let e = &model.app_errors[full];
        let f = e.desc.parent_file();
        if f.name() == self.file.name() {
            enum_const(&e.desc)
        } else {
            self.courier.insert(f.name().to_string());
            format!("{}.{}", courier_alias(f.name()), enum_const(&e.desc))
        }
    }

    fn comment(&self, path: &[i32]) -> Option<String> {
        let info = self.file.file_descriptor_proto().source_code_info.as_ref()?;
        let loc = info.location.iter().find(|l| l.path == path)?;
        let text = loc.leading_comments.as_deref().or(loc.trailing_comments.as_deref())?.trim();
        if text.is_empty() {
            return None;
        }
        let lines: Vec<&str> = text.lines().map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end()).collect();
        Some(lines.join("\n").replace('\\', "\\\\").replace("\"\"\"", "\\\"\\\"\\\""))
    }
}

fn courier_module(file: &str) -> String {
    module_name(file).strip_suffix("_pb2").map(|m| format!("{m}_courier")).unwrap_or_default()
}

fn courier_alias(file: &str) -> String {
    courier_module(file).replace('_', "__").replace('.', "_dot_")
}

fn docstring(out: &mut String, indent: &str, text: &str) {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    let rest: Vec<&str> = lines.collect();
    let end = if first.ends_with('"') { " " } else { "" };
    if rest.is_empty() {
        let _ = writeln!(out, "{indent}\"\"\"{first}{end}\"\"\"");
    } else {
        let _ = writeln!(out, "{indent}\"\"\"{first}");
        for l in rest {
            if l.is_empty() {
                out.push('\n');
            } else {
                let _ = writeln!(out, "{indent}{l}");
            }
        }
        let _ = writeln!(out, "{indent}\"\"\"");
    }
}

fn py_seconds(d: &Deadline) -> String {
    match d {
        Deadline::NoDeadline => "courier.NO_DEADLINE".to_string(),
        Deadline::Default(d) => {
            let s = d.as_secs_f64();
            format!("{s:?}")
        }
    }
}

fn kind(m: &MethodModel) -> &'static str {
    match (m.desc.is_client_streaming(), m.desc.is_server_streaming()) {
        (false, false) => "UNARY",
        (false, true) => "SERVER_STREAMING",
        (true, false) => "CLIENT_STREAMING",
        (true, true) => "BIDI_STREAMING",
    }
}

fn write_app_error(out: &mut String, cx: &mut Ctx<'_>, e: &AppErrorEnum) {
    let konst = enum_const(&e.desc);
    let exc = exception_name(&e.desc);
    let vt = cx.enum_value_type(&e.desc);
    let codes: Vec<String> = e.codes.iter().map(|(n, _, c)| format!("{n}: courier.StatusCode.{c}")).collect();
    let _ = writeln!(out, "{konst} = courier.AppErrorEnum(");
    let _ = writeln!(out, "    \"{}\",", e.full_name());
    let _ = writeln!(out, "    {{{}}},", codes.join(", "));
    let _ = writeln!(out, ")");
    let mapping: Vec<String> = e.codes.iter().map(|(_, name, c)| format!("{name}: {c}")).collect();
    let _ = writeln!(out, "\"\"\"`{}` (`rpc_error`): {}; other values are UNKNOWN.\"\"\"", e.full_name(), if mapping.is_empty() { "no gRPC codes".to_string() } else { mapping.join(", ") });
    out.push_str("\n\n");
    let _ = writeln!(out, "class {exc}(courier.AppError):");
    docstring(
        out,
        "    ",
        &format!(
            "An app error of `{}`.\n\nRaise it in a handler of a method that declares this enum; the caller gets the\nvalue's gRPC code and this exception back (with `received` set).",
            e.full_name()
        ),
    );
    out.push('\n');
    let _ = writeln!(out, "    enum: ClassVar[courier.AppErrorEnum] = {konst}");
    let _ = writeln!(out, "    value: {vt}");
    out.push('\n');
    let _ = writeln!(out, "    def __init__(");
    let _ = writeln!(out, "        self, value: {vt}, message: str = \"\", *, code: Optional[int] = None, received: bool = False");
    let _ = writeln!(out, "    ) -> None:");
    let _ = writeln!(out, "        super().__init__(value, message, code=code, received=received)");
    out.push_str("\n\n");
}

struct Sig {
    name: String,
    req: String,
    resp: String,
    cs: bool,
    ss: bool,
    konst: String,
    doc: Option<String>,
}

fn write_service(out: &mut String, cx: &mut Ctx<'_>, model: &Model, svc: &ServiceModel) {
    let full = svc.desc.full_name().to_string();
    let name = svc.desc.name().to_string();
    let table = service_table_name(&name);
    let prefix = method_prefix(&name);
    let svc_doc = cx.comment(svc.desc.path());
    let mut sigs = Vec::new();
    let _ = writeln!(out, "# {full}\n");
    for m in &svc.methods {
        let req = cx.message(&m.desc.input());
        let resp = cx.message(&m.desc.output());
        let konst = format!("{prefix}{}", upper_snake(m.desc.name()));
        let app = match &m.app_error {
            Some(e) => cx.app_error(model, e),
            None => "None".to_string(),
        };
        let _ = writeln!(out, "{konst}: courier.Method[{req}, {resp}] = courier.Method(");
        let _ = writeln!(out, "    \"{full}\",");
        let _ = writeln!(out, "    \"{}\",", m.desc.name());
        let _ = writeln!(out, "    courier.MethodKind.{},", kind(m));
        let _ = writeln!(out, "    {req},");
        let _ = writeln!(out, "    {resp},");
        let _ = writeln!(out, "    {},", py_seconds(&m.deadline));
        let _ = writeln!(out, "    {app},");
        let _ = writeln!(out, ")");
        let dl = match m.deadline {
            Deadline::NoDeadline => "no default deadline".to_string(),
            Deadline::Default(d) => format!("default deadline {}", human(d)),
        };
        let _ = writeln!(out, "\"\"\"`{full}/{}`: {}, {dl}.\"\"\"\n", m.desc.name(), kind(m).to_ascii_lowercase().replace('_', "-"));
        sigs.push(Sig {
            name: m.desc.name().to_string(),
            req,
            resp,
            cs: m.desc.is_client_streaming(),
            ss: m.desc.is_server_streaming(),
            konst,
            doc: cx.comment(m.desc.path()),
        });
    }
    let consts: Vec<&str> = sigs.iter().map(|s| s.konst.as_str()).collect();
    let _ = writeln!(out, "{table} = courier.Service(\"{full}\", ({}{}))", consts.join(", "), if consts.len() == 1 { "," } else { "" });
    let _ = writeln!(out, "\"\"\"The method table of `{full}`.\"\"\"\n\n");

    let unimpl = |out: &mut String, s: &Sig| {
        let _ = writeln!(out, "        courier.abort(courier.StatusCode.UNIMPLEMENTED, \"{full}/{} is not implemented\")", s.name);
    };
    let method_doc = |out: &mut String, s: &Sig| {
        if let Some(d) = &s.doc {
            docstring(out, "        ", d);
        }
    };

    // Sync servicer.
    let _ = writeln!(out, "class {name}Servicer:");
    let mut doc = format!("`{full}` with synchronous handlers: subclass, override, serve with\n`courier.Server.add_service(servicer)`. A method not overridden is UNIMPLEMENTED.");
    if let Some(d) = &svc_doc {
        doc = format!("{d}\n\n{doc}");
    }
    docstring(out, "    ", &doc);
    out.push('\n');
    let _ = writeln!(out, "    __courier_service__: ClassVar[courier.Service] = {table}");
    for s in &sigs {
        out.push('\n');
        let arg = if s.cs { format!("requests: Iterator[{}]", s.req) } else { format!("request: {}", s.req) };
        let ret = if s.ss { format!("Iterator[{}]", s.resp) } else { s.resp.clone() };
        let _ = writeln!(out, "    def {}(self, ctx: courier.Context, {arg}) -> {ret}:", s.name);
        method_doc(out, s);
        unimpl(out, s);
    }
    out.push_str("\n\n");

    // Async servicer.
    let _ = writeln!(out, "class Async{name}Servicer:");
    docstring(
        out,
        "    ",
        &format!("`{full}` with asyncio handlers: subclass, override, serve with\n`courier.aio.Server.add_service(servicer)`. Streaming replies are async generators."),
    );
    out.push('\n');
    let _ = writeln!(out, "    __courier_service__: ClassVar[courier.Service] = {table}");
    for s in &sigs {
        out.push('\n');
        let arg = if s.cs { format!("requests: AsyncIterator[{}]", s.req) } else { format!("request: {}", s.req) };
        if s.ss {
            let _ = writeln!(out, "    def {}(self, ctx: courier.Context, {arg}) -> AsyncIterator[{}]:", s.name, s.resp);
        } else {
            let _ = writeln!(out, "    async def {}(self, ctx: courier.Context, {arg}) -> {}:", s.name, s.resp);
        }
        method_doc(out, s);
        unimpl(out, s);
    }
    out.push_str("\n\n");

    // Sync client.
    let _ = writeln!(out, "class {name}Client:");
    docstring(out, "    ", &format!("Calls `{full}` over a `courier.Channel`; every call takes the caller's `ctx`."));
    out.push('\n');
    let _ = writeln!(out, "    def __init__(self, channel: courier.Channel) -> None:");
    let _ = writeln!(out, "        self.channel = channel");
    for s in &sigs {
        out.push('\n');
        let arg = if s.cs { format!("requests: Iterable[{}]", s.req) } else { format!("request: {}", s.req) };
        let ret = if s.ss { format!("courier.ReplyIterator[{}]", s.resp) } else { s.resp.clone() };
        let call = match (s.cs, s.ss) {
            (false, false) => "unary",
            (false, true) => "server_streaming",
            (true, false) => "client_streaming",
            (true, true) => "bidi_streaming",
        };
        let _ = writeln!(out, "    def {}(", s.name);
        let _ = writeln!(out, "        self, ctx: courier.Context, {arg}, *, metadata: Optional[courier.Metadata] = None");
        let _ = writeln!(out, "    ) -> {ret}:");
        method_doc(out, s);
        let _ = writeln!(out, "        return self.channel.{call}(ctx, {}, {}, metadata=metadata)", s.konst, if s.cs { "requests" } else { "request" });
    }
    out.push_str("\n\n");

    // Async client.
    let _ = writeln!(out, "class Async{name}Client:");
    docstring(out, "    ", &format!("Calls `{full}` over a `courier.aio.Channel` (asyncio)."));
    out.push('\n');
    let _ = writeln!(out, "    def __init__(self, channel: courier.aio.Channel) -> None:");
    let _ = writeln!(out, "        self.channel = channel");
    for s in &sigs {
        out.push('\n');
        let arg = if s.cs {
            format!("requests: Union[AsyncIterable[{0}], Iterable[{0}]]", s.req)
        } else {
            format!("request: {}", s.req)
        };
        let call = match (s.cs, s.ss) {
            (false, false) => "unary",
            (false, true) => "server_streaming",
            (true, false) => "client_streaming",
            (true, true) => "bidi_streaming",
        };
        let what = if s.cs { "requests" } else { "request" };
        if s.ss {
            let _ = writeln!(out, "    def {}(", s.name);
            let _ = writeln!(out, "        self, ctx: courier.Context, {arg}, *, metadata: Optional[courier.Metadata] = None");
            let _ = writeln!(out, "    ) -> courier.aio.AsyncReplyIterator[{}]:", s.resp);
            method_doc(out, s);
            let _ = writeln!(out, "        return self.channel.{call}(ctx, {}, {what}, metadata=metadata)", s.konst);
        } else {
            let _ = writeln!(out, "    async def {}(", s.name);
            let _ = writeln!(out, "        self, ctx: courier.Context, {arg}, *, metadata: Optional[courier.Metadata] = None");
            let _ = writeln!(out, "    ) -> {}:", s.resp);
            method_doc(out, s);
            let _ = writeln!(out, "        return await self.channel.{call}(ctx, {}, {what}, metadata=metadata)", s.konst);
        }
    }
    out.push_str("\n\n");
}

fn human(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The `_courier.py` module of `file`.
pub fn generate(compiled: &Compiled, model: &Model, file: &FileDescriptor) -> String {
    let mut cx = Ctx { compiled, file, pb2: BTreeSet::new(), courier: BTreeSet::new() };
    cx.pb2.insert(file.name().to_string());
    let mut body = String::new();
    let enums: Vec<AppErrorEnum> = model.app_errors_of(file.name()).cloned().collect();
    if !enums.is_empty() {
        body.push_str("# App errors.\n\n");
        for e in &enums {
            write_app_error(&mut body, &mut cx, e);
        }
    }
    for svc in model.services_of(file.name()) {
        write_service(&mut body, &mut cx, model, svc);
    }
    let _ = cx.compiled;

    let mut s = String::new();
    s.push_str("# -*- coding: utf-8 -*-\n");
    let _ = writeln!(s, "# Generated by courier-stubgen from {}.  DO NOT EDIT!", file.name());
    let mut doc = format!("Courier stubs of `{}`", file.name());
    let svcs: Vec<&str> = model.services_of(file.name()).iter().map(|s| s.desc.name()).collect();
    if !svcs.is_empty() {
        let _ = write!(doc, ": servicers, clients and method tables of {}", svcs.join(", "));
    }
    doc.push('.');
    docstring(&mut s, "", &doc);
    s.push('\n');
    s.push_str("from __future__ import annotations\n\n");
    s.push_str("from typing import AsyncIterable, AsyncIterator, ClassVar, Iterable, Iterator, Optional, Union  # noqa: F401\n\n");
    s.push_str("import courier\n");
    s.push_str("import courier.aio\n");
    for f in &cx.pb2 {
        let module = module_name(f);
        let alias = module_alias(f);
        match module.rfind('.') {
            Some(i) => {
                let _ = writeln!(s, "from {} import {} as {alias}", &module[..i], &module[i + 1..]);
            }
            None => {
                let _ = writeln!(s, "import {module} as {alias}");
            }
        }
    }
    for f in &cx.courier {
        let module = courier_module(f);
        let alias = courier_alias(f);
        match module.rfind('.') {
            Some(i) => {
                let _ = writeln!(s, "from {} import {} as {alias}", &module[..i], &module[i + 1..]);
            }
            None => {
                let _ = writeln!(s, "import {module} as {alias}");
            }
        }
    }
    s.push('\n');
    let _ = writeln!(s, "# Server reflection: this file's descriptors (and their imports).");
    let _ = writeln!(s, "courier.register_descriptor({}.DESCRIPTOR)\n\n", module_alias(file.name()));
    s.push_str(&body);
    while s.ends_with("\n\n") {
        s.pop();
    }
    s
}
