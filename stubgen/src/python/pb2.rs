//! `x_pb2.py`, written the way protoc's Python generator writes it: the
//! serialized `FileDescriptorProto` (custom options kept) and `_builder` calls,
//! plus the option and offset fix-ups for the pure-Python runtime.

use std::fmt::Write;

use prost_reflect::FileDescriptor;

use super::{module_alias, module_name, GENCODE_VERSION};
use crate::compile::Compiled;
use crate::wire;

/// An encoded descriptor taken apart: name, bytes, options, children.
struct Raw<'a> {
    name: String,
    bytes: &'a [u8],
    options: Option<&'a [u8]>,
}

fn raw<'a>(bytes: &'a [u8], options_field: u32) -> Raw<'a> {
    let fs = wire::fields(bytes).unwrap_or_default();
    let name = fs.iter().find(|f| f.number == 1 && f.wire_type == 2).map(|f| String::from_utf8_lossy(f.value).into_owned()).unwrap_or_default();
    let options = fs.iter().find(|f| f.number == options_field && f.wire_type == 2).map(|f| f.value);
    Raw { name, bytes, options }
}

/// protoc's CHexEscape of the serialized file.
pub fn c_hex_escape(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 2);
    let mut last_hex = false;
    for &c in data {
        let mut is_hex = false;
        match c {
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b'"' => out.push_str("\\\""),
            b'\'' => out.push_str("\\'"),
            b'\\' => out.push_str("\\\\"),
            _ => {
                let printable = (0x20..0x7f).contains(&c);
                if !printable || (last_hex && c.is_ascii_hexdigit()) {
                    let _ = write!(out, "\\x{c:02x}");
                    is_hex = true;
                } else {
                    out.push(c as char);
                }
            }
        }
        last_hex = is_hex;
    }
    out
}

/// protoc's CEscape (octal), used for serialized options.
pub fn c_escape(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 2);
    for &c in data {
        match c {
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b'"' => out.push_str("\\\""),
            b'\'' => out.push_str("\\'"),
            b'\\' => out.push_str("\\\\"),
            _ if (0x20..0x7f).contains(&c) => out.push(c as char),
            _ => {
                let _ = write!(out, "\\{c:03o}");
            }
        }
    }
    out
}

struct Writer<'a> {
    serialized: &'a [u8],
    options: String,
    intervals: String,
}

impl Writer<'_> {
    fn fix_options(&mut self, descriptor: &str, options: Option<&[u8]>) {
        let Some(opts) = options.filter(|o| !o.is_empty()) else { return };
        let name = match descriptor.find('.') {
            None => format!("_globals['{descriptor}']"),
            Some(i) => format!("_globals['{}']{}", &descriptor[..i], &descriptor[i..]),
        };
        let _ = writeln!(self.options, "  {name}._loaded_options = None");
        let _ = writeln!(self.options, "  {name}._serialized_options = b'{}'", c_escape(opts));
    }

    fn interval(&mut self, name: &str, bytes: &[u8]) {
        let start = find(self.serialized, bytes).unwrap_or(0);
        let _ = writeln!(self.intervals, "  _globals['{name}']._serialized_start={start}");
        let _ = writeln!(self.intervals, "  _globals['{name}']._serialized_end={}", start + bytes.len());
    }

    fn enum_options(&mut self, e: &[u8], prefix: &str) {
        let r = raw(e, 3);
        let name = format!("{prefix}{}", r.name.to_ascii_uppercase());
        self.fix_options(&name, r.options);
        for v in wire::messages(e, 2) {
            let rv = raw(v, 3);
            self.fix_options(&format!("{name}.values_by_name[\"{}\"]", rv.name), rv.options);
        }
    }

    fn field_options(&mut self, f: &[u8], container: Option<&str>, dict: &str) {
        let r = raw(f, 8);
        let name = match container {
            Some(c) => format!("{c}.{dict}['{}']", r.name),
            None => r.name.clone(),
        };
        self.fix_options(&name, r.options);
    }

    /// protoc's FixOptionsForMessage: nested messages, enums, oneofs, fields,
    /// extensions, then the message itself.
    fn message_options(&mut self, m: &[u8], prefix: &str) {
        let r = raw(m, 7);
        let name = format!("{prefix}{}", r.name.to_ascii_uppercase());
        for n in wire::messages(m, 3) {
            self.message_options(n, &format!("{name}_"));
        }
        for e in wire::messages(m, 4) {
            self.enum_options(e, &format!("{name}_"));
        }
        for o in wire::messages(m, 8) {
            let ro = raw(o, 2);
            self.fix_options(&format!("{name}.oneofs_by_name['{}']", ro.name), ro.options);
        }
        for f in wire::messages(m, 2) {
            self.field_options(f, Some(&name), "fields_by_name");
        }
        for f in wire::messages(m, 6) {
            self.field_options(f, Some(&name), "extensions_by_name");
        }
        self.fix_options(&name, r.options);
    }

    fn message_intervals(&mut self, m: &[u8], prefix: &str) {
        let r = raw(m, 7);
        let name = format!("{prefix}{}", r.name.to_ascii_uppercase());
        self.interval(&name, r.bytes);
        for n in wire::messages(m, 3) {
            self.message_intervals(n, &format!("{name}_"));
        }
        for e in wire::messages(m, 4) {
            let re = raw(e, 3);
            self.interval(&format!("{name}_{}", re.name.to_ascii_uppercase()), e);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The `_pb2.py` module of `file`.
pub fn generate(compiled: &Compiled, file: &FileDescriptor) -> String {
    let serialized = compiled.serialized_file(file.name());
    let name = file.name();
    let (ma, mi, pa) = GENCODE_VERSION;
    let mut s = String::new();
    s.push_str("# -*- coding: utf-8 -*-\n");
    s.push_str("# Generated by the protocol buffer compiler.  DO NOT EDIT!\n");
    s.push_str("# NO CHECKED-IN PROTOBUF GENCODE\n");
    let _ = writeln!(s, "# source: {name}");
    let _ = writeln!(s, "# Protobuf Python Version: {ma}.{mi}.{pa}");
    s.push_str("\"\"\"Generated protocol buffer code.\"\"\"\n");
    s.push_str("from google.protobuf import descriptor as _descriptor\n");
    s.push_str("from google.protobuf import descriptor_pool as _descriptor_pool\n");
    s.push_str("from google.protobuf import runtime_version as _runtime_version\n");
    s.push_str("from google.protobuf import symbol_database as _symbol_database\n");
    s.push_str("from google.protobuf.internal import builder as _builder\n");
    s.push_str("_runtime_version.ValidateProtobufRuntimeVersion(\n");
    s.push_str("    _runtime_version.Domain.PUBLIC,\n");
    let _ = writeln!(s, "    {ma},\n    {mi},\n    {pa},\n    '',\n    '{name}'\n)");
    s.push_str("# @@protoc_insertion_point(imports)\n\n");
    s.push_str("_sym_db = _symbol_database.Default()\n\n\n");
    for dep in file.dependencies() {
        let module = module_name(dep.name());
        let alias = module_alias(dep.name());
        if module.split('.').any(|p| super::PYTHON_RESERVED.contains(&p)) {
            let _ = writeln!(s, "{alias} = importlib.import_module('{module}')");
        } else {
            match module.rfind('.') {
                Some(i) => {
                    let _ = writeln!(s, "from {} import {} as {alias}", &module[..i], &module[i + 1..]);
                }
                None => {
                    let _ = writeln!(s, "import {module} as {alias}");
                }
            }
        }
    }
    s.push('\n');
    for dep in file.public_dependencies() {
        let _ = writeln!(s, "from {} import *", module_name(dep.name()));
    }
    s.push('\n');
    let _ = writeln!(s, "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(b'{}')", c_hex_escape(&serialized));
    s.push('\n');
    s.push_str("_globals = globals()\n");
    s.push_str("_builder.BuildMessageAndEnumDescriptors(DESCRIPTOR, _globals)\n");
    let _ = writeln!(s, "_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, '{}', _globals)", module_name(name));
    s.push_str("if not _descriptor._USE_C_DESCRIPTORS:\n");

    let mut w = Writer { serialized: &serialized, options: String::new(), intervals: String::new() };
    let top = wire::fields(&serialized).unwrap_or_default();
    let file_opts = top.iter().find(|f| f.number == 8 && f.wire_type == 2).map(|f| f.value).filter(|o| !o.is_empty());
    match file_opts {
        Some(_) => w.fix_options("DESCRIPTOR", file_opts),
        None => w.options.push_str("  DESCRIPTOR._loaded_options = None\n"),
    }
    for e in wire::messages(&serialized, 5) {
        w.enum_options(e, "_");
    }
    for f in wire::messages(&serialized, 7) {
        w.field_options(f, None, "");
    }
    for m in wire::messages(&serialized, 4) {
        w.message_options(m, "_");
    }
    for svc in wire::messages(&serialized, 6) {
        let r = raw(svc, 3);
        let sname = format!("_{}", r.name.to_ascii_uppercase());
        w.fix_options(&sname, r.options);
        for m in wire::messages(svc, 2) {
            let rm = raw(m, 4);
            w.fix_options(&format!("{sname}.methods_by_name['{}']", rm.name), rm.options);
        }
    }
    for e in wire::messages(&serialized, 5) {
        let r = raw(e, 3);
        w.interval(&format!("_{}", r.name.to_ascii_uppercase()), e);
    }
    for m in wire::messages(&serialized, 4) {
        w.message_intervals(m, "_");
    }
    for svc in wire::messages(&serialized, 6) {
        let r = raw(svc, 3);
        w.interval(&format!("_{}", r.name.to_ascii_uppercase()), svc);
    }
    s.push_str(&w.options);
    s.push_str(&w.intervals);
    s.push_str("# @@protoc_insertion_point(module_scope)\n");
    if s.contains("importlib.import_module(") {
        s = s.replacen("from google.protobuf import descriptor as _descriptor\n", "import importlib\nfrom google.protobuf import descriptor as _descriptor\n", 1);
    }
    s
}
