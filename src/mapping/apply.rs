//! Running a source's rules over a webhook body: split, identify, match, build, validate.
//! Pure and deterministic: no I/O, no clock.

use serde::Serialize;
use serde_json::{Map, Value};

use super::expr::{Expr, Part, Scope, Sums, Var};
use super::model::{Field, Rule, Source};
use super::transform;
use crate::greenflash::{Event, Influence, ValueType};
use crate::inbound::Headers;

/// What mapping needs from outside the mapping files.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options<'a> {
    /// `GREENFLASH_PRODUCT_ID`: the productId when a mapping sets none.
    pub default_product_id: Option<&'a str>,
    /// Record, for every rule, whether it matched and why (for `map --explain`).
    pub explain: bool,
}

/// One provider event (a webhook body holds one, or several when the source splits it) and
/// what the rules made of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderEvent {
    pub id: String,
    pub event_type: String,
    pub emitted: Vec<Emitted>,
    pub failures: Vec<Failure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_by: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trace: Vec<RuleTrace>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Emitted {
    pub rule: String,
    pub event: Event,
}

/// A rule matched but could not produce a valid event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub rule: String,
    pub reason: String,
}

/// `map --explain`: what one rule did with one provider event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleTrace {
    pub rule: String,
    pub matched: bool,
    /// Why the rule did not match, or why a matching rule failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Fields that were absent (omitted) or came from `[defaults]` or a built-in default.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The visible state of a provider event once mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// At least one rule emitted, and none failed.
    Mapped,
    /// No rule matched, or a drop rule did.
    Ignored,
    /// A matching rule could not produce a valid event (its reason is recorded).
    MappingFailed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mapped => "mapped",
            Self::Ignored => "ignored",
            Self::MappingFailed => "mapping_failed",
        }
    }
}

impl ProviderEvent {
    /// Why the event is ignored or failed, as recorded for operators; `None` when mapped.
    pub fn detail(&self) -> Option<String> {
        if let Some(rule) = &self.dropped_by {
            Some(format!("dropped by rule {rule}"))
        } else if !self.failures.is_empty() {
            let reasons: Vec<String> = self
                .failures
                .iter()
                .map(|f| format!("rule {}: {}", f.rule, f.reason))
                .collect();
            Some(reasons.join("; "))
        } else if self.emitted.is_empty() {
            Some("no rule matched".to_string())
        } else {
            None
        }
    }

    pub fn status(&self) -> Status {
        if !self.failures.is_empty() {
            Status::MappingFailed
        } else if self.emitted.is_empty() {
            Status::Ignored
        } else {
            Status::Mapped
        }
    }
}

/// The body does not say which event it is; the provider gets a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifyError {
    #[error("event {index}: no event id at {path}")]
    NoEventId { index: usize, path: String },
    #[error("event {index}: no event type at {path}")]
    NoEventType { index: usize, path: String },
    #[error("the body should be an array of events (split = {path}) but nothing matched")]
    NothingToSplit { path: String },
}

impl Source {
    /// The body as the rules see it: JSON, parsed only as far as the rules read it (see
    /// `shape`). Form-encoded bodies (Twilio, Slack) become an object of their fields (a
    /// repeated field becomes a list), so rules map them like any other payload.
    pub fn parse_body(&self, headers: &Headers, body: &[u8]) -> Result<Value, serde_json::Error> {
        const FORM: &str = "application/x-www-form-urlencoded";
        let is_form = headers.get_str("content-type").is_some_and(|t| {
            t.trim_start()
                .get(..FORM.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(FORM))
        });
        if !is_form {
            return self.shape.parse(body);
        }
        let mut map = Map::new();
        for (key, value) in form_urlencoded::parse(body) {
            let value = Value::String(value.into_owned());
            match map.get_mut(key.as_ref()) {
                None => {
                    map.insert(key.into_owned(), value);
                }
                Some(Value::Array(items)) => items.push(value),
                Some(existing) => {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, value]);
                }
            }
        }
        Ok(Value::Object(map))
    }

    /// Maps a parsed webhook body into provider events and their Greenflash events.
    pub fn apply(
        &self,
        body: &Value,
        headers: &Headers,
        options: &Options<'_>,
    ) -> Result<Vec<ProviderEvent>, IdentifyError> {
        let elements = match &self.split {
            None => vec![body],
            Some(path) => {
                let found = path.all(body);
                if found.is_empty() {
                    return Err(IdentifyError::NothingToSplit {
                        path: path.as_str().to_string(),
                    });
                }
                found
            }
        };
        elements
            .into_iter()
            .enumerate()
            .map(|(index, doc)| {
                let sums = Sums::default();
                let bare = Scope {
                    doc,
                    headers,
                    source: &self.name,
                    event_id: "",
                    event_type: "",
                    rule: "",
                    sums: &sums,
                };
                let text = |expr: &Expr| expr.eval(&bare).and_then(transform::into_text);
                let id = text(&self.event_id).ok_or_else(|| IdentifyError::NoEventId {
                    index,
                    path: describe(&self.event_id),
                })?;
                let event_type =
                    text(&self.event_type).ok_or_else(|| IdentifyError::NoEventType {
                        index,
                        path: describe(&self.event_type),
                    })?;
                Ok(self.map_one(doc, &sums, headers, id, event_type, options))
            })
            .collect()
    }

    fn map_one(
        &self,
        doc: &Value,
        sums: &Sums,
        headers: &Headers,
        id: String,
        event_type: String,
        options: &Options<'_>,
    ) -> ProviderEvent {
        let mut out = ProviderEvent {
            id,
            event_type,
            emitted: Vec::new(),
            failures: Vec::new(),
            dropped_by: None,
            trace: Vec::new(),
        };
        let mut matched = Vec::new();
        for rule in &self.rules {
            let scope = Scope {
                doc,
                headers,
                source: &self.name,
                event_id: &out.id,
                event_type: &out.event_type,
                rule: &rule.name,
                sums,
            };
            match rule_matches(rule, &scope, options.explain) {
                Ok(()) if rule.drop => {
                    out.dropped_by = Some(rule.name.clone());
                    if options.explain {
                        out.trace.push(trace(
                            rule,
                            true,
                            Some("drop rule: event discarded".into()),
                        ));
                    }
                    // A drop rule discards the whole provider event, whatever else matched.
                    out.emitted.clear();
                    out.failures.clear();
                    matched.clear();
                    break;
                }
                Ok(()) => matched.push(rule),
                Err(why) => {
                    if options.explain {
                        out.trace
                            .push(trace(rule, false, Some(why.describe(&scope))));
                    }
                }
            }
        }
        for rule in matched {
            let scope = Scope {
                doc,
                headers,
                source: &self.name,
                event_id: &out.id,
                event_type: &out.event_type,
                rule: &rule.name,
                sums,
            };
            let mut notes = Vec::new();
            let built = self.build(rule, &scope, options, options.explain.then_some(&mut notes));
            let reason = built.as_ref().err().cloned();
            match built {
                Ok(event) => out.emitted.push(Emitted {
                    rule: rule.name.clone(),
                    event,
                }),
                Err(reason) => out.failures.push(Failure {
                    rule: rule.name.clone(),
                    reason,
                }),
            }
            if options.explain {
                let mut t = trace(rule, true, reason);
                t.notes = notes;
                out.trace.push(t);
            }
        }
        out
    }

    /// Builds one Greenflash event from a matching rule, or says why it cannot.
    fn build(
        &self,
        rule: &Rule,
        scope: &Scope<'_>,
        options: &Options<'_>,
        notes: Option<&mut Vec<String>>,
    ) -> Result<Event, String> {
        let explain = notes.is_some();
        let log = std::cell::RefCell::new(Vec::new());
        // Notes are written only for a dry run that explains, not on the accept path.
        let note = |text: &dyn Fn() -> String| {
            if explain {
                log.borrow_mut().push(text());
            }
        };
        let get = |field: Field| -> Option<Value> {
            let (expr, from_defaults) = match rule.fields.get(field) {
                Some(e) => (Some(e), false),
                None => (self.defaults.get(field), true),
            };
            let value = expr.and_then(|e| e.eval(scope));
            match (&value, expr) {
                (None, Some(_)) => note(&|| format!("{}: absent, omitted", field.key())),
                (Some(_), Some(_)) if from_defaults => {
                    note(&|| format!("{}: from [defaults]", field.key()))
                }
                _ => {}
            }
            value
        };
        let text = |v: Option<Value>| v.and_then(transform::into_text);

        let event_type = text(get(Field::EventType)).ok_or("event_type: absent")?;
        let value = text(get(Field::Value)).ok_or("value: absent")?;
        let value_type = match text(get(Field::ValueType)) {
            None => None,
            Some(t) => Some(ValueType::parse(&t).ok_or_else(|| {
                format!("value_type: {t:?} is not one of currency, numeric, text, boolean")
            })?),
        };
        let influence = match text(get(Field::Influence)) {
            None => None,
            Some(t) => Some(Influence::parse(&t).ok_or_else(|| {
                format!("influence: {t:?} is not one of positive, negative, neutral")
            })?),
        };
        let number = |field: Field, v: Option<Value>| -> Result<Option<f64>, String> {
            v.map(|v| {
                transform::as_number(&v)
                    .ok_or_else(|| format!("{}: {v} is not a number", field.key()))
            })
            .transpose()
        };
        let quality_impact_score =
            number(Field::QualityImpactScore, get(Field::QualityImpactScore))?;
        let sample_rate = number(Field::SampleRate, get(Field::SampleRate))?;
        let force_sample = get(Field::ForceSample)
            .map(|v| {
                transform::to_boolean(&v)
                    .ok_or_else(|| format!("force_sample: {v} is not a boolean"))
            })
            .transpose()?;
        let product_id = match text(get(Field::ProductId)) {
            Some(id) => id,
            None => {
                note(&|| "product_id: from GREENFLASH_PRODUCT_ID".into());
                options
                    .default_product_id
                    .ok_or("product_id: absent, and GREENFLASH_PRODUCT_ID is not set")?
                    .to_string()
            }
        };
        let event_at = match text(get(Field::EventAt)) {
            Some(at) => Some(at),
            None => {
                let at = self.occurred_at.as_ref().and_then(|e| text(e.eval(scope)));
                if at.is_some() {
                    note(&|| "event_at: from [source].occurred_at".into());
                }
                at
            }
        };
        let insert_id = match text(get(Field::InsertId)) {
            Some(id) => id,
            None => [scope.source, ":", scope.event_id, ":", scope.rule].concat(),
        };
        let mut properties = Map::new();
        for (name, expr) in self
            .defaults
            .properties
            .iter()
            .chain(&rule.fields.properties)
        {
            match expr.eval(scope) {
                Some(v) => {
                    properties.insert(name.clone(), v);
                }
                None => {
                    properties.remove(name);
                }
            }
        }
        let event = Event {
            event_type,
            product_id,
            value,
            value_type,
            influence,
            quality_impact_score,
            conversation_id: text(get(Field::ConversationId)),
            external_conversation_id: text(get(Field::ExternalConversationId)),
            user_id: text(get(Field::UserId)),
            external_user_id: text(get(Field::ExternalUserId)),
            organization_id: text(get(Field::OrganizationId)),
            external_organization_id: text(get(Field::ExternalOrganizationId)),
            event_at,
            insert_id: Some(insert_id),
            properties: (!properties.is_empty()).then_some(properties),
            sample_rate,
            force_sample,
        };
        if let Some(notes) = notes {
            notes.extend(log.into_inner());
        }
        event.validate().map_err(|v| v.to_string())?;
        Ok(event)
    }
}

/// Why a rule did not match. Most rules of a catalog miss most events, so a reason is written
/// out only when asked for (`map --explain`).
enum Unmatched {
    EventType,
    /// Why a condition failed; empty unless explaining.
    Condition(String),
}

impl Unmatched {
    fn describe(self, scope: &Scope<'_>) -> String {
        match self {
            Self::EventType => format!("event type {:?} is not in `on`", scope.event_type),
            Self::Condition(why) => why,
        }
    }
}

fn rule_matches(rule: &Rule, scope: &Scope<'_>, explain: bool) -> Result<(), Unmatched> {
    if !rule.on.iter().any(|p| p.matches(scope.event_type)) {
        return Err(Unmatched::EventType);
    }
    for condition in &rule.when {
        let mut why = String::new();
        if !condition.holds(scope, explain.then_some(&mut why)) {
            return Err(Unmatched::Condition(why));
        }
    }
    Ok(())
}

fn trace(rule: &Rule, matched: bool, reason: Option<String>) -> RuleTrace {
    RuleTrace {
        rule: rule.name.clone(),
        matched,
        reason,
        notes: Vec::new(),
    }
}

fn describe(expr: &Expr) -> String {
    match expr {
        Expr::Path(p) => p.as_str().to_string(),
        Expr::Header(h) => format!("header {h}"),
        Expr::Template(parts) => parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.clone(),
                Part::Path(p) => format!("{{{}}}", p.as_str()),
                Part::Var(v) => format!("{{{}}}", Var::NAMES[*v as usize]),
            })
            .collect(),
        _ => "the configured expression".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;
    use crate::mapping::load_texts;

    const SOURCE: &str = r#"
[source]
name = "shop"
verify = { scheme = "none" }
split = "$[*]"
event_id = "$.id"
event_type = "$.type"

[[rules]]
name = "big_order"
on = "order"
when = [{ value = { sum = "$.items[*]", each = ["$.price", "$.qty"] }, gt = { sum = "$.items[*]", each = ["$.qty"] } }]
event_type = "big_order"
value = { money = { sum = "$.items[*]", each = ["$.price", "$.qty"] }, currency = "$.currency" }
value_type = "currency"
product_id = "7f3c2a10-5b8e-4d6f-9a1b-2c3d4e5f6a7b"
properties.units = { sum = "$.items[*]", each = ["$.qty"] }
properties.prices = { sum = "$.items[*].price" }

[[rules]]
name = "units"
on = "order"
event_type = "units"
value = { sum = "$.items[*]", each = ["$.qty"], to = "string" }
value_type = "numeric"
product_id = "7f3c2a10-5b8e-4d6f-9a1b-2c3d4e5f6a7b"
"#;

    fn map(body: &Value) -> Vec<(String, String, Option<Value>)> {
        let loaded = load_texts(&[(PathBuf::from("shop.toml"), SOURCE.to_string())])
            .unwrap_or_else(|d| panic!("{d:?}"));
        let source = loaded.catalog.get("shop").expect("shop");
        let events = source
            .apply(body, &Headers::new(), &Options::default())
            .expect("identified");
        events
            .iter()
            .flat_map(|e| &e.emitted)
            .map(|e| {
                (
                    e.rule.clone(),
                    e.event.value.clone(),
                    e.event.properties.clone().map(Value::Object),
                )
            })
            .collect()
    }

    #[test]
    fn each_sum_keeps_its_own_total_and_each_event_its_own_sums() {
        // `sum`s are worked out once per event and shared by the rules that write them alike;
        // sums written differently, and the events of one split body, must not share.
        let body = json!([
            { "id": "a", "type": "order", "currency": "usd",
              "items": [{ "price": 1000, "qty": 3 }, { "price": 2000, "qty": 2 }] },
            { "id": "b", "type": "order", "currency": "usd",
              "items": [{ "price": 1, "qty": 4 }] },
        ]);
        assert_eq!(
            map(&body),
            vec![
                (
                    "big_order".to_string(),
                    "70.00".to_string(),
                    Some(json!({ "prices": 3000, "units": 5 }))
                ),
                ("units".to_string(), "5".to_string(), None),
                // 1 × 4 is not more than 4 units, so only the second rule matches.
                ("units".to_string(), "4".to_string(), None),
            ]
        );
    }
}
