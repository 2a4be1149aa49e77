//! Loading mapping files: TOML text → compiled [`Source`]s, or diagnostics at `file:line:col`.
//!
//! The files are parsed into toml's spanned document tree rather than through serde derive, so
//! that every problem — an unknown key, a bad JSONPath, a value out of range — is reported at
//! the exact key or value, with a "did you mean" hint for typos, and so that all problems in
//! all files are reported at once.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use regex::Regex;
use serde_json::Value;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::condition::{Condition, Test};
use super::diagnostic::{Diagnostic, Severity, SourceText, closest};
use super::expr::{Case, Coerce, Expr, Part, Var};
use super::model::{Catalog, Field, Fields, Pattern, Rule, Source};
use super::path::JsonPath;
use super::shape::Shape;
use crate::greenflash::{Influence, ValueType, is_uuid};
use crate::units::TimeFormat;
use crate::verify::{
    Algorithm, Encoding, HmacOptions, Scheme, SecretEncoding, Spec, parse_message,
};

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
/// Keys of `verify` that only `scheme = "hmac"` takes.
const HMAC_KEYS: &[&str] = &[
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

    fn verify(&mut self, table: &DeTable<'_>) -> Option<Spec> {
        self.unknown_keys(table, VERIFY_KEYS, "verify");
        let scheme_val = self.required(table, "scheme", "verify")?;
        let scheme_name = self.string(scheme_val, "scheme")?;
        let Some(scheme) = Scheme::parse(scheme_name) else {
            let hint = match closest(scheme_name, Scheme::NAMES) {
                Some(c) => format!(
                    "did you mean {c:?}? known schemes: {}",
                    Scheme::NAMES.join(", ")
                ),
                None => format!("known schemes: {}", Scheme::NAMES.join(", ")),
            };
            self.error_hint(
                scheme_val.span(),
                format!("unknown verify scheme {scheme_name:?}"),
                hint,
            );
            return None;
        };
        if scheme == Scheme::None {
            self.warn(
                scheme_val.span(),
                "signatures are not verified for this source (scheme = \"none\")",
            );
        }
        let secrets_env = match get(table, "secrets_env") {
            Some(v) => {
                let name = self.string(v, "secrets_env")?;
                if !valid_env_name(name) {
                    self.error_hint(
                        v.span(),
                        format!("{name:?} is not an environment variable name"),
                        "name the variable (e.g. \"STRIPE_WEBHOOK_SECRET\"); put the secret itself, or several separated by commas, in that variable",
                    );
                }
                Some(name.to_string())
            }
            None if scheme.needs_secret() => {
                self.error_hint(
                    self.table_start(table),
                    format!("scheme {scheme_name:?} needs `secrets_env`"),
                    "name the environment variable that holds the signing secret",
                );
                None
            }
            None => None,
        };
        let tolerance = get(table, "tolerance").and_then(|v| {
            let s = self.string(v, "tolerance")?;
            match crate::units::parse_duration(s) {
                Ok(d) => Some(d),
                Err(why) => {
                    self.error(v.span(), format!("bad duration: {why}"));
                    None
                }
            }
        });
        let url = get(table, "url").and_then(|v| self.string(v, "url").map(str::to_string));
        if scheme.needs_url() && url.is_none() {
            self.error_hint(
                scheme_val.span(),
                format!("scheme {scheme_name:?} signs the URL the provider calls: add `url`"),
                "e.g. url = \"https://hooks.example.com/webhooks/NAME\", exactly as configured at the provider",
            );
        }
        let header =
            get(table, "header").and_then(|v| self.string(v, "header").map(str::to_string));
        if scheme.needs_header() && header.is_none() {
            self.error_hint(
                scheme_val.span(),
                format!("scheme {scheme_name:?} needs `header`"),
                "name the request header that carries the signature or token",
            );
        }
        let prefix = get(table, "prefix").and_then(|v| {
            if !matches!(scheme, Scheme::Hmac | Scheme::Token) {
                self.error(
                    v.span(),
                    "`prefix` applies only to schemes \"hmac\" and \"token\"",
                );
            }
            self.string(v, "prefix").map(str::to_string)
        });
        for key in HMAC_KEYS {
            if scheme != Scheme::Hmac && get(table, key).is_some() {
                self.error(
                    key_span(table, key),
                    format!("`{key}` applies only to scheme = \"hmac\""),
                );
            }
        }
        let hmac = if scheme == Scheme::Hmac {
            Some(self.hmac_options(table, prefix.clone())?)
        } else {
            None
        };
        Some(Spec {
            scheme,
            secrets_env,
            tolerance,
            url,
            header,
            prefix,
            hmac,
        })
    }

    fn hmac_options(&mut self, table: &DeTable<'_>, prefix: Option<String>) -> Option<HmacOptions> {
        let algorithm = match get(table, "algorithm") {
            Some(v) => self.enumerated(v, "algorithm", Algorithm::NAMES, Algorithm::parse)?,
            None => Algorithm::Sha256,
        };
        let encoding = match get(table, "encoding") {
            Some(v) => self.enumerated(v, "encoding", Encoding::NAMES, Encoding::parse)?,
            None => Encoding::Hex,
        };
        let timestamp_format = match get(table, "timestamp_format") {
            Some(v) => {
                self.enumerated(v, "timestamp_format", TimeFormat::NAMES, TimeFormat::parse)?
            }
            None => TimeFormat::Unix,
        };
        let secret_encoding = match get(table, "secret_encoding") {
            Some(v) => self.enumerated(
                v,
                "secret_encoding",
                SecretEncoding::NAMES,
                SecretEncoding::parse,
            )?,
            None => SecretEncoding::Utf8,
        };
        let timestamp_header = get(table, "timestamp_header")
            .and_then(|v| self.string(v, "timestamp_header").map(str::to_string));
        let message = match get(table, "message") {
            Some(v) => {
                let text = self.string(v, "message")?;
                match parse_message(text) {
                    Ok(parts) => {
                        if parts.contains(&crate::verify::MessagePart::Timestamp)
                            && timestamp_header.is_none()
                        {
                            self.error(
                                v.span(),
                                "the message uses {timestamp} but `timestamp_header` is not set",
                            );
                        }
                        Some(parts)
                    }
                    Err(why) => {
                        self.error(v.span(), why);
                        return None;
                    }
                }
            }
            None => None,
        };
        Some(HmacOptions {
            algorithm,
            encoding,
            prefix,
            timestamp_header,
            timestamp_format,
            message,
            secret_encoding,
        })
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

    fn condition(&mut self, v: &Val<'_>) -> Option<Condition> {
        let table = self.table(v, "a condition")?;
        self.unknown_keys(table, CONDITION_KEYS, "a condition");
        let (subject, subject_text) = match (get(table, "path"), get(table, "value")) {
            (Some(p), None) => {
                let s = self.string(p, "path")?;
                (Expr::Path(self.path(s, p.span())?), s.to_string())
            }
            (None, Some(e)) => (self.expr(e)?, "value".to_string()),
            (Some(_), Some(e)) => {
                self.error(e.span(), "a condition takes `path` or `value`, not both");
                return None;
            }
            (None, None) => {
                self.error_hint(
                    v.span(),
                    "a condition needs `path` (or `value`)",
                    "e.g. { path = \"$.data.object.status\", equals = \"active\" }",
                );
                return None;
            }
        };
        let mut tests = Vec::new();
        for (key, value) in table.iter() {
            let key = key.get_ref().as_ref();
            let test = match key {
                "equals" => Test::Equals(self.expr(value)?),
                "not_equals" => Test::NotEquals(self.expr(value)?),
                "gt" => Test::Gt(self.expr(value)?),
                "gte" => Test::Gte(self.expr(value)?),
                "lt" => Test::Lt(self.expr(value)?),
                "lte" => Test::Lte(self.expr(value)?),
                "in" | "not_in" => {
                    let DeValue::Array(items) = value.get_ref() else {
                        self.error(value.span(), format!("`{key}` must be a list of values"));
                        return None;
                    };
                    let options: Option<Vec<Expr>> = items.iter().map(|i| self.expr(i)).collect();
                    if key == "in" {
                        Test::In(options?)
                    } else {
                        Test::NotIn(options?)
                    }
                }
                "exists" | "missing" => {
                    let DeValue::Boolean(b) = value.get_ref() else {
                        self.error(value.span(), format!("`{key}` must be true or false"));
                        return None;
                    };
                    Test::Exists(*b == (key == "exists"))
                }
                "matches" => {
                    let pattern = self.string(value, "matches")?;
                    match Regex::new(pattern) {
                        Ok(re) => Test::Matches(re),
                        Err(e) => {
                            self.error(value.span(), format!("invalid regex: {e}"));
                            return None;
                        }
                    }
                }
                _ => continue,
            };
            tests.push(test);
        }
        if tests.is_empty() {
            self.error_hint(v.span(), "a condition needs a test", "add one of equals, not_equals, in, not_in, exists, missing, gt, gte, lt, lte, matches");
            return None;
        }
        Some(Condition {
            subject,
            subject_text,
            tests,
        })
    }

    /// An expression: `"$.path"`, a literal, or a table with one source key and modifiers.
    fn expr(&mut self, v: &Val<'_>) -> Option<Expr> {
        match v.get_ref() {
            DeValue::String(s) if s.starts_with('$') => Some(Expr::Path(self.path(s, v.span())?)),
            DeValue::Table(table) => self.expr_table(table, v.span()),
            DeValue::Array(_) => {
                self.error_hint(v.span(), "a list is not a value here", "to try several paths in turn write { first = [\"$.a\", \"$.b\"] }; for a literal list write { literal = [...] }");
                None
            }
            _ => Some(Expr::Literal(self.literal(v)?)),
        }
    }

    fn expr_table(&mut self, table: &DeTable<'_>, span: Range<usize>) -> Option<Expr> {
        let mut allowed = EXPR_SOURCES.to_vec();
        allowed.extend(EXPR_MODIFIERS);
        self.unknown_keys(table, &allowed, "an expression");
        let sources: Vec<&str> = table
            .iter()
            .map(|(k, _)| k.get_ref().as_ref())
            .filter(|k| EXPR_SOURCES.contains(k))
            .collect();
        let source_key = match sources.as_slice() {
            [one] => *one,
            [] => {
                self.error_hint(
                    span,
                    "this expression does not say where its value comes from",
                    format!("add one of {}", EXPR_SOURCES.join(", ")),
                );
                return None;
            }
            [_, second, ..] => {
                let second_span = table
                    .iter()
                    .find(|(k, _)| k.get_ref().as_ref() == *second)
                    .map_or(span.clone(), |(k, _)| k.span());
                self.error(
                    second_span,
                    format!(
                        "an expression takes one of {}; found both `{}` and `{second}`",
                        EXPR_SOURCES.join(", "),
                        sources[0]
                    ),
                );
                return None;
            }
        };
        let v = get(table, source_key)?;
        let for_key = |key: &str| get(table, key);
        if for_key("currency").is_some() && source_key != "money" {
            self.error(key_span(table, "currency"), "`currency` goes with `money`");
        }
        if for_key("each").is_some() && source_key != "sum" {
            self.error(key_span(table, "each"), "`each` goes with `sum`");
        }
        let base = match source_key {
            "path" => {
                let s = self.string(v, "path")?;
                if !s.starts_with('$') {
                    self.error_hint(
                        v.span(),
                        format!("path {s:?} does not start with `$`"),
                        "JSONPaths start at the root, e.g. \"$.data.object.id\"",
                    );
                    return None;
                }
                Expr::Path(self.path(s, v.span())?)
            }
            "literal" => Expr::Literal(self.literal(v)?),
            "template" => {
                let s = self.string(v, "template")?;
                Expr::Template(self.template(s, v.span())?)
            }
            "header" => Expr::Header(self.string(v, "header")?.to_ascii_lowercase()),
            "first" => {
                let DeValue::Array(items) = v.get_ref() else {
                    self.error(v.span(), "`first` must be a list of expressions");
                    return None;
                };
                if items.is_empty() {
                    self.error(v.span(), "`first` is empty");
                    return None;
                }
                let options: Option<Vec<Expr>> = items.iter().map(|i| self.expr(i)).collect();
                Expr::First(options?)
            }
            "money" => {
                let amount = self.expr(v)?;
                let Some(currency) = for_key("currency") else {
                    self.error_hint(
                        v.span(),
                        "`money` needs `currency`",
                        "e.g. { money = \"$.amount\", currency = \"$.currency\" }",
                    );
                    return None;
                };
                Expr::Money {
                    amount: Box::new(amount),
                    currency: Box::new(self.expr(currency)?),
                }
            }
            "sum" => {
                let s = self.string(v, "sum")?;
                let over = self.path(s, v.span())?;
                let mut each = Vec::new();
                if let Some(e) = for_key("each") {
                    let DeValue::Array(items) = e.get_ref() else {
                        self.error(e.span(), "`each` must be a list of paths relative to each element, e.g. [\"$.price.unit_amount\", \"$.quantity\"]");
                        return None;
                    };
                    for item in items.iter() {
                        let p = self.string(item, "a path")?;
                        each.push(self.path(p, item.span())?);
                    }
                }
                // Sums written alike read the same values, so they share a slot.
                let key = std::iter::once(&over)
                    .chain(&each)
                    .map(|path| path.as_str().to_string())
                    .collect();
                let next = self.sum_slots.len();
                let slot = *self.sum_slots.entry(key).or_insert(next);
                Expr::Sum { over, each, slot }
            }
            _ => return None,
        };
        let time = for_key("time")
            .and_then(|v| self.enumerated(v, "time", TimeFormat::NAMES, TimeFormat::parse));
        let case = for_key("case").and_then(|v| {
            self.enumerated(v, "case", &["upper", "lower"], |s| match s {
                "upper" => Some(Case::Upper),
                "lower" => Some(Case::Lower),
                _ => None,
            })
        });
        let to = for_key("to").and_then(|v| {
            self.enumerated(v, "to", &["string", "number", "boolean"], |s| match s {
                "string" => Some(Coerce::String),
                "number" => Some(Coerce::Number),
                "boolean" => Some(Coerce::Boolean),
                _ => None,
            })
        });
        let lookup = match for_key("lookup") {
            None => None,
            Some(v) => {
                let t = self.table(v, "lookup")?;
                let mut map = HashMap::new();
                for (k, item) in t.iter() {
                    map.insert(k.get_ref().to_string(), self.literal(item)?);
                }
                Some(map)
            }
        };
        let default = match for_key("default") {
            None => None,
            Some(v) => Some(Box::new(self.expr(v)?)),
        };
        if time.is_none() && case.is_none() && to.is_none() && lookup.is_none() && default.is_none()
        {
            return Some(base);
        }
        Some(Expr::Convert {
            input: Box::new(base),
            time,
            lookup,
            case,
            to,
            default,
        })
    }

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

    /// `"text {$.path} {event_id}"`; `{{` and `}}` stand for literal braces.
    fn template(&mut self, s: &str, span: Range<usize>) -> Option<Vec<Part>> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(i) = rest.find(['{', '}']) {
            text.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                text.push(tail.as_bytes()[0] as char);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                self.error_hint(
                    span,
                    "unmatched `}` in template",
                    "write `}}` for a literal brace",
                );
                return None;
            }
            let Some(end) = tail.find('}') else {
                self.error_hint(
                    span,
                    "unclosed `{` in template",
                    "write `{{` for a literal brace",
                );
                return None;
            };
            let inner = tail[1..end].trim();
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            if inner.starts_with('$') {
                parts.push(Part::Path(self.path(inner, span.clone())?));
            } else if let Some(var) = Var::parse(inner) {
                parts.push(Part::Var(var));
            } else {
                self.error_hint(
                    span,
                    format!("unknown template placeholder {{{inner}}}"),
                    format!(
                        "use a JSONPath like {{$.id}} or one of {}",
                        Var::NAMES
                            .iter()
                            .map(|n| format!("{{{n}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                return None;
            }
            rest = &tail[end + 1..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Some(parts)
    }

    fn path(&mut self, text: &str, span: Range<usize>) -> Option<JsonPath> {
        match JsonPath::parse(text) {
            Ok(p) => Some(p),
            Err(e) => {
                // The span starts at the opening quote; point at the offending character
                // inside the string (exact for strings without escapes).
                let inside = text
                    .char_indices()
                    .nth(e.column.saturating_sub(1))
                    .map_or(text.len(), |(i, _)| i);
                let at = (span.start + 1 + inside).min(span.end.saturating_sub(1).max(span.start));
                self.error(at..at + 1, e.message);
                None
            }
        }
    }

    fn literal(&mut self, v: &Val<'_>) -> Option<Value> {
        Some(match v.get_ref() {
            DeValue::String(s) => Value::String(s.to_string()),
            DeValue::Boolean(b) => Value::Bool(*b),
            DeValue::Integer(i) => {
                let digits = i.as_str().replace('_', "");
                let digits = digits
                    .trim_start_matches("0x")
                    .trim_start_matches("0o")
                    .trim_start_matches("0b");
                match i64::from_str_radix(digits, i.radix()) {
                    Ok(n) => Value::from(n),
                    Err(_) => {
                        self.error(v.span(), "integer out of range");
                        return None;
                    }
                }
            }
            DeValue::Float(f) => match f
                .as_str()
                .replace('_', "")
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
            {
                Some(n) => Value::Number(n),
                None => {
                    self.error(v.span(), "not a finite number");
                    return None;
                }
            },
            DeValue::Datetime(d) => Value::String(d.to_string()),
            DeValue::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.literal(i))
                    .collect::<Option<_>>()?,
            ),
            DeValue::Table(t) => {
                let mut map = serde_json::Map::new();
                for (k, item) in t.iter() {
                    map.insert(k.get_ref().to_string(), self.literal(item)?);
                }
                Value::Object(map)
            }
        })
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
