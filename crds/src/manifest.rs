//! Loading and validating user manifests: what `capstan apply -f` and the server's apply
//! endpoint both call.
//!
//! [`parse_documents`] turns (multi-document) YAML or JSON into [`Document`]s that remember
//! the line of every field, [`validate`] checks one document against the very schema and CEL
//! rules the CRDs carry and yields a typed [`Resource`], and [`load`] does both for a whole
//! file, collecting every error of every document.
//!
//! The YAML is read from yaml-rust2's event stream with an explicit stack (no recursion), so
//! hostile input (deep nesting, alias bombs, random bytes) fails fast with a line and column
//! instead of overflowing the stack or eating memory.

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, ScanError, TScalarStyle};

use crate::trainingjob::RESERVED_ENV;

/// Deepest nesting of mappings and sequences a manifest may have.
pub const MAX_DEPTH: usize = 64;
/// Most nodes (scalars, mappings, sequences, counting every alias expansion) one input may
/// produce, across all its documents.
pub const MAX_NODES: usize = 1_000_000;
/// Most fields per document whose line is remembered; later ones report their parent's.
const MAX_LINE_ENTRIES: usize = 200_000;

/// One non-empty YAML document of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// 0-based number of the document among the non-empty documents of the input.
    pub index: usize,
    /// 1-based line the document's content starts on.
    pub start_line: usize,
    /// The document as JSON.
    pub value: Value,
    /// Field path (`spec.env[2].name`) to the 1-based line the field appears on.
    lines: HashMap<String, usize>,
}

impl Document {
    /// The 1-based line of the field at `path` (like `spec.env[2].name`; keys that are not
    /// plain identifiers are written `metadata.labels["app.kubernetes.io/name"]`). A path
    /// the document does not contain falls back to its nearest parent that it does contain,
    /// and at worst to the document's start line.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        if let Some(&line) = self.lines.get(path) {
            return Some(line);
        }
        for end in segment_starts(path).into_iter().rev() {
            if let Some(&line) = self.lines.get(&path[..end]) {
                return Some(line);
            }
        }
        self.lines.get("").copied()
    }
}

/// A validated Capstan resource.
// A TrainingJob is big, but boxing it would make every caller's match less direct, and
// resources are few and short-lived.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Resource {
    /// A TrainingJob.
    TrainingJob(crate::TrainingJob),
    /// A Queue.
    Queue(crate::Queue),
    /// A Pipeline.
    Pipeline(crate::Pipeline),
    /// A PipelineRun.
    PipelineRun(crate::PipelineRun),
    /// A ModelDeployment.
    ModelDeployment(crate::ModelDeployment),
}

impl Resource {
    /// `TrainingJob` or `Queue`.
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::TrainingJob(_) => "TrainingJob",
            Resource::Queue(_) => "Queue",
            Resource::Pipeline(_) => "Pipeline",
            Resource::PipelineRun(_) => "PipelineRun",
            Resource::ModelDeployment(_) => "ModelDeployment",
        }
    }

    /// `metadata.name` (always set on a validated resource).
    pub fn name(&self) -> &str {
        let meta = match self {
            Resource::TrainingJob(j) => &j.metadata,
            Resource::Queue(q) => &q.metadata,
            Resource::Pipeline(p) => &p.metadata,
            Resource::PipelineRun(r) => &r.metadata,
            Resource::ModelDeployment(d) => &d.metadata,
        };
        meta.name.as_deref().unwrap_or_default()
    }

    /// The namespace: `None` for the cluster-scoped Queue; a TrainingJob without
    /// `metadata.namespace` is in `default`.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Resource::TrainingJob(j) => Some(j.metadata.namespace.as_deref().unwrap_or("default")),
            Resource::Queue(_) => None,
            Resource::Pipeline(p) => Some(p.metadata.namespace.as_deref().unwrap_or("default")),
            Resource::PipelineRun(r) => Some(r.metadata.namespace.as_deref().unwrap_or("default")),
            Resource::ModelDeployment(d) => Some(d.metadata.namespace.as_deref().unwrap_or("default")),
        }
    }
}

/// One thing wrong with one field of one document.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FieldError {
    /// 0-based document number ([`Document::index`]).
    pub document: usize,
    /// Field path in the manifest's own (camelCase) names, like `spec.env[3].name`; empty for
    /// the document as a whole.
    pub path: String,
    /// 1-based line of the field (or of its nearest parent present in the document).
    pub line: Option<usize>,
    /// What is wrong, for a person.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document + 1)?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for FieldError {}

/// Why a manifest cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not UTF-8, a YAML syntax error, nesting too deep, too many nodes, a duplicate key:
    /// with the 1-based line and column.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The documents parsed but fields are wrong: every error of every document.
    #[error("{}", display_field_errors(.0))]
    Invalid(Vec<FieldError>),
    /// Nothing to apply: the input is empty or holds only comments and empty documents.
    #[error("no resources found: the manifest is empty")]
    Empty,
}

fn display_field_errors(errors: &[FieldError]) -> String {
    match errors {
        [one] => one.to_string(),
        many => {
            let mut s = format!("{} errors:", many.len());
            for e in many {
                s.push_str("\n  ");
                s.push_str(&e.to_string());
            }
            s
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------

/// Parses multi-document YAML (documents separated by `---`; JSON is YAML too) into
/// documents, skipping empty (and `null`) ones. Returns [`ManifestError::Empty`] when no
/// document is left.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, ManifestError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // The pull API (`next_token`) rather than `Parser::load`: `load` recurses once per
    // nesting level and cannot be stopped by its receiver, so 100,000 nested `[` would
    // overflow the stack before our depth limit could act.
    let mut parser = Parser::new_from_str(text);
    let mut builder = Builder { source: Cursor { text, ..Cursor::default() }, ..Builder::default() };
    let mut docs = Vec::new();
    loop {
        let (event, mark) = parser.next_token().map_err(|e| builder.scan_error(&e))?;
        match event {
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart => {}
            Event::DocumentStart => builder.start_document(),
            Event::DocumentEnd => {
                if let Some(doc) = builder.finish_document(docs.len()) {
                    docs.push(doc);
                }
            }
            Event::Alias(id) => builder.alias(id, mark)?,
            Event::Scalar(text, style, anchor, tag) => builder.scalar(text, style, anchor, tag, mark)?,
            Event::SequenceStart(anchor, tag) => builder.start_container(false, anchor, tag, mark)?,
            Event::MappingStart(anchor, tag) => builder.start_container(true, anchor, tag, mark)?,
            Event::SequenceEnd | Event::MappingEnd => builder.end_container(mark)?,
        }
    }
    if docs.is_empty() {
        return Err(ManifestError::Empty);
    }
    Ok(docs)
}

/// Like [`parse_documents`], after checking the bytes are UTF-8 (the error names the line
/// and column of the first invalid byte). A leading UTF-8 byte-order mark is skipped.
pub fn parse_bytes(bytes: &[u8]) -> Result<Vec<Document>, ManifestError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_documents(text),
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            // The prefix is valid UTF-8 by construction.
            let prefix = std::str::from_utf8(valid).unwrap_or_default();
            let line = prefix.matches('\n').count() + 1;
            let line_start = prefix.rfind('\n').map_or(0, |i| i + 1);
            let column = prefix[line_start..].chars().count() + 1;
            let byte = bytes[e.valid_up_to()];
            Err(ManifestError::Syntax {
                line,
                column,
                message: format!("the manifest is not UTF-8 text (invalid byte 0x{byte:02x})"),
            })
        }
    }
}

/// Parses and validates every document, collecting all field errors of all documents into
/// one [`ManifestError::Invalid`].
pub fn load(bytes: &[u8]) -> Result<Vec<Resource>, ManifestError> {
    let docs = parse_bytes(bytes)?;
    let mut resources = Vec::with_capacity(docs.len());
    let mut errors = Vec::new();
    for doc in &docs {
        match validate(doc) {
            Ok(r) => resources.push(r),
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(resources)
    } else {
        Err(ManifestError::Invalid(errors))
    }
}

struct PendingKey {
    name: String,
    path: String,
    line: usize,
    column: usize,
    /// A plain `<<` key: merge the value's mapping(s) into this one.
    merge: bool,
}

enum Container {
    Seq(Vec<Value>),
    Map {
        map: Map<String, Value>,
        key: Option<PendingKey>,
        /// Values of `<<` keys, in order, with the key's line.
        merges: Vec<(Value, usize)>,
    },
}

struct Frame {
    path: String,
    anchor: usize,
    nodes_at_start: usize,
    line: usize,
    column: usize,
    flow: bool,
    container: Container,
}

#[derive(Default)]
struct Builder<'a> {
    source: Cursor<'a>,
    stack: Vec<Frame>,
    /// Anchor id -> (value, node count).
    anchors: HashMap<usize, (Value, usize)>,
    nodes: usize,
    lines: HashMap<String, usize>,
    root: Option<Value>,
    root_line: usize,
}

/// Finds the character at a character index, moving forward through the text (event marks
/// only move forward, so the whole parse costs one pass).
#[derive(Default)]
struct Cursor<'a> {
    text: &'a str,
    chars: usize,
    bytes: usize,
}

impl Cursor<'_> {
    fn char_at(&mut self, index: usize) -> Option<char> {
        if index < self.chars {
            self.chars = 0;
            self.bytes = 0;
        }
        let mut iter = self.text[self.bytes..].char_indices();
        for (offset, c) in iter.by_ref() {
            if self.chars == index {
                self.bytes += offset;
                return Some(c);
            }
            self.chars += 1;
        }
        self.bytes = self.text.len();
        None
    }
}

/// Remembers the line of a field; past [`MAX_LINE_ENTRIES`] fields, `line_of` falls back to
/// parents (keeps hostile input from costing much memory).
fn record(lines: &mut HashMap<String, usize>, path: String, line: usize) {
    if lines.len() < MAX_LINE_ENTRIES {
        lines.insert(path, line);
    }
}

fn syntax(mark: Marker, message: impl Into<String>) -> ManifestError {
    ManifestError::Syntax { line: mark.line(), column: mark.col() + 1, message: message.into() }
}

enum Slot {
    Root,
    Key,
    Value(String),
}

impl Builder<'_> {
    fn scan_error(&self, e: &ScanError) -> ManifestError {
        let mark = e.marker();
        let mut message = e.info().to_string();
        let too_deep = message == "recursion limit exceeded";
        if too_deep {
            message = format!("the manifest is nested deeper than {MAX_DEPTH} levels");
        }
        // Point at the opening bracket of an unclosed flow collection: the scanner only
        // notices at the end of the input.
        if let Some(open) = self.stack.iter().rev().find(|f| f.flow).filter(|_| !too_deep) {
            if mark.line() != open.line || message.contains("eof") {
                let (bracket, closer) = match open.container {
                    Container::Seq(_) => ('[', ']'),
                    Container::Map { .. } => ('{', '}'),
                };
                message.push_str(&format!(
                    " (the '{bracket}' at line {}, column {} is not closed with '{closer}')",
                    open.line, open.column
                ));
            }
        }
        ManifestError::Syntax { line: mark.line(), column: mark.col() + 1, message }
    }

    fn start_document(&mut self) {
        self.stack.clear();
        self.anchors.clear();
        self.lines.clear();
        self.root = None;
        self.root_line = 0;
    }

    fn finish_document(&mut self, index: usize) -> Option<Document> {
        self.anchors.clear();
        let lines = std::mem::take(&mut self.lines);
        match self.root.take() {
            None | Some(Value::Null) => None,
            Some(value) => Some(Document { index, start_line: self.root_line, value, lines }),
        }
    }

    fn count(&mut self, n: usize, mark: Marker) -> Result<(), ManifestError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(syntax(
                mark,
                format!("the manifest has more than {MAX_NODES} nodes (counting every alias expansion)"),
            ));
        }
        Ok(())
    }

    /// Where the next node goes.
    fn slot(&self) -> Slot {
        match self.stack.last() {
            None => Slot::Root,
            Some(frame) => match &frame.container {
                Container::Seq(items) => Slot::Value(index_path(&frame.path, items.len())),
                Container::Map { key: None, .. } => Slot::Key,
                Container::Map { key: Some(k), .. } => Slot::Value(k.path.clone()),
            },
        }
    }

    fn set_key(&mut self, name: String, merge: bool, mark: Marker) -> Result<(), ManifestError> {
        let Some(frame) = self.stack.last_mut() else { return Ok(()) };
        let Container::Map { map, key, merges } = &mut frame.container else { return Ok(()) };
        let path = child_path(&frame.path, &name);
        let duplicate = if merge { !merges.is_empty() } else { map.contains_key(&name) };
        if duplicate {
            let first = self.lines.get(&path).copied();
            return Err(syntax(
                mark,
                match first {
                    Some(l) => format!("duplicate key {name:?} (first set at line {l})"),
                    None => format!("duplicate key {name:?}"),
                },
            ));
        }
        if !merge {
            record(&mut self.lines, path.clone(), mark.line());
        }
        *key = Some(PendingKey { name, path, line: mark.line(), column: mark.col() + 1, merge });
        Ok(())
    }

    /// Puts a finished node into its parent (or makes it the root).
    fn attach(&mut self, value: Value, mark: Marker) -> Result<(), ManifestError> {
        let Some(frame) = self.stack.last_mut() else {
            // A root collection recorded its line when it started.
            if self.root_line == 0 {
                self.root_line = mark.line();
                self.lines.insert(String::new(), mark.line());
            }
            self.root = Some(value);
            return Ok(());
        };
        match &mut frame.container {
            Container::Seq(items) => items.push(value),
            Container::Map { map, key, merges } => {
                let Some(k) = key.take() else {
                    // Cannot happen: a mapping's values always follow their keys.
                    return Err(syntax(mark, "a mapping value without a key"));
                };
                if k.merge {
                    let ok = match &value {
                        Value::Object(_) => true,
                        Value::Array(items) => items.iter().all(Value::is_object),
                        _ => false,
                    };
                    if !ok {
                        return Err(ManifestError::Syntax {
                            line: k.line,
                            column: k.column,
                            message: "the merge key << needs a mapping or a list of mappings".into(),
                        });
                    }
                    merges.push((value, k.line));
                } else {
                    map.insert(k.name, value);
                }
            }
        }
        Ok(())
    }

    fn scalar(
        &mut self,
        text: String,
        style: TScalarStyle,
        anchor: usize,
        tag: Option<Tag>,
        mark: Marker,
    ) -> Result<(), ManifestError> {
        self.count(1, mark)?;
        let slot = self.slot();
        if let Slot::Key = slot {
            let merge = style == TScalarStyle::Plain && tag.is_none() && text == "<<";
            if anchor > 0 {
                self.anchors.insert(anchor, (Value::String(text.clone()), 1));
            }
            return self.set_key(text, merge, mark);
        }
        let value = scalar_value(text, style, tag.as_ref(), mark)?;
        if anchor > 0 {
            self.anchors.insert(anchor, (value.clone(), 1));
        }
        if let Slot::Value(path) = slot {
            if matches!(self.stack.last(), Some(Frame { container: Container::Seq(_), .. })) {
                record(&mut self.lines, path, mark.line());
            }
        }
        self.attach(value, mark)
    }

    fn alias(&mut self, id: usize, mark: Marker) -> Result<(), ManifestError> {
        let Some(count) = self.anchors.get(&id).map(|a| a.1) else {
            return Err(syntax(mark, "this alias refers to a node that contains it (a recursive alias)"));
        };
        self.count(count, mark)?;
        let value = self.anchors[&id].0.clone();
        match self.slot() {
            Slot::Key => {
                let name = match value {
                    Value::String(s) => s,
                    Value::Null => String::new(),
                    Value::Bool(_) | Value::Number(_) => value.to_string(),
                    Value::Array(_) | Value::Object(_) => {
                        return Err(syntax(mark, "a mapping key must be a scalar, not a mapping or list"));
                    }
                };
                self.set_key(name, false, mark)
            }
            Slot::Value(path) => {
                if matches!(self.stack.last(), Some(Frame { container: Container::Seq(_), .. })) {
                    record(&mut self.lines, path, mark.line());
                }
                self.attach(value, mark)
            }
            Slot::Root => self.attach(value, mark),
        }
    }

    fn start_container(
        &mut self,
        mapping: bool,
        anchor: usize,
        tag: Option<Tag>,
        mark: Marker,
    ) -> Result<(), ManifestError> {
        if let Some(tag) = &tag {
            let expected = if mapping { "map" } else { "seq" };
            let core = tag.handle == CORE_TAG && tag.suffix == expected;
            let non_specific = tag.handle.is_empty() && tag.suffix == "!";
            if !core && !non_specific {
                return Err(syntax(mark, format!("unsupported tag \"{}{}\"", tag.handle, tag.suffix)));
            }
        }
        self.count(1, mark)?;
        if self.stack.len() >= MAX_DEPTH {
            return Err(syntax(mark, format!("the manifest is nested deeper than {MAX_DEPTH} levels")));
        }
        let path = match self.slot() {
            Slot::Key => {
                return Err(syntax(mark, "a mapping key must be a scalar, not a mapping or list"));
            }
            Slot::Root => String::new(),
            Slot::Value(path) => {
                if matches!(self.stack.last(), Some(Frame { container: Container::Seq(_), .. })) {
                    record(&mut self.lines, path.clone(), mark.line());
                }
                path
            }
        };
        if self.stack.is_empty() {
            self.root_line = mark.line();
            self.lines.insert(String::new(), mark.line());
        }
        let container = if mapping {
            Container::Map { map: Map::new(), key: None, merges: Vec::new() }
        } else {
            Container::Seq(Vec::new())
        };
        // The marker of a flow collection's start is its bracket.
        let flow = matches!(self.source.char_at(mark.index()), Some('[' | '{'));
        self.stack.push(Frame {
            path,
            anchor,
            nodes_at_start: self.nodes,
            line: mark.line(),
            column: mark.col() + 1,
            flow,
            container,
        });
        Ok(())
    }

    fn end_container(&mut self, mark: Marker) -> Result<(), ManifestError> {
        let Some(frame) = self.stack.pop() else {
            return Err(syntax(mark, "unbalanced end of a collection"));
        };
        let value = match frame.container {
            Container::Seq(items) => Value::Array(items),
            Container::Map { mut map, key, merges } => {
                if let Some(k) = key {
                    // A key without a value cannot happen in the event stream; be safe.
                    map.insert(k.name, Value::Null);
                }
                for (source, line) in merges {
                    let sources = match source {
                        Value::Array(items) => items,
                        other => vec![other],
                    };
                    for source in sources {
                        if let Value::Object(m) = source {
                            for (k, v) in m {
                                if !map.contains_key(&k) {
                                    let path = child_path(&frame.path, &k);
                                    if !self.lines.contains_key(&path) {
                                        record(&mut self.lines, path, line);
                                    }
                                    map.insert(k, v);
                                }
                            }
                        }
                    }
                }
                Value::Object(map)
            }
        };
        if frame.anchor > 0 {
            // Every node counted since the container started belongs to it (plus itself,
            // counted before `nodes_at_start` was taken).
            let count = self.nodes - frame.nodes_at_start + 1;
            self.anchors.insert(frame.anchor, (value.clone(), count));
        }
        self.attach(value, mark)
    }
}

const CORE_TAG: &str = "tag:yaml.org,2002:";

fn scalar_value(text: String, style: TScalarStyle, tag: Option<&Tag>, mark: Marker) -> Result<Value, ManifestError> {
    let Some(tag) = tag else {
        return if style == TScalarStyle::Plain { resolve_plain(text, mark) } else { Ok(Value::String(text)) };
    };
    if tag.handle.is_empty() && tag.suffix == "!" {
        return Ok(Value::String(text));
    }
    if tag.handle != CORE_TAG {
        return Err(syntax(mark, format!("unsupported tag \"{}{}\"", tag.handle, tag.suffix)));
    }
    let wanted = match tag.suffix.as_str() {
        "str" | "binary" | "timestamp" => return Ok(Value::String(text)),
        "null" => "null",
        "bool" => "a boolean",
        "int" => "an integer",
        "float" => "a number",
        other => return Err(syntax(mark, format!("unsupported tag \"!!{other}\""))),
    };
    let value = resolve_plain(text.clone(), mark)?;
    let ok = match tag.suffix.as_str() {
        "null" => value.is_null(),
        "bool" => value.is_boolean(),
        "int" => value.is_i64() || value.is_u64(),
        _ => value.is_number(),
    };
    if ok {
        Ok(value)
    } else {
        Err(syntax(mark, format!("{text:?} is tagged !!{} but is not {wanted}", tag.suffix)))
    }
}

/// Resolves a plain scalar like the YAML 1.2 core schema.
fn resolve_plain(text: String, mark: Marker) -> Result<Value, ManifestError> {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "true" | "True" | "TRUE" => return Ok(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Ok(Value::Bool(false)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF" | ".nan" | ".NaN"
        | ".NAN" => {
            return Err(syntax(
                mark,
                format!("{text} cannot be represented in JSON (no infinity or NaN): quote it if it is a string"),
            ));
        }
        _ => {}
    }
    let s = text.as_str();
    let (sign, digits) = match s.as_bytes().first() {
        Some(b'-') => (-1, &s[1..]),
        Some(b'+') => (1, &s[1..]),
        _ => (1, s),
    };
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = s.trim_start_matches('+').parse::<i64>() {
            return Ok(Value::Number(n.into()));
        }
        if sign > 0 {
            if let Ok(n) = digits.parse::<u64>() {
                return Ok(Value::Number(n.into()));
            }
        }
        // Too big for 64 bits: a float, as JSON would have it.
        return float_value(s, &text, mark);
    }
    for (prefix, radix) in [("0x", 16), ("0o", 8)] {
        if let Some(rest) = s.strip_prefix(prefix) {
            if !rest.is_empty() && rest.chars().all(|c| c.is_digit(radix)) {
                return match u64::from_str_radix(rest, radix) {
                    Ok(n) => Ok(Value::Number(n.into())),
                    Err(_) => Err(syntax(mark, format!("{s} does not fit in 64 bits"))),
                };
            }
        }
    }
    if is_core_float(digits) {
        return float_value(s, &text, mark);
    }
    Ok(Value::String(text))
}

fn float_value(s: &str, text: &str, mark: Marker) -> Result<Value, ManifestError> {
    match s.parse::<f64>().ok().and_then(Number::from_f64) {
        Some(n) => Ok(Value::Number(n)),
        None => Err(syntax(mark, format!("{text} is too large a number for JSON"))),
    }
}

/// `( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?` (sign already stripped).
fn is_core_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits == 0 && frac_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        let exp_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp_digits == 0 {
            return false;
        }
        i += exp_digits;
    }
    i == b.len()
}

// ---------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------

fn is_simple_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `parent.key`, or `parent["odd.key"]` for a key that is not a plain identifier.
fn child_path(parent: &str, key: &str) -> String {
    if is_simple_key(key) {
        if parent.is_empty() {
            key.to_string()
        } else {
            format!("{parent}.{key}")
        }
    } else {
        format!("{parent}[{}]", Value::String(key.to_string()))
    }
}

fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// Byte offsets where each segment of `path` starts (`spec.env[2].name` -> 0, 4, 8, 11):
/// `path[..offset]` is the segment's parent.
fn segment_starts(path: &str) -> Vec<usize> {
    let b = path.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    while i < b.len() {
        starts.push(i);
        match b[i] {
            b'[' => {
                i += 1;
                if b.get(i) == Some(&b'"') {
                    i += 1;
                    while i < b.len() && b[i] != b'"' {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                while i < b.len() && b[i] != b']' {
                    i += 1;
                }
                i += 1;
            }
            _ => {
                if b[i] == b'.' {
                    i += 1;
                }
                while i < b.len() && b[i] != b'.' && b[i] != b'[' {
                    i += 1;
                }
            }
        }
    }
    // The first segment's parent is the root, which `line_of` tries last anyway.
    starts.retain(|&s| s > 0 && s <= path.len());
    starts
}

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    TrainingJob,
    Queue,
    Pipeline,
    PipelineRun,
    ModelDeployment,
}

const KINDS: &str = "TrainingJob, Queue, Pipeline, PipelineRun, ModelDeployment";

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::TrainingJob => "TrainingJob",
            Kind::Queue => "Queue",
            Kind::Pipeline => "Pipeline",
            Kind::PipelineRun => "PipelineRun",
            Kind::ModelDeployment => "ModelDeployment",
        }
    }
}

/// The `openAPIV3Schema` of each kind's served version, computed once.
static SCHEMAS: LazyLock<HashMap<&'static str, Value>> = LazyLock::new(|| {
    let mut schemas = HashMap::new();
    for crd in crate::crds() {
        let kind: &'static str = match crd.spec.names.kind.as_str() {
            "TrainingJob" => "TrainingJob",
            "Queue" => "Queue",
            "Pipeline" => "Pipeline",
            "PipelineRun" => "PipelineRun",
            "ModelDeployment" => "ModelDeployment",
            _ => continue,
        };
        let schema = crd
            .spec
            .versions
            .iter()
            .find(|v| v.name == crate::VERSION)
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .map(|s| serde_json::to_value(s).expect("a CRD schema serializes to JSON"))
            .expect("every Capstan CRD serves v1alpha1 with a schema");
        schemas.insert(kind, schema);
    }
    schemas
});

fn schema_of(kind: Kind) -> &'static Value {
    &SCHEMAS[kind.name()]
}

thread_local! {
    /// CEL rules compiled once per thread (compiled programs are not `Sync`).
    static CEL: (kube::core::cel::Validator, HashMap<&'static str, kube::core::cel::CompiledSchema>) = {
        let compiled = SCHEMAS
            .iter()
            .map(|(kind, schema)| (*kind, kube::core::cel::compile_schema(schema)))
            .collect();
        (kube::core::cel::Validator::new(), compiled)
    };
}

/// Collects the errors of one document, each with its line.
struct Errors<'a> {
    doc: &'a Document,
    list: Vec<FieldError>,
}

impl Errors<'_> {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        let line = self.doc.line_of(&path).or(Some(self.doc.start_line));
        self.list.push(FieldError { document: self.doc.index, path, line, message: message.into() });
    }
}

/// Metadata fields `kubectl get -o yaml` output carries that the server owns: accepted in a
/// manifest and ignored.
const IGNORED_METADATA: &[&str] =
    &["uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "finalizers", "ownerReferences"];

const TOP_LEVEL: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

/// Validates one document: apiVersion and kind, metadata, the CRD's structural schema, its
/// CEL rules, and finally typed deserialization. Every error of a stage is reported; a stage
/// runs only when the ones before it found nothing (the first three always run together).
pub fn validate(doc: &Document) -> Result<Resource, Vec<FieldError>> {
    let mut errors = Errors { doc, list: Vec::new() };
    let Value::Object(root) = &doc.value else {
        errors.push(
            "",
            format!(
                "a manifest must be a mapping with apiVersion, kind, metadata and spec, not {}",
                describe(&doc.value)
            ),
        );
        return Err(errors.list);
    };

    // 1. apiVersion and kind.
    match root.get("apiVersion") {
        Some(Value::String(v)) if v == crate::API_VERSION => {}
        None => errors.push("apiVersion", format!("required: set it to {}", crate::API_VERSION)),
        Some(other) => errors.push("apiVersion", format!("must be {:?}, not {}", crate::API_VERSION, describe(other))),
    }
    let kind = match root.get("kind") {
        Some(Value::String(k)) if k == "TrainingJob" => Some(Kind::TrainingJob),
        Some(Value::String(k)) if k == "Queue" => Some(Kind::Queue),
        Some(Value::String(k)) if k == "Pipeline" => Some(Kind::Pipeline),
        Some(Value::String(k)) if k == "PipelineRun" => Some(Kind::PipelineRun),
        Some(Value::String(k)) if k == "ModelDeployment" => Some(Kind::ModelDeployment),
        None => {
            errors.push("kind", format!("required: one of {KINDS}"));
            None
        }
        Some(other) => {
            errors.push("kind", format!("must be one of {KINDS}, not {}", describe(other)));
            None
        }
    };
    for key in root.keys() {
        if !TOP_LEVEL.contains(&key.as_str()) {
            errors.push(child_path("", key), unknown_field(key, TOP_LEVEL.iter().copied()));
        }
    }

    // 2. metadata.
    let metadata = check_metadata(root.get("metadata"), kind, &mut errors);

    // 3. The structural schema (status is ignored, as `kubectl apply` does with the status
    // subresource).
    let mut spec = root.get("spec").cloned();
    if let Some(kind) = kind {
        let before = errors.list.len();
        let spec_schema = &schema_of(kind)["properties"]["spec"];
        match &mut spec {
            None => errors.push("spec", "required"),
            Some(spec) => {
                check_schema(spec_schema, spec, "spec", &mut errors);
                if kind == Kind::TrainingJob {
                    check_reserved_env(spec, &mut errors);
                }
            }
        }
        errors.list[before..].sort_by_key(|e| e.line);
    }
    let Some(kind) = kind else { return Err(errors.list) };
    if !errors.list.is_empty() {
        return Err(errors.list);
    }

    let mut object = Map::new();
    object.insert("apiVersion".into(), crate::API_VERSION.into());
    object.insert("kind".into(), kind.name().into());
    object.insert("metadata".into(), Value::Object(metadata));
    object.insert("spec".into(), spec.unwrap_or_default());
    let object = Value::Object(object);

    // 4. CEL rules.
    let cel = CEL.with(|(validator, compiled)| validator.validate_compiled(&compiled[kind.name()], &object, None));
    if let Err(cel_errors) = cel {
        for e in cel_errors.iter() {
            errors.push(e.field_path.clone(), e.message.clone());
        }
        errors.list.sort_by_key(|e| e.line);
        return Err(errors.list);
    }

    // 5. Typed deserialization (an error here means the schema walk missed something).
    let typed = match kind {
        Kind::TrainingJob => serde_path_to_error::deserialize(object).map(Resource::TrainingJob),
        Kind::Queue => serde_path_to_error::deserialize(object).map(Resource::Queue),
        Kind::Pipeline => serde_path_to_error::deserialize(object).map(Resource::Pipeline),
        Kind::PipelineRun => serde_path_to_error::deserialize(object).map(Resource::PipelineRun),
        Kind::ModelDeployment => serde_path_to_error::deserialize(object).map(Resource::ModelDeployment),
    };
    // 6. What a schema cannot say: a Pipeline's DAG and `when` expressions.
    if let Ok(Resource::Pipeline(p)) = &typed {
        let problems = crate::pipeline::check_spec(&p.spec, "spec");
        if !problems.is_empty() {
            for p in problems {
                errors.push(p.path, p.message);
            }
            errors.list.sort_by_key(|e| e.line);
            return Err(errors.list);
        }
    }
    typed.map_err(|e| {
        let path = match e.path().to_string() {
            p if p == "." => String::new(),
            p => p,
        };
        errors.push(path, e.into_inner().to_string());
        errors.list
    })
}

/// Checks `metadata` and returns the part of it the typed resource keeps.
fn check_metadata(meta: Option<&Value>, kind: Option<Kind>, errors: &mut Errors) -> Map<String, Value> {
    let mut kept = Map::new();
    let meta = match meta {
        None | Some(Value::Null) => {
            errors.push("metadata.name", "required");
            return kept;
        }
        Some(Value::Object(m)) => m,
        Some(other) => {
            errors.push("metadata", format!("must be a mapping, not {}", describe(other)));
            return kept;
        }
    };
    match meta.get("name") {
        None | Some(Value::Null) => errors.push("metadata.name", "required"),
        Some(Value::String(name)) => {
            if let Some(problem) = dns_label_problem(name) {
                errors.push("metadata.name", format!("{name:?} is not a valid name: {problem}"));
            }
            kept.insert("name".into(), name.clone().into());
        }
        Some(other) => errors.push("metadata.name", format!("must be a string, not {}", describe(other))),
    }
    match (meta.get("namespace"), kind) {
        (None | Some(Value::Null), _) => {}
        (Some(_), Some(Kind::Queue)) => errors.push("metadata.namespace", "must not be set: a Queue is cluster-scoped"),
        (Some(Value::String(ns)), _) => {
            if let Some(problem) = dns_label_problem(ns) {
                errors.push("metadata.namespace", format!("{ns:?} is not a valid namespace: {problem}"));
            }
            kept.insert("namespace".into(), ns.clone().into());
        }
        (Some(other), _) => errors.push("metadata.namespace", format!("must be a string, not {}", describe(other))),
    }
    for field in ["labels", "annotations"] {
        let path = format!("metadata.{field}");
        match meta.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                let mut ok = true;
                for (k, v) in map {
                    if !v.is_string() {
                        ok = false;
                        let hint = if matches!(v, Value::Bool(_) | Value::Number(_) | Value::Null) {
                            format!(" (quote it: \"{}\")", if v.is_null() { String::new() } else { v.to_string() })
                        } else {
                            String::new()
                        };
                        errors.push(child_path(&path, k), format!("must be a string, not {}{hint}", describe(v)));
                    }
                }
                if ok {
                    kept.insert(field.into(), Value::Object(map.clone()));
                }
            }
            Some(other) => {
                errors.push(path, format!("must be a mapping of strings to strings, not {}", describe(other)))
            }
        }
    }
    for key in meta.keys() {
        match key.as_str() {
            "name" | "namespace" | "labels" | "annotations" => {}
            "generateName" => {
                errors.push("metadata.generateName", "is not supported: Capstan resources need a fixed metadata.name")
            }
            k if IGNORED_METADATA.contains(&k) => {}
            _ => errors
                .push(child_path("metadata", key), unknown_field(key, ["name", "namespace", "labels", "annotations"])),
        }
    }
    kept
}

/// Why `s` is not a DNS-1123 label, if it is not one.
fn dns_label_problem(s: &str) -> Option<&'static str> {
    const RULE: &str = "use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit";
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if ok {
        None
    } else {
        Some(RULE)
    }
}

fn check_reserved_env(spec: &Value, errors: &mut Errors) {
    let Some(env) = spec.get("env").and_then(Value::as_array) else { return };
    for (i, var) in env.iter().enumerate() {
        if let Some(name) = var.get("name").and_then(Value::as_str) {
            if RESERVED_ENV.contains(&name) {
                errors.push(
                    format!("spec.env[{i}].name"),
                    format!("{name} is reserved: Capstan sets the rendezvous variables itself"),
                );
            }
        }
    }
}

/// `unknown field "foo"`, with a suggestion when a known field is close.
fn unknown_field<'k>(key: &str, known: impl IntoIterator<Item = &'k str>) -> String {
    let normalized = |s: &str| s.replace(['_', '-'], "").to_ascii_lowercase();
    let key_n = normalized(key);
    let mut best: Option<(usize, &str)> = None;
    for candidate in known {
        let d = if normalized(candidate) == key_n { 0 } else { edit_distance(&key_n, &normalized(candidate)) };
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, candidate));
        }
    }
    match best {
        Some((d, candidate)) if d <= (key.chars().count() / 4).max(1) => {
            format!("unknown field {key:?}; did you mean {candidate:?}?")
        }
        _ => format!("unknown field {key:?}"),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A value for a person: `a string ("two")`, `an integer (3)`, `a list`.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) if n.is_f64() => format!("a number ({n})"),
        Value::Number(n) => format!("an integer ({n})"),
        Value::String(s) if s.chars().count() > 40 => {
            format!("a string ({:?}...)", s.chars().take(40).collect::<String>())
        }
        Value::String(s) => format!("a string ({s:?})"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

fn expected(schema: &Value) -> &'static str {
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return "an integer or a string";
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => "a string",
        Some("integer") => "an integer",
        Some("number") => "a number",
        Some("boolean") => "a boolean (true or false)",
        Some("array") => "a list",
        Some("object") => "a mapping",
        _ => "a value",
    }
}

fn bound(schema: &Value, key: &str) -> Option<f64> {
    schema.get(key).and_then(Value::as_f64)
}

fn format_bound(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// Checks `value` at `path` against a structural schema node (types, nullability, enums,
/// ranges, lengths, required and unknown fields), normalizing whole floats in integer fields
/// (`2.0`) to integers. Recursion follows the schema, whose depth is fixed.
fn check_schema(schema: &Value, value: &mut Value, path: &str, errors: &mut Errors) {
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            errors.push(path, format!("must be {}, not null", expected(schema)));
        }
        return;
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            errors.push(path, format!("must be an integer or a string, not {}", describe(value)));
        }
        return;
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let type_ok = match ty {
        Some("string") => value.is_string(),
        Some("boolean") => value.is_boolean(),
        Some("number") => value.is_number(),
        Some("array") => value.is_array(),
        Some("object") => value.is_object(),
        Some("integer") => {
            if let Some(f) = value.as_f64().filter(|_| value.is_f64()) {
                if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                    *value = Value::Number((f as i64).into());
                }
            }
            value.is_i64() || value.is_u64()
        }
        _ => true,
    };
    if !type_ok {
        let hint = if ty == Some("string") && matches!(value, Value::Bool(_) | Value::Number(_)) {
            format!("; quote it if you mean the text \"{value}\"")
        } else {
            String::new()
        };
        errors.push(path, format!("must be {}, not {}{hint}", expected(schema), describe(value)));
        return;
    }

    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            errors.push(path, format!("must be one of {}, not {}", list.join(", "), describe(value)));
            return;
        }
    }

    match value {
        Value::Number(n) => check_number(schema, n, path, errors),
        Value::String(s) => {
            let len = s.chars().count() as f64;
            if let Some(min) = bound(schema, "minLength").filter(|&m| len < m) {
                errors.push(path, format!("must be at least {} characters long", format_bound(min)));
            }
            if let Some(max) = bound(schema, "maxLength").filter(|&m| len > m) {
                errors.push(path, format!("must be at most {} characters long", format_bound(max)));
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                if !matches_pattern(pattern, s) {
                    errors.push(path, format!("{} must match the pattern {pattern}", describe(value)));
                }
            }
        }
        Value::Array(items) => {
            let len = items.len() as f64;
            if let Some(min) = bound(schema, "minItems").filter(|&m| len < m) {
                errors.push(path, format!("must have at least {} items", format_bound(min)));
            }
            if let Some(max) = bound(schema, "maxItems").filter(|&m| len > m) {
                errors.push(path, format!("must have at most {} items", format_bound(max)));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    check_schema(item_schema, item, &index_path(path, i), errors);
                }
            }
        }
        Value::Object(map) => check_object(schema, map, path, errors),
        Value::Null | Value::Bool(_) => {}
    }
}

fn check_number(schema: &Value, n: &Number, path: &str, errors: &mut Errors) {
    let x = n.as_f64().unwrap_or_default();
    let (mut min, mut max) = (bound(schema, "minimum"), bound(schema, "maximum"));
    // Integer formats bound the value too (typed deserialization would fail otherwise).
    let (fmin, fmax) = match schema.get("format").and_then(Value::as_str) {
        Some("int32") => (Some(f64::from(i32::MIN)), Some(f64::from(i32::MAX))),
        Some("uint32") => (Some(0.0), Some(f64::from(u32::MAX))),
        Some("int64") => (Some(i64::MIN as f64), Some(i64::MAX as f64)),
        Some("uint64") => (Some(0.0), Some(u64::MAX as f64)),
        _ => (None, None),
    };
    min = match (min, fmin) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    max = match (max, fmax) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let exclusive = |key: &str| schema.get(key) == Some(&Value::Bool(true));
    // Compare exactly where both sides are integers (u64 above 2^53 loses precision as f64).
    let below = |m: f64| match (n.as_i64(), n.as_u64()) {
        (Some(i), _) if m.fract() == 0.0 && m.abs() < 9.2e18 => i < m as i64,
        (None, Some(_)) => false,
        _ => x < m,
    };
    let above = |m: f64| match (n.as_i64(), n.as_u64()) {
        (Some(i), _) if m.fract() == 0.0 && m.abs() < 9.2e18 => i > m as i64,
        (None, Some(u)) if m.fract() == 0.0 && (0.0..1.8e19).contains(&m) => u > m as u64,
        _ => x > m,
    };
    if let Some(m) = min {
        if exclusive("exclusiveMinimum") && !above(m) {
            errors.push(path, format!("must be greater than {}", format_bound(m)));
        } else if below(m) {
            errors.push(path, format!("must be at least {}", format_bound(m)));
        }
    }
    if let Some(m) = max {
        if exclusive("exclusiveMaximum") && !below(m) {
            errors.push(path, format!("must be less than {}", format_bound(m)));
        } else if above(m) {
            errors.push(path, format!("must be at most {}", format_bound(m)));
        }
    }
}

fn check_object(schema: &Value, map: &mut Map<String, Value>, path: &str, errors: &mut Errors) {
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let len = map.len() as f64;
    if let Some(min) = bound(schema, "minProperties").filter(|&m| len < m) {
        errors.push(path, format!("must have at least {} entries", format_bound(min)));
    }
    if let Some(max) = bound(schema, "maxProperties").filter(|&m| len > m) {
        errors.push(path, format!("must have at most {} entries", format_bound(max)));
    }
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        let child = child_path(path, &key);
        match properties.and_then(|p| p.get(&key)) {
            Some(prop) => {
                let value = map.get_mut(&key).expect("key listed from the map");
                // A null in a non-nullable field with a default is dropped, as the API server
                // does before defaulting.
                if value.is_null() && prop.get("nullable") != Some(&Value::Bool(true)) && prop.get("default").is_some()
                {
                    map.remove(&key);
                    continue;
                }
                check_schema(prop, value, &child, errors);
            }
            None => match additional {
                Some(ap @ Value::Object(_)) => {
                    let value = map.get_mut(&key).expect("key listed from the map");
                    check_schema(ap, value, &child, errors);
                }
                Some(Value::Bool(true)) => {}
                _ if preserve => {}
                _ => {
                    let known = properties.into_iter().flat_map(|p| p.keys().map(String::as_str));
                    errors.push(child, unknown_field(&key, known));
                }
            },
        }
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(name) {
                errors.push(child_path(path, name), "required");
            }
        }
    }
}

/// Whether `s` matches an OpenAPI `pattern` (an ECMA-262 regex; the schemas' patterns use
/// only the subset Rust's `regex` shares with it). Compiled once per pattern and thread.
fn matches_pattern(pattern: &str, s: &str) -> bool {
    thread_local! {
        static CACHE: std::cell::RefCell<HashMap<String, Option<regex::Regex>>> = std::cell::RefCell::new(HashMap::new());
    }
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let re = cache.entry(pattern.to_string()).or_insert_with(|| regex::Regex::new(pattern).ok());
        // A pattern Rust cannot compile is the schema's bug, not the user's: accept the value.
        re.as_ref().is_none_or(|re| re.is_match(s))
    })
}
