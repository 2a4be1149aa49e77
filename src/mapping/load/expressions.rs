//! Loading the expressions of a rule: `when` conditions, value expressions (paths, literals,
//! templates, headers, `first`, `money`, `sum` and their modifiers) and JSONPaths.

use std::collections::HashMap;
use std::ops::Range;

use regex::Regex;
use serde_json::Value;
use toml::de::{DeTable, DeValue};

use super::{CONDITION_KEYS, EXPR_MODIFIERS, EXPR_SOURCES, Loader, Val, get, key_span};
use crate::mapping::condition::{Condition, Test};
use crate::mapping::expr::{Case, Coerce, Expr, Part, Var};
use crate::mapping::path::JsonPath;
use crate::units::TimeFormat;

impl Loader<'_> {
    pub(super) fn condition(&mut self, v: &Val<'_>) -> Option<Condition> {
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
    pub(super) fn expr(&mut self, v: &Val<'_>) -> Option<Expr> {
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

    pub(super) fn path(&mut self, text: &str, span: Range<usize>) -> Option<JsonPath> {
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
}
