//! The business event Greenflash accepts on `POST /api/v1/events`.
//!
//! This is the bottom of the crate: mapping produces these, the store keeps them as JSON, and
//! delivery sends them. `validate` holds the published schema so that nothing the bridge stores
//! can be refused by Greenflash for its shape.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `valueType`: how Greenflash reads `value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    Currency,
    Numeric,
    Text,
    Boolean,
}

impl ValueType {
    pub const NAMES: &'static [&'static str] = &["currency", "numeric", "text", "boolean"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "currency" => Some(Self::Currency),
            "numeric" => Some(Self::Numeric),
            "text" => Some(Self::Text),
            "boolean" => Some(Self::Boolean),
            _ => None,
        }
    }
}

/// `influence`: whether the outcome is good or bad for the business.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Influence {
    Positive,
    Negative,
    Neutral,
}

impl Influence {
    pub const NAMES: &'static [&'static str] = &["positive", "negative", "neutral"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "positive" => Some(Self::Positive),
            "negative" => Some(Self::Negative),
            "neutral" => Some(Self::Neutral),
            _ => None,
        }
    }
}

/// One Greenflash event, serialised exactly as the API expects it (camelCase, absent fields
/// omitted rather than sent as `null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub event_type: String,
    pub product_id: String,
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_type: Option<ValueType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub influence: Option<Influence>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality_impact_score: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_conversation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_organization_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insert_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force_sample: Option<bool>,
}

/// Why an event breaks Greenflash's published schema.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SchemaViolation {
    /// The Greenflash field name (camelCase), as the API reports it.
    pub field: &'static str,
    pub problem: String,
}

impl Event {
    /// Checks the event against the published schema. Mapping calls this on every event it
    /// emits, so a violation becomes a recorded mapping failure instead of a 400 at delivery.
    pub fn validate(&self) -> Result<(), SchemaViolation> {
        let fail = |field: &'static str, problem: String| Err(SchemaViolation { field, problem });
        if self.event_type.trim().is_empty() {
            return fail("eventType", "must be a non-empty string".into());
        }
        if !is_uuid(&self.product_id) {
            return fail(
                "productId",
                format!("must be a UUID, got {:?}", self.product_id),
            );
        }
        if self.value.is_empty() {
            return fail("value", "must be a non-empty string".into());
        }
        if let Some(score) = self.quality_impact_score
            && !(-1.0..=1.0).contains(&score)
        {
            return fail(
                "qualityImpactScore",
                format!("must be in [-1, 1], got {score}"),
            );
        }
        if let Some(rate) = self.sample_rate
            && !(0.0..=1.0).contains(&rate)
        {
            return fail("sampleRate", format!("must be in [0, 1], got {rate}"));
        }
        for (field, id) in [
            ("conversationId", &self.conversation_id),
            ("userId", &self.user_id),
            ("organizationId", &self.organization_id),
        ] {
            if let Some(id) = id
                && !is_uuid(id)
            {
                return fail(field, format!("must be a UUID, got {id:?}"));
            }
        }
        if let Some(at) = &self.event_at
            && time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                .is_err()
        {
            return fail(
                "eventAt",
                format!("must be an ISO 8601 timestamp, got {at:?}"),
            );
        }
        if let Some(insert_id) = &self.insert_id
            && insert_id.is_empty()
        {
            return fail("insertId", "must not be empty".into());
        }
        Ok(())
    }
}

/// Accepts the hyphenated 8-4-4-4-12 form only, which is what Greenflash documents.
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> Event {
        Event {
            event_type: "invoice_paid".into(),
            product_id: "7f3c2a10-5b8e-4d6f-9a1b-2c3d4e5f6a7b".into(),
            value: "20.00".into(),
            value_type: Some(ValueType::Currency),
            influence: None,
            quality_impact_score: None,
            conversation_id: None,
            external_conversation_id: None,
            user_id: None,
            external_user_id: None,
            organization_id: None,
            external_organization_id: None,
            event_at: Some("2026-03-09T16:11:11Z".into()),
            insert_id: None,
            properties: None,
            sample_rate: None,
            force_sample: None,
        }
    }

    #[test]
    fn serialises_camel_case_and_omits_absent_fields() {
        let json = serde_json::to_value(minimal()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "eventType": "invoice_paid",
                "productId": "7f3c2a10-5b8e-4d6f-9a1b-2c3d4e5f6a7b",
                "value": "20.00",
                "valueType": "currency",
                "eventAt": "2026-03-09T16:11:11Z"
            })
        );
    }

    #[test]
    fn rejects_what_greenflash_would_reject() {
        let mut e = minimal();
        e.product_id = "not-a-uuid".into();
        assert_eq!(e.validate().unwrap_err().field, "productId");
        let mut e = minimal();
        e.quality_impact_score = Some(1.5);
        assert_eq!(e.validate().unwrap_err().field, "qualityImpactScore");
        let mut e = minimal();
        e.event_at = Some("yesterday".into());
        assert_eq!(e.validate().unwrap_err().field, "eventAt");
        let mut e = minimal();
        e.conversation_id = Some("conv_123".into());
        assert_eq!(e.validate().unwrap_err().field, "conversationId");
        assert!(minimal().validate().is_ok());
    }
}
