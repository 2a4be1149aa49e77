//! The compiled form of mapping files: what `load` produces and `apply` runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::condition::Condition;
use super::expr::Expr;
use super::path::JsonPath;
use super::shape::Shape;
use crate::verify;

/// Every output key a rule (or `[defaults]`) may set, mirroring Greenflash's fields in
/// snake_case. `properties.*` is kept apart because its names are free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    EventType,
    Value,
    ValueType,
    Influence,
    QualityImpactScore,
    ConversationId,
    ExternalConversationId,
    UserId,
    ExternalUserId,
    OrganizationId,
    ExternalOrganizationId,
    EventAt,
    InsertId,
    SampleRate,
    ForceSample,
    ProductId,
}

impl Field {
    pub const ALL: [Field; 16] = [
        Field::EventType,
        Field::Value,
        Field::ValueType,
        Field::Influence,
        Field::QualityImpactScore,
        Field::ConversationId,
        Field::ExternalConversationId,
        Field::UserId,
        Field::ExternalUserId,
        Field::OrganizationId,
        Field::ExternalOrganizationId,
        Field::EventAt,
        Field::InsertId,
        Field::SampleRate,
        Field::ForceSample,
        Field::ProductId,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Field::EventType => "event_type",
            Field::Value => "value",
            Field::ValueType => "value_type",
            Field::Influence => "influence",
            Field::QualityImpactScore => "quality_impact_score",
            Field::ConversationId => "conversation_id",
            Field::ExternalConversationId => "external_conversation_id",
            Field::UserId => "user_id",
            Field::ExternalUserId => "external_user_id",
            Field::OrganizationId => "organization_id",
            Field::ExternalOrganizationId => "external_organization_id",
            Field::EventAt => "event_at",
            Field::InsertId => "insert_id",
            Field::SampleRate => "sample_rate",
            Field::ForceSample => "force_sample",
            Field::ProductId => "product_id",
        }
    }

    pub fn from_key(key: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.key() == key)
    }
}

/// Output field expressions of one rule or of `[defaults]`.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    values: [Option<Expr>; Field::ALL.len()],
    pub properties: Vec<(String, Expr)>,
}

impl Fields {
    pub fn get(&self, field: Field) -> Option<&Expr> {
        self.values[field as usize].as_ref()
    }

    pub fn set(&mut self, field: Field, expr: Expr) {
        self.values[field as usize] = Some(expr);
    }

    fn read(&self, shape: &mut Shape) {
        self.values.iter().flatten().for_each(|e| e.read(shape));
        self.properties.iter().for_each(|(_, e)| e.read(shape));
    }
}

/// An event-type pattern from a rule's `on`: an exact name or a glob with `*`. Which one is
/// decided when the file loads; every rule's `on` is tried on every event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Glob(String),
}

impl Pattern {
    pub fn new(text: &str) -> Self {
        if text.contains('*') {
            Self::Glob(text.to_string())
        } else {
            Self::Exact(text.to_string())
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(exact) => exact == name,
            Self::Glob(glob) => glob_match(glob.as_bytes(), name.as_bytes()),
        }
    }
}

fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob_match(rest, &text[i..])),
        Some((c, rest)) => text.first() == Some(c) && glob_match(rest, &text[1..]),
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub on: Vec<Pattern>,
    pub when: Vec<Condition>,
    /// A matching drop rule discards the whole provider event (recorded as ignored).
    pub drop: bool,
    pub fields: Fields,
}

/// One provider, as one mapping file describes it.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub file: PathBuf,
    pub verify: verify::Spec,
    /// Splits an array body into several provider events (HubSpot batches).
    pub split: Option<JsonPath>,
    pub event_id: Expr,
    pub event_type: Expr,
    pub occurred_at: Option<Expr>,
    pub defaults: Fields,
    pub rules: Vec<Rule>,
    /// What the rules read of a body; set once the rules are compiled.
    pub(super) shape: Shape,
}

impl Source {
    /// The parts of a body that the source's expressions read.
    pub(super) fn reads(&self) -> Shape {
        let mut event = Shape::default();
        self.event_id.read(&mut event);
        self.event_type.read(&mut event);
        if let Some(e) = &self.occurred_at {
            e.read(&mut event);
        }
        self.defaults.read(&mut event);
        for rule in &self.rules {
            rule.when.iter().for_each(|c| c.read(&mut event));
            rule.fields.read(&mut event);
        }
        let mut body = match &self.split {
            None => event,
            Some(split) => {
                let mut body = Shape::default();
                body.read_each(split, event);
                body
            }
        };
        body.settle();
        body
    }

    /// Whether every rule that emits can get a productId without `GREENFLASH_PRODUCT_ID`.
    pub fn sets_product_id_everywhere(&self) -> bool {
        self.defaults.get(Field::ProductId).is_some()
            || self
                .rules
                .iter()
                .all(|r| r.drop || r.fields.get(Field::ProductId).is_some())
    }
}

/// All loaded sources, by name. Immutable once built; hot reload swaps in a new one.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub sources: BTreeMap<String, Arc<Source>>,
    /// A short hash of the files' contents, logged so operators can tell which version is live.
    pub version: String,
}

impl Catalog {
    pub fn get(&self, name: &str) -> Option<&Arc<Source>> {
        self.sources.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_names_and_globs() {
        assert!(Pattern::new("invoice.paid").matches("invoice.paid"));
        assert!(!Pattern::new("invoice.paid").matches("invoice.paid.x"));
        assert!(Pattern::new("invoice.*").matches("invoice.payment_failed"));
        assert!(!Pattern::new("invoice.*").matches("customer.created"));
        assert!(Pattern::new("*").matches("anything"));
        assert!(Pattern::new("customer.*.deleted").matches("customer.subscription.deleted"));
    }
}
