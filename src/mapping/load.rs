//! Loading mapping files: TOML text → compiled [`Source`]s, or diagnostics at `file:line:col`.
//!
//! The files are parsed into toml's spanned document tree rather than through serde derive, so
//! that every problem — an unknown key, a bad JSONPath, a value out of range — is reported at
//! the exact key or value, with a "did you mean" hint for typos, and so that all problems in
//! all files are reported at once.

mod expressions;
mod verify_spec;

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diagnostic::{Diagnostic, Severity, SourceText, closest};
use super::expr::Expr;
use super::model::{Catalog, Field, Fields, Pattern, Rule, Source};
use super::shape::Shape;
use crate::greenflash::{Influence, ValueType, is_uuid};

/// Top-level tables of a mapping file.
pub const FILE_KEYS: &[&str] = &["source", "defaults", "rules"];
/// Keys of `[source]`.
pub const SOURCE_KEYS: &[&str] = &[
    "name",
    "verify",
    "event_id",
    "event_type",
    "occurred_at",
    "split",
];
/// Keys of `[source.verify]`.
pub const VERIFY_KEYS: &[&str] = &[
    "scheme",
    "secrets_env",
    "tolerance",
    "url",
    "header",
    "prefix",
    "algorithm",
    "encoding",
    "timestamp_header",
    "timestamp_format",
    "message",
    "secret_encoding",
];
/// Keys of a rule besides the output fields.
pub const RULE_KEYS: &[&str] = &["name", "on", "when", "drop", "properties"];
/// Keys that say where an expression's value comes from (exactly one per expression table).
pub const EXPR_SOURCES: &[&str] = &[
    "path", "literal", "template", "header", "first", "money", "sum",
];
/// Keys that refine an expression.
pub const EXPR_MODIFIERS: &[&str] = &[
    "currency", "each", "time", "lookup", "case", "to", "default",
];
/// Keys of a condition in `when`.
pub const CONDITION_KEYS: &[&str] = &[
    "path",
    "value",
    "equals",
    "not_equals",
    "in",
    "not_in",
    "exists",
    "missing",
    "gt",
    "gte",
    "lt",
    "lte",
    "matches",
];

/// A valid set of mapping files.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub catalog: Catalog,
    /// Problems that do not stop loading (e.g. `scheme = "none"`).
    pub warnings: Vec<Diagnostic>,
}

/// Loads every `*.toml` file directly in `dir`. Any error in any file fails the whole set, so
/// a half-valid directory can never go live.
pub fn load_dir(dir: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    let io_error = |path: &Path, e: std::io::Error| Diagnostic {
        file: path.to_path_buf(),
        line: 1,
        col: 1,
        severity: Severity::Error,
        message: format!("cannot read: {e}"),
        hint: None,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| vec![io_error(dir, e)])?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "toml")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    paths.sort();
    let mut files = Vec::new();
    let mut diagnostics = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => files.push((path, text)),
            Err(e) => diagnostics.push(io_error(&path, e)),
        }
    }
    let loaded = load_texts(&files);
    diagnostics.extend(match &loaded {
        Ok(l) => l.warnings.clone(),
        Err(d) => d.clone(),
    });
    if diagnostics.iter().any(|d| d.severity == Severity::Error) {
        return Err(diagnostics);
    }
    loaded
}

/// Loads mapping files given as `(path, text)` pairs (the path is used in diagnostics).
pub fn load_texts(files: &[(PathBuf, String)]) -> Result<Loaded, Vec<Diagnostic>> {
    let mut diagnostics = Vec::new();
    let mut sources: Vec<(Source, Range<usize>, &str)> = Vec::new();
    for (path, text) in files {
        let mut loader = Loader {
            text: SourceText { path, text },
            diagnostics: Vec::new(),
            sum_slots: HashMap::new(),
        };
        if let Some(found) = loader.file() {
            sources.push((found.0, found.1, text));
        }
        diagnostics.extend(loader.diagnostics);
    }
    let mut catalog = Catalog::default();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for (source, name_span, text) in sources {
        if let Some(first) = seen.get(&source.name) {
            let mut d = SourceText {
                path: &source.file,
                text,
            }
            .at(
                name_span,
                Severity::Error,
                format!(
                    "source name {:?} is already used by {}",
                    source.name,
                    first.display()
                ),
            );
            d.hint =
                Some("each source needs its own name: it is the URL path /webhooks/{name}".into());
            diagnostics.push(d);
            continue;
        }
        seen.insert(source.name.clone(), source.file.clone());
        catalog
            .sources
            .insert(source.name.clone(), Arc::new(source));
    }
    catalog.version = version_of(files);
    if diagnostics.iter().any(|d| d.severity == Severity::Error) {
        diagnostics.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
        return Err(diagnostics);
    }
    Ok(Loaded {
        catalog,
        warnings: diagnostics,
    })
}

/// FNV-1a over names and contents: stable across builds, short enough for a log line.
fn version_of(files: &[(PathBuf, String)]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (path, text) in files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        for byte in name
            .unwrap_or_default()
            .bytes()
            .chain([0])
            .chain(text.bytes())
        {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")[..12].to_string()
}

type Val<'i> = Spanned<DeValue<'i>>;

struct Loader<'a> {
    text: SourceText<'a>,
    diagnostics: Vec<Diagnostic>,
    /// The memo slot of each distinct `sum` in the file, by the text of its paths (see `Sums`).
    sum_slots: HashMap<Vec<String>, usize>,
}

impl<'a> Loader<'a> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let d = self.text.at(span, Severity::Error, message.into());
        self.diagnostics.push(d);
    }

    fn error_hint(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let mut d = self.text.at(span, Severity::Error, message.into());
        d.hint = Some(hint.into());
        self.diagnostics.push(d);
    }

    fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        let d = self.text.at(span, Severity::Warning, message.into());
        self.diagnostics.push(d);
    }

    /// The whole file: `[source]`, `[defaults]`, `[[rules]]`.
    fn file(&mut self) -> Option<(Source, Range<usize>)> {
        let text = self.text.text;
        let doc = match DeTable::parse(text) {
            Ok(doc) => doc,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                self.error(span, format!("TOML syntax: {}", e.message().trim()));
                return None;
            }
        };
        let doc = doc.get_ref();
        self.unknown_keys(doc, FILE_KEYS, "a mapping file");
        let source_table = self.required_table(doc, "source", 0..0, "a mapping file")?;
        let source = self.source(source_table);
        let defaults = match get(doc, "defaults") {
            Some(v) => match self.table(v, "[defaults]") {
                Some(t) => self.fields(t, &[], "[defaults]"),
                None => Fields::default(),
            },
            None => Fields::default(),
        };
        let mut rules = Vec::new();
        let mut names: HashMap<String, Range<usize>> = HashMap::new();
        if let Some(v) = get(doc, "rules") {
            match v.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        if let Some(table) = self.table(item, "a rule")
                            && let Some((rule, name_span)) =
                                self.rule(table, item.span(), &defaults)
                        {
                            if names.contains_key(&rule.name) {
                                self.error_hint(
                                    name_span.clone(),
                                    format!("duplicate rule name {:?}", rule.name),
                                    "rule names must be unique within a file: they are part of the default insert_id",
                                );
                            }
                            names.insert(rule.name.clone(), name_span);
                            rules.push(rule);
                        }
                    }
                }
                _ => self.error_hint(
                    v.span(),
                    "`rules` must be an array of tables",
                    "write each rule as a [[rules]] table",
                ),
            }
        }
        let (mut source, name_span) = source?;
        source.defaults = defaults;
        source.rules = rules;
        source.shape = source.reads();
        Some((source, name_span))
    }

    fn source(&mut self, table: &DeTable<'_>) -> Option<(Source, Range<usize>)> {
        self.unknown_keys(table, SOURCE_KEYS, "[source]");
        let name_val = self.required(table, "name", "[source]");
        let name = name_val.and_then(|v| self.string(v, "name"));
        if let (Some(name), Some(v)) = (name, name_val)
            && !valid_source_name(name)
        {
            self.error_hint(
                v.span(),
                format!("source name {name:?} is not usable in a URL"),
                "use lower-case letters, digits, '-' and '_' (it becomes /webhooks/{name})",
            );
        }
        let verify = get(table, "verify").and_then(|v| {
            let t = self.table(v, "verify")?;
            self.verify(t)
        });
        if get(table, "verify").is_none() {
            self.error_hint(
                self.table_start(table),
                "[source] has no `verify`",
                "add verify = { scheme = \"…\", secrets_env = \"…\" }; write scheme = \"none\" to accept unsigned webhooks explicitly",
            );
        }
        let event_id = self
            .required(table, "event_id", "[source]")
            .and_then(|v| self.expr(v));
        let event_type = self
            .required(table, "event_type", "[source]")
            .and_then(|v| self.expr(v));
        let occurred_at = get(table, "occurred_at").and_then(|v| self.expr(v));
        let split = get(table, "split").and_then(|v| {
            let s = self.string(v, "split")?;
            self.path(s, v.span())
        });
        Some((
            Source {
                name: name?.to_string(),
                file: self.text.path.to_path_buf(),
                verify: verify?,
                split,
                event_id: event_id?,
                event_type: event_type?,
                occurred_at,
                defaults: Fields::default(),
                rules: Vec::new(),
                shape: Shape::whole(),
            },
            name_val?.span(),
        ))
    }

    fn rule(
        &mut self,
        table: &DeTable<'_>,
        span: Range<usize>,
        defaults: &Fields,
    ) -> Option<(Rule, Range<usize>)> {
        let field_keys: Vec<&str> = Field::ALL.iter().map(|f| f.key()).collect();
        let mut allowed = RULE_KEYS.to_vec();
        allowed.extend(&field_keys);
        self.unknown_keys(table, &allowed, "a rule");
        let name_val = self.required_at(table, "name", "a rule", span.clone());
        let name = name_val
            .and_then(|v| self.string(v, "name"))
            .map(str::to_string);
        let on = match get(table, "on") {
            None => {
                self.error_hint(
                    name_val.map_or(span.clone(), |v| v.span()),
                    "rule has no `on`",
                    "list the provider event types it handles, e.g. on = [\"invoice.paid\"] or on = \"invoice.*\"",
                );
                None
            }
            Some(v) => self.patterns(v),
        };
        let mut when = Vec::new();
        if let Some(v) = get(table, "when") {
            match v.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        if let Some(c) = self.condition(item) {
                            when.push(c);
                        }
                    }
                }
                DeValue::Table(_) => {
                    if let Some(c) = self.condition(v) {
                        when.push(c);
                    }
                }
                _ => self.error(v.span(), "`when` must be a list of conditions, e.g. when = [{ path = \"$.a\", equals = 1 }]"),
            }
        }
        let drop = match get(table, "drop") {
            Some(v) => match v.get_ref() {
                DeValue::Boolean(b) => *b,
                _ => {
                    self.error(v.span(), "`drop` must be true or false");
                    false
                }
            },
            None => false,
        };
        let fields = self.fields(table, RULE_KEYS, "a rule");
        let name_span = name_val?.span();
        if !drop {
            for field in [Field::EventType, Field::Value] {
                if fields.get(field).is_none() && defaults.get(field).is_none() {
                    self.error_hint(
                        name_span.clone(),
                        format!(
                            "rule {:?} cannot produce `{}`",
                            name.as_deref().unwrap_or(""),
                            field.key()
                        ),
                        format!(
                            "set {} in the rule or in [defaults], or mark the rule drop = true",
                            field.key()
                        ),
                    );
                }
            }
        }
        Some((
            Rule {
                name: name?,
                on: on?,
                when,
                drop,
                fields,
            },
            name_span,
        ))
    }

    fn patterns(&mut self, v: &Val<'_>) -> Option<Vec<Pattern>> {
        let items: Vec<&Val<'_>> = match v.get_ref() {
            DeValue::String(_) => vec![v],
            DeValue::Array(items) => items.iter().collect(),
            _ => {
                self.error(v.span(), "`on` must be an event type or a list of them");
                return None;
            }
        };
        if items.is_empty() {
            self.error(v.span(), "`on` is empty: the rule would never match");
            return None;
        }
        let mut out = Vec::new();
        for item in items {
            out.push(Pattern::new(self.string(item, "an event type")?));
        }
        Some(out)
    }

    /// The output fields of a rule or of `[defaults]` (`skip` lists the table's other keys).
    fn fields(&mut self, table: &DeTable<'_>, skip: &[&str], context: &str) -> Fields {
        let mut fields = Fields::default();
        if context == "[defaults]" {
            let mut allowed: Vec<&str> = Field::ALL.iter().map(|f| f.key()).collect();
            allowed.push("properties");
            self.unknown_keys(table, &allowed, context);
        }
        for (key, value) in table.iter() {
            let key = key.get_ref().as_ref();
            if key == "properties" {
                if let Some(props) = self.table(value, "properties") {
                    for (name, v) in props.iter() {
                        if let Some(e) = self.expr(v) {
                            fields.properties.push((name.get_ref().to_string(), e));
                        }
                    }
                }
                continue;
            }
            if skip.contains(&key) {
                continue;
            }
            let Some(field) = Field::from_key(key) else {
                continue;
            };
            if let Some(expr) = self.expr(value) {
                self.check_literal(field, &expr, value.span());
                fields.set(field, expr);
            }
        }
        fields
    }

    /// Load-time checks of literal output values, so `check` proves what it can.
    fn check_literal(&mut self, field: Field, expr: &Expr, span: Range<usize>) {
        let Some(value) = expr.as_literal() else {
            return;
        };
        let text = value.as_str();
        let problem: Option<(String, Option<String>)> = match field {
            Field::EventType if text.is_none_or(|t| t.trim().is_empty()) => {
                Some(("event_type must be a non-empty string".into(), None))
            }
            Field::ValueType if text.and_then(ValueType::parse).is_none() => Some((
                format!("value_type {value} is not valid"),
                Some(one_of(text, ValueType::NAMES)),
            )),
            Field::Influence if text.and_then(Influence::parse).is_none() => Some((
                format!("influence {value} is not valid"),
                Some(one_of(text, Influence::NAMES)),
            )),
            Field::QualityImpactScore
                if !value.as_f64().is_some_and(|x| (-1.0..=1.0).contains(&x)) =>
            {
                Some((
                    format!("quality_impact_score {value} is outside [-1, 1]"),
                    None,
                ))
            }
            Field::SampleRate if !value.as_f64().is_some_and(|x| (0.0..=1.0).contains(&x)) => {
                Some((format!("sample_rate {value} is outside [0, 1]"), None))
            }
            Field::ForceSample if !value.is_boolean() => {
                Some(("force_sample must be true or false".into(), None))
            }
            Field::ConversationId | Field::UserId | Field::OrganizationId
                if !text.is_some_and(is_uuid) =>
            {
                Some((
                    format!("{} {value} is not a UUID", field.key()),
                    Some(format!(
                        "Greenflash expects a UUID here; for your own ids use external_{}",
                        field.key()
                    )),
                ))
            }
            Field::ProductId if !text.is_some_and(is_uuid) => {
                Some((format!("product_id {value} is not a UUID"), None))
            }
            _ => None,
        };
        match problem {
            Some((message, Some(hint))) => self.error_hint(span, message, hint),
            Some((message, None)) => self.error(span, message),
            None => {}
        }
    }

    /// One of `names`, parsed by `parse`; an unknown name is an error that lists them.
    fn enumerated<T>(
        &mut self,
        v: &Val<'_>,
        key: &str,
        names: &[&str],
        parse: impl Fn(&str) -> Option<T>,
    ) -> Option<T> {
        let s = self.string(v, key)?;
        let parsed = parse(s);
        if parsed.is_none() {
            self.error_hint(
                v.span(),
                format!("unknown {key} {s:?}"),
                one_of(Some(s), names),
            );
        }
        parsed
    }

    fn string<'v>(&mut self, v: &'v Val<'_>, what: &str) -> Option<&'v str> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            other => {
                self.error(
                    v.span(),
                    format!("`{what}` must be a string, not {}", other.type_str()),
                );
                None
            }
        }
    }

    fn table<'v, 'i>(&mut self, v: &'v Val<'i>, what: &str) -> Option<&'v DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.error(
                    v.span(),
                    format!("{what} must be a table, not {}", other.type_str()),
                );
                None
            }
        }
    }

    fn required<'v, 'i>(
        &mut self,
        table: &'v DeTable<'i>,
        key: &str,
        context: &str,
    ) -> Option<&'v Val<'i>> {
        let at = self.table_start(table);
        self.required_at(table, key, context, at)
    }

    fn required_at<'v, 'i>(
        &mut self,
        table: &'v DeTable<'i>,
        key: &str,
        context: &str,
        at: Range<usize>,
    ) -> Option<&'v Val<'i>> {
        let found = get(table, key);
        if found.is_none() {
            self.error(at, format!("{context} is missing `{key}`"));
        }
        found
    }

    fn required_table<'v, 'i>(
        &mut self,
        doc: &'v DeTable<'i>,
        key: &str,
        at: Range<usize>,
        context: &str,
    ) -> Option<&'v DeTable<'i>> {
        let v = self.required_at(doc, key, context, at)?;
        self.table(v, &format!("[{key}]"))
    }

    /// Where to point for a problem with a table as a whole: its first key.
    fn table_start(&self, table: &DeTable<'_>) -> Range<usize> {
        table.iter().next().map_or(0..0, |(k, _)| k.span())
    }

    fn unknown_keys(&mut self, table: &DeTable<'_>, allowed: &[&str], context: &str) {
        for (key, _) in table.iter() {
            let name = key.get_ref().as_ref();
            if allowed.contains(&name) {
                continue;
            }
            let message = format!("unknown key `{name}` in {context}");
            match closest(name, allowed) {
                Some(c) => self.error_hint(key.span(), message, format!("did you mean `{c}`?")),
                None => self.error_hint(
                    key.span(),
                    message,
                    format!("allowed here: {}", allowed.join(", ")),
                ),
            }
        }
    }
}

fn get<'v, 'i>(table: &'v DeTable<'i>, key: &str) -> Option<&'v Val<'i>> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, v)| v)
}

fn key_span(table: &DeTable<'_>, key: &str) -> Range<usize> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map_or(0..0, |(k, _)| k.span())
}

fn one_of(found: Option<&str>, names: &[&str]) -> String {
    match found.and_then(|f| closest(f, names)) {
        Some(c) => format!("did you mean {c:?}? expected one of {}", names.join(", ")),
        None => format!("expected one of {}", names.join(", ")),
    }
}

fn valid_source_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b.is_ascii_lowercase()
        })
}
