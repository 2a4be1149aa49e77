//! A JSON Schema (draft-07) of the mapping file format, for editors (Taplo / Even Better TOML):
//! built from the same key lists the loader checks against, so the two cannot drift.

use serde_json::{Map, Value, json};

use super::load::{
    CONDITION_KEYS, EXPR_MODIFIERS, EXPR_SOURCES, FILE_KEYS, RULE_KEYS, SOURCE_KEYS, VERIFY_KEYS,
};
use super::model::Field;
use crate::greenflash::{Influence, ValueType};
use crate::units::TimeFormat;
use crate::verify::{Algorithm, Encoding, Scheme, SecretEncoding};

fn describe(key: &str) -> &'static str {
    match key {
        "source" => "The provider: its name, signature verification and event identity.",
        "defaults" => "Output fields merged into every rule; a rule's own keys win.",
        "rules" => "Rules tried in order; every matching rule emits one Greenflash event.",
        "name" => {
            "Unique name (source: the URL path /webhooks/{name}; rule: part of the default insert_id)."
        }
        "verify" => "How webhook signatures are verified.",
        "event_id" => "Expression giving the provider's event id (dedupe key).",
        "event_type" => {
            "Source: expression giving the provider's event type. Rule: the Greenflash eventType."
        }
        "occurred_at" => "Expression for when the event happened; the default event_at.",
        "split" => "JSONPath selecting several events in one body (e.g. \"$[*]\").",
        "scheme" => "The provider's signature scheme.",
        "secrets_env" => {
            "Name of the environment variable holding the secret (several comma-separated for rotation)."
        }
        "tolerance" => "Allowed clock difference for signed timestamps, e.g. \"5m\".",
        "url" => "The public URL the provider calls (schemes that sign the URL).",
        "header" => "The header carrying the signature (hmac) or token (token).",
        "prefix" => "Text before the signature or token in the header, e.g. \"sha256=\".",
        "algorithm" => "hmac: the hash.",
        "encoding" => "hmac: how the signature is encoded.",
        "timestamp_header" => "hmac: header with the signed timestamp.",
        "timestamp_format" => "hmac: how that timestamp is written.",
        "message" => "hmac: the signed message, e.g. \"{timestamp}.{body}\".",
        "secret_encoding" => "hmac: how the secret becomes the key.",
        "on" => "Event types (exact or glob like \"invoice.*\") this rule handles.",
        "when" => "Conditions that must all hold.",
        "drop" => "A matching drop rule discards the whole provider event.",
        "properties" => "Free-form properties: name = expression.",
        _ => "",
    }
}

fn with_description(mut schema: Value, key: &str) -> Value {
    let text = describe(key);
    if !text.is_empty()
        && let Value::Object(map) = &mut schema
    {
        map.insert("description".into(), Value::String(text.into()));
    }
    schema
}

fn strings(names: &[&str]) -> Value {
    json!({ "type": "string", "enum": names })
}

fn object(properties: Map<String, Value>, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required, "additionalProperties": false })
}

fn field_schema(field: Field) -> Value {
    let expr = json!({ "$ref": "#/definitions/expression" });
    let literal = match field {
        Field::ValueType => Some(strings(ValueType::NAMES)),
        Field::Influence => Some(strings(Influence::NAMES)),
        Field::QualityImpactScore => Some(json!({ "type": "number", "minimum": -1, "maximum": 1 })),
        Field::SampleRate => Some(json!({ "type": "number", "minimum": 0, "maximum": 1 })),
        Field::ForceSample => Some(json!({ "type": "boolean" })),
        _ => None,
    };
    match literal {
        Some(l) => {
            json!({ "anyOf": [l, { "type": "string", "pattern": "^\\$" }, { "type": "object", "$ref": "#/definitions/expression_table" }] })
        }
        None => expr,
    }
}

/// The schema as JSON.
pub fn schema() -> Value {
    let expr = json!({ "$ref": "#/definitions/expression" });
    let mut expr_props = Map::new();
    for key in EXPR_SOURCES.iter().chain(EXPR_MODIFIERS) {
        let s = match *key {
            "first" => json!({ "type": "array", "items": expr }),
            "each" => json!({ "type": "array", "items": { "type": "string" } }),
            "time" => strings(TimeFormat::NAMES),
            "case" => strings(&["upper", "lower"]),
            "to" => strings(&["string", "number", "boolean"]),
            "lookup" => json!({ "type": "object" }),
            "literal" => json!({}),
            "money" | "currency" | "default" => expr.clone(),
            _ => json!({ "type": "string" }),
        };
        expr_props.insert(key.to_string(), s);
    }
    let expression_table =
        json!({ "type": "object", "properties": expr_props, "additionalProperties": false });
    let expression = json!({
        "description": "A JSONPath (a string starting with $), a literal, or a table with one of path, literal, template, header, first, money, sum and optional modifiers.",
        "anyOf": [{ "type": "string" }, { "type": "number" }, { "type": "boolean" }, { "$ref": "#/definitions/expression_table" }]
    });

    let mut cond = Map::new();
    for key in CONDITION_KEYS {
        let s = match *key {
            "path" | "matches" => json!({ "type": "string" }),
            "exists" | "missing" => json!({ "type": "boolean" }),
            "in" | "not_in" => json!({ "type": "array", "items": expr }),
            _ => expr.clone(),
        };
        cond.insert(key.to_string(), s);
    }

    let mut verify = Map::new();
    for key in VERIFY_KEYS {
        let s = match *key {
            "scheme" => strings(Scheme::NAMES),
            "algorithm" => strings(Algorithm::NAMES),
            "encoding" => strings(Encoding::NAMES),
            "timestamp_format" => strings(TimeFormat::NAMES),
            "secret_encoding" => strings(SecretEncoding::NAMES),
            "secrets_env" => json!({ "type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" }),
            _ => json!({ "type": "string" }),
        };
        verify.insert(key.to_string(), with_description(s, key));
    }

    let mut source = Map::new();
    for key in SOURCE_KEYS {
        let s = match *key {
            "name" => json!({ "type": "string", "pattern": "^[a-z0-9_-]+$" }),
            "verify" => object(verify.clone(), &["scheme"]),
            "split" => json!({ "type": "string" }),
            _ => expr.clone(),
        };
        source.insert(key.to_string(), with_description(s, key));
    }

    let properties = json!({ "type": "object", "additionalProperties": expr, "description": describe("properties") });
    let mut defaults = Map::new();
    for field in Field::ALL {
        defaults.insert(field.key().to_string(), field_schema(field));
    }
    defaults.insert("properties".into(), properties.clone());
    let mut rule = defaults.clone();
    for key in RULE_KEYS {
        let s = match *key {
            "name" => json!({ "type": "string" }),
            "on" => {
                json!({ "anyOf": [{ "type": "string" }, { "type": "array", "items": { "type": "string" }, "minItems": 1 }] })
            }
            "when" => json!({ "type": "array", "items": { "$ref": "#/definitions/condition" } }),
            "drop" => json!({ "type": "boolean" }),
            _ => properties.clone(),
        };
        rule.insert(key.to_string(), with_description(s, key));
    }

    let mut top = Map::new();
    for key in FILE_KEYS {
        let s = match *key {
            "source" => object(
                source.clone(),
                &["name", "verify", "event_id", "event_type"],
            ),
            "defaults" => object(defaults.clone(), &[]),
            _ => json!({ "type": "array", "items": { "$ref": "#/definitions/rule" } }),
        };
        top.insert(key.to_string(), with_description(s, key));
    }

    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": "https://github.com/greenflash-bridge/greenflash-bridge/mappings/mapping.schema.json",
        "title": "greenflash-bridge mapping file",
        "description": "One provider's webhooks and how they become Greenflash events. Reference: docs/mappings.md.",
        "type": "object",
        "properties": top,
        "required": ["source"],
        "additionalProperties": false,
        "definitions": {
            "expression": expression,
            "expression_table": expression_table,
            "condition": { "type": "object", "properties": cond, "additionalProperties": false },
            "rule": { "type": "object", "properties": rule, "required": ["name", "on"], "additionalProperties": false },
        }
    })
}
