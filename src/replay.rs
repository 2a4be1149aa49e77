//! Re-mapping stored raw webhooks with the current mappings — how operators backfill after
//! fixing a rule.
//!
//! The insertId rule: an event whose new payload equals what its rule emitted before is left
//! alone (Greenflash already has it). A changed event is emitted again under a new insertId,
//! `<previous insertId>~<hash of the new payload>`, because Greenflash would drop a correction
//! sent under the old one as a duplicate; the hash makes replaying the same fix twice
//! idempotent. An event a rule emits for the first time gets the rule's usual insertId.

use serde::Serialize;
use serde_json::Value;

use crate::fixtures::diff;
use crate::inbound::Headers;
use crate::mapping::{Catalog, Options};
use crate::store::{NewOutboxEvent, ReplayQuery, ReplayUpdate, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no source named {0:?} in the current mappings")]
    UnknownSource(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What replay did (or, in a dry run, would do) to one provider event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventChange {
    pub event_id: String,
    pub status_before: String,
    pub status_after: String,
    /// One entry per rule that emits now or emitted before.
    pub rules: Vec<RuleChange>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleChange {
    pub rule: String,
    /// `unchanged`, `changed`, `new`, or `no_longer_emitted` (nothing is retracted).
    pub change: &'static str,
    /// The insertId the event is (re-)emitted under, for `changed` and `new`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insert_id: Option<String>,
    /// Field-level differences from the previous emission, for `changed`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diff: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct ReplayReport {
    pub webhooks: usize,
    pub events: Vec<EventChange>,
    /// Events queued for delivery (0 in a dry run).
    pub queued: usize,
    pub dry_run: bool,
}

pub async fn replay(
    store: &dyn Store,
    catalog: &Catalog,
    query: ReplayQuery,
    default_product_id: Option<&str>,
    dry_run: bool,
) -> Result<ReplayReport, ReplayError> {
    let source = catalog
        .get(&query.source)
        .ok_or_else(|| ReplayError::UnknownSource(query.source.clone()))?
        .clone();
    let options = Options {
        default_product_id,
        explain: false,
    };
    let stored = store.stored_webhooks(query.clone()).await?;
    let mut report = ReplayReport {
        webhooks: stored.len(),
        dry_run,
        ..ReplayReport::default()
    };
    let mut updates = Vec::new();
    for webhook in stored {
        let headers =
            Headers::from_json(&serde_json::from_str(&webhook.headers_json).unwrap_or(Value::Null));
        let parsed = source.parse_body(&headers, &webhook.body).ok();
        let mapped = parsed
            .as_ref()
            .and_then(|doc| source.apply(doc, &headers, &options).ok())
            .unwrap_or_default();
        for before in webhook.events {
            let Some(now) = mapped.iter().find(|m| m.id == before.event_id) else {
                continue;
            };
            let mut change = EventChange {
                event_id: before.event_id.clone(),
                status_before: before.status.clone(),
                status_after: now.status().as_str().to_string(),
                rules: Vec::new(),
            };
            let mut outbox = Vec::new();
            for emitted in &now.emitted {
                let payload = serde_json::to_value(&emitted.event).unwrap_or(Value::Null);
                let previous = before.emitted.iter().rev().find(|e| e.rule == emitted.rule);
                let rule_change = match previous {
                    None => {
                        let insert_id = emitted.event.insert_id.clone().unwrap_or_default();
                        outbox.push(new_outbox(&emitted.rule, &insert_id, &payload));
                        RuleChange {
                            rule: emitted.rule.clone(),
                            change: "new",
                            insert_id: Some(insert_id),
                            diff: Vec::new(),
                        }
                    }
                    Some(prev) => {
                        let old: Value = serde_json::from_str(&prev.payload).unwrap_or(Value::Null);
                        let mut differences = Vec::new();
                        diff(
                            "",
                            &without_insert_id(&old),
                            &without_insert_id(&payload),
                            &mut differences,
                        );
                        if differences.is_empty() {
                            RuleChange {
                                rule: emitted.rule.clone(),
                                change: "unchanged",
                                insert_id: None,
                                diff: differences,
                            }
                        } else {
                            let base = prev.insert_id.split('~').next().unwrap_or(&prev.insert_id);
                            let insert_id = format!(
                                "{base}~{}",
                                short_hash(&without_insert_id(&payload).to_string())
                            );
                            let mut payload = payload.clone();
                            payload["insertId"] = Value::String(insert_id.clone());
                            outbox.push(new_outbox(&emitted.rule, &insert_id, &payload));
                            RuleChange {
                                rule: emitted.rule.clone(),
                                change: "changed",
                                insert_id: Some(insert_id),
                                diff: differences,
                            }
                        }
                    }
                };
                change.rules.push(rule_change);
            }
            for prev in &before.emitted {
                let still = now.emitted.iter().any(|e| e.rule == prev.rule);
                if !still && !change.rules.iter().any(|r| r.rule == prev.rule) {
                    change.rules.push(RuleChange {
                        rule: prev.rule.clone(),
                        change: "no_longer_emitted",
                        insert_id: None,
                        diff: Vec::new(),
                    });
                }
            }
            report.queued += outbox.len();
            let detail = now.detail();
            updates.push(ReplayUpdate {
                event_id: before.event_id,
                status: now.status().as_str(),
                detail,
                outbox,
            });
            report.events.push(change);
        }
    }
    if dry_run {
        report.queued = 0;
    } else if !updates.is_empty() {
        store.record_replay(&query.source, updates).await?;
    }
    Ok(report)
}

fn new_outbox(rule: &str, insert_id: &str, payload: &Value) -> NewOutboxEvent {
    NewOutboxEvent {
        rule: rule.to_string(),
        insert_id: insert_id.to_string(),
        payload: payload.to_string(),
    }
}

fn without_insert_id(v: &Value) -> Value {
    let mut v = v.clone();
    if let Value::Object(map) = &mut v {
        map.remove("insertId");
    }
    v
}

fn short_hash(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")[..10].to_string()
}
