//! Parsing and checking `.proto` files with protox, and errors with file:line.

use std::fmt;
use std::path::{Path, PathBuf};

use miette::Diagnostic;
use prost_reflect::{DescriptorPool, FileDescriptor};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver};

/// An error about the input, located at `file:line:column` where known
/// (line and column are 1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub file: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    pub help: Option<String>,
}

impl Error {
    pub fn new(message: impl Into<String>) -> Error {
        Error { file: None, line: None, column: None, message: message.into(), help: None }
    }

    pub fn at(file: &str, line: Option<usize>, column: Option<usize>, message: impl Into<String>) -> Error {
        Error { file: Some(file.to_string()), line, column, message: message.into(), help: None }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Error {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}:")?;
            if let Some(line) = self.line {
                write!(f, "{line}:")?;
                if let Some(col) = self.column {
                    write!(f, "{col}:")?;
                }
            }
            write!(f, " ")?;
        }
        write!(f, "error: {}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// Serves `courier/options.proto` from the copy built into the generator.
struct CourierOptionsResolver;

impl FileResolver for CourierOptionsResolver {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name == "courier/options.proto" {
            File::from_source(name, crate::OPTIONS_PROTO)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

/// Parsed and checked protos: the descriptor pool (every file and its imports,
/// options and source info included) and the files asked for.
pub struct Compiled {
    pub pool: DescriptorPool,
    /// Names (as imported, e.g. `a/b.proto`) of the files to generate code for.
    pub files: Vec<String>,
    /// Source text of those files.
    sources: std::collections::HashMap<String, String>,
}

impl Compiled {
    pub fn file(&self, name: &str) -> FileDescriptor {
        self.pool.get_file_by_name(name).expect("compiled file is in the pool")
    }

    pub fn files(&self) -> impl Iterator<Item = FileDescriptor> + '_ {
        self.files.iter().map(|n| self.file(n))
    }

    /// The `FileDescriptorProto` of `name` as protoc embeds it in generated code:
    /// options kept (custom ones too), no source info, no computed `json_name`.
    pub fn serialized_file(&self, name: &str) -> Vec<u8> {
        let f = self.file(name);
        let bytes = f.encode_to_vec();
        let bytes = crate::wire::without_fields(&bytes, &[9]);
        let bytes = strip_json_names(&bytes, f.file_descriptor_proto());
        match self.sources.get(name) {
            Some(src) => empty_method_options(&bytes, &f, src),
            None => bytes,
        }
    }

    /// Every file of the pool (imports first) as an encoded `FileDescriptorSet`,
    /// options kept, source info dropped (as `protoc --descriptor_set_out`
    /// writes it): what server reflection serves.
    pub fn encode_file_descriptor_set(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for f in self.pool.files() {
            let file = crate::wire::without_fields(&f.encode_to_vec(), &[9]);
            put_varint(&mut out, 0x0a);
            put_varint(&mut out, file.len() as u64);
            out.extend_from_slice(&file);
        }
        out
    }
}

/// protoc gives a method declared with a body (`rpc M(A) returns (B) {}`) an
/// empty `options` message even when the body sets none; so do we.
fn empty_method_options(file: &[u8], fd: &FileDescriptor, src: &str) -> Vec<u8> {
    let lines: Vec<&str> = src.lines().collect();
    let has_body = |path: &[i32]| -> bool {
        let Some(info) = &fd.file_descriptor_proto().source_code_info else { return false };
        let Some(loc) = info.location.iter().find(|l| l.path == path) else { return false };
        let (end_line, end_col) = if loc.span.len() == 4 { (loc.span[2], loc.span[3]) } else if loc.span.len() == 3 { (loc.span[0], loc.span[2]) } else { return false };
        let Some(line) = lines.get(end_line as usize) else { return false };
        let col = end_col as usize;
        col > 0 && line.get(..col).is_some_and(|t| t.trim_end().ends_with('}'))
    };
    let Some(fields) = crate::wire::fields(file) else { return file.to_vec() };
    let mut out = Vec::with_capacity(file.len() + 16);
    let mut si = 0;
    for f in fields {
        if f.number != 6 || f.wire_type != 2 {
            out.extend_from_slice(f.raw);
            continue;
        }
        let Some(sfields) = crate::wire::fields(f.value) else { out.extend_from_slice(f.raw); continue };
        let mut svc = Vec::with_capacity(f.value.len() + 8);
        let mut mi = 0;
        for sf in sfields {
            if sf.number != 2 || sf.wire_type != 2 {
                svc.extend_from_slice(sf.raw);
                continue;
            }
            let mfields = crate::wire::fields(sf.value).unwrap_or_default();
            let needs = has_body(&[6, si, 2, mi]) && !mfields.iter().any(|m| m.number == 4);
            mi += 1;
            if !needs {
                svc.extend_from_slice(sf.raw);
                continue;
            }
            let mut m = Vec::with_capacity(sf.value.len() + 2);
            let mut done = false;
            for mf in &mfields {
                if !done && mf.number > 4 {
                    m.extend_from_slice(&[0x22, 0]);
                    done = true;
                }
                m.extend_from_slice(mf.raw);
            }
            if !done {
                m.extend_from_slice(&[0x22, 0]);
            }
            put_varint(&mut svc, 0x12);
            put_varint(&mut svc, m.len() as u64);
            svc.extend_from_slice(&m);
        }
        si += 1;
        put_varint(&mut out, 0x32);
        put_varint(&mut out, svc.len() as u64);
        out.extend_from_slice(&svc);
    }
    out
}

/// protoc keeps `json_name` only where the proto sets it (`[json_name = ...]`);
/// protox fills it in for every field. Drop the computed ones.
fn strip_json_names(file: &[u8], proto: &prost_types::FileDescriptorProto) -> Vec<u8> {
    let explicit = explicit_json_names(proto);
    rewrite(file, &[(4, Kind::Message), (7, Kind::Field)], &explicit)
}

#[derive(Clone, Copy)]
enum Kind {
    Message,
    Field,
}

fn rewrite(buf: &[u8], children: &[(u32, Kind)], explicit: &dyn Fn(&[u8]) -> bool) -> Vec<u8> {
    let Some(fields) = crate::wire::fields(buf) else { return buf.to_vec() };
    let mut out = Vec::with_capacity(buf.len());
    for f in fields {
        match children.iter().find(|(n, _)| *n == f.number && f.wire_type == 2) {
            Some((_, kind)) => {
                let inner = match kind {
                    Kind::Message => rewrite(f.value, &[(2, Kind::Field), (3, Kind::Message), (6, Kind::Field)], explicit),
                    Kind::Field => {
                        if explicit(f.value) {
                            f.value.to_vec()
                        } else {
                            crate::wire::without_fields(f.value, &[10])
                        }
                    }
                };
                let tag = (f.number << 3) | 2;
                put_varint(&mut out, tag as u64);
                put_varint(&mut out, inner.len() as u64);
                out.extend_from_slice(&inner);
            }
            None => out.extend_from_slice(f.raw),
        }
    }
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A predicate: does this encoded FieldDescriptorProto carry a `json_name`
/// that the source set explicitly? (protoc's rule: differs from the default.)
fn explicit_json_names(_proto: &prost_types::FileDescriptorProto) -> impl Fn(&[u8]) -> bool {
    |field: &[u8]| {
        let fs = crate::wire::fields(field).unwrap_or_default();
        let name = fs.iter().find(|f| f.number == 1).map(|f| f.value).unwrap_or_default();
        let json = fs.iter().find(|f| f.number == 10).map(|f| f.value);
        match json {
            None => true,
            Some(j) => std::str::from_utf8(name).map(default_json_name).ok().as_deref() != std::str::from_utf8(j).ok(),
        }
    }
}

/// protoc's default JSON name: lowerCamelCase of the field name.
pub(crate) fn default_json_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Compiles `files` (paths, resolved against `includes` like protoc's `-I`).
pub fn compile(includes: &[PathBuf], files: &[PathBuf]) -> Result<Compiled, Vec<Error>> {
    if files.is_empty() {
        return Err(vec![Error::new("no input files")]);
    }
    let mut compiler = protox::Compiler::with_file_resolver(resolver(includes));
    compiler.include_source_info(true).include_imports(true);
    let mut names = Vec::new();
    for path in files {
        let before: Vec<String> = compiler.files().map(|f| f.name().to_string()).collect();
        if let Err(e) = compiler.open_file(path) {
            return Err(vec![convert(&e, includes, path)]);
        }
        // The name protox gave the file: the one that is new, or the one the path resolves to.
        let name = compiler
            .files()
            .map(|f| f.name().to_string())
            .find(|n| !before.contains(n) && !names.contains(n))
            .or_else(|| name_for_path(includes, path))
            .unwrap_or_else(|| path.to_string_lossy().into_owned());
        if !names.contains(&name) {
            names.push(name);
        }
    }
    // open_file may add imports too: keep only files named on the command line.
    let pool = compiler.descriptor_pool();
    names.retain(|n| pool.get_file_by_name(n).is_some());
    let mut wanted = Vec::new();
    for path in files {
        if let Some(n) = name_for_path(includes, path).filter(|n| pool.get_file_by_name(n).is_some()) {
            if !wanted.contains(&n) {
                wanted.push(n);
            }
        }
    }
    if wanted.len() == files.len() {
        names = wanted;
    }
    let r = resolver(includes);
    let sources = names.iter().filter_map(|n| Some((n.clone(), r.open_file(n).ok()?.source()?.to_string()))).collect();
    Ok(Compiled { pool, files: names, sources })
}

fn resolver(includes: &[PathBuf]) -> ChainFileResolver {
    let mut resolver = ChainFileResolver::new();
    for inc in includes {
        resolver.add(IncludeFileResolver::new(inc.clone()));
    }
    resolver.add(GoogleFileResolver::new());
    resolver.add(CourierOptionsResolver);
    resolver
}

/// The import name of `path`: relative to the first include that contains it,
/// or the path itself if relative.
fn name_for_path(includes: &[PathBuf], path: &Path) -> Option<String> {
    for inc in includes {
        if let Ok(rel) = path.strip_prefix(inc) {
            return Some(slash(rel));
        }
        if let (Ok(p), Ok(i)) = (path.canonicalize(), inc.canonicalize()) {
            if let Ok(rel) = p.strip_prefix(&i) {
                return Some(slash(rel));
            }
        }
    }
    if path.is_relative() {
        for inc in includes {
            if inc.join(path).is_file() {
                return Some(slash(path));
            }
        }
    }
    None
}

fn slash(p: &Path) -> String {
    p.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/")
}

/// A protox error as an [`Error`] with file and line.
fn convert(e: &protox::Error, includes: &[PathBuf], path: &Path) -> Error {
    let message = e.to_string();
    let help = e.help().map(|h| h.to_string());
    let mut out = Error::new(message.clone());
    out.help = help;
    out.file = e.file().map(str::to_string);
    if let (Some(src), Some(label)) = (e.source_code(), e.labels().and_then(|mut l| l.next())) {
        if let Ok(contents) = src.read_span(label.inner(), 0, 0) {
            out.line = Some(contents.line() + 1);
            out.column = Some(contents.column() + 1);
            if let Some(name) = contents.name() {
                out.file = Some(name.to_string());
            }
            if let Some(l) = label.label() {
                let generic = matches!(l, "found here" | "imported here" | "defined here");
                if !generic && !out.message.contains(l) {
                    out.message = format!("{}: {l}", out.message);
                }
            }
        }
    }
    // An import cycle names no line: find the import that closes it.
    if let Some(cycle) = message.strip_prefix("import cycle detected: ") {
        let chain: Vec<&str> = cycle.split(" -> ").map(str::trim).collect();
        if chain.len() >= 2 {
            let (importer, imported) = (chain[chain.len() - 2], chain[chain.len() - 1]);
            out.file = Some(importer.to_string());
            if let Some((line, col)) = find_import(includes, importer, imported) {
                out.line = Some(line);
                out.column = Some(col);
            }
        }
    }
    if out.file.is_none() {
        out.file = Some(path.to_string_lossy().into_owned());
    }
    out
}

/// Line and column (1-based) of `import "imported"` in the file `importer`.
fn find_import(includes: &[PathBuf], importer: &str, imported: &str) -> Option<(usize, usize)> {
    let text = includes.iter().find_map(|i| std::fs::read_to_string(i.join(importer)).ok())?;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("import") && line.contains(&format!("\"{imported}\"")) {
            return Some((i + 1, line.len() - line.trim_start().len() + 1));
        }
    }
    None
}

/// 1-based line and column of the declaration at `path` (a SourceCodeInfo path).
pub fn location(file: &FileDescriptor, path: &[i32]) -> (Option<usize>, Option<usize>) {
    let proto = file.file_descriptor_proto();
    let Some(info) = &proto.source_code_info else { return (None, None) };
    for loc in &info.location {
        if loc.path == path && loc.span.len() >= 3 {
            return (Some(loc.span[0] as usize + 1), Some(loc.span[1] as usize + 1));
        }
    }
    (None, None)
}

/// An [`Error`] at the declaration `path` of `file`.
pub fn error_at(file: &FileDescriptor, path: &[i32], message: impl Into<String>) -> Error {
    let (line, column) = location(file, path);
    Error::at(file.name(), line, column, message)
}
