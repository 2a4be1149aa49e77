//! The accept path: verify → parse → split/identify → map → store, for one webhook.
//!
//! Nothing here answers the provider before the store has committed; the server turns the
//! result into an HTTP status.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use serde::Serialize;

use crate::deliver::{Handoff, Reservation};
use crate::inbound::{Headers, Request};
use crate::mapping::{Catalog, IdentifyError, Options, Source, Status};
use crate::store::{NewOutboxEvent, NewProviderEvent, NewWebhook, Store, StoreError, now_ms};
use crate::telemetry;
use crate::verify::{Rejection, SecretError, Verifier};

/// The live mapping catalog with each source's verifier (or the secret it is missing).
#[derive(Debug)]
pub struct Sources {
    pub catalog: Catalog,
    verifiers: HashMap<String, Result<Verifier, SecretError>>,
}

impl Sources {
    /// Resolves every source's secrets through `env` (the process environment in production).
    pub fn new(catalog: Catalog, env: impl Fn(&str) -> Option<String>) -> Self {
        let verifiers = catalog
            .sources
            .iter()
            .map(|(name, source)| (name.clone(), Verifier::from_spec(&source.verify, &env)))
            .collect();
        Self { catalog, verifiers }
    }

    /// Sources that cannot be served because their secret variable is unset.
    pub fn disabled(&self) -> impl Iterator<Item = (&str, &SecretError)> {
        self.verifiers
            .iter()
            .filter_map(|(name, v)| v.as_ref().err().map(|m| (name.as_str(), m)))
    }

    fn get(&self, name: &str) -> Option<(&Arc<Source>, &Result<Verifier, SecretError>)> {
        Some((self.catalog.get(name)?, self.verifiers.get(name)?))
    }
}

/// Why a webhook was not accepted; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("no source named {0:?}")]
    UnknownSource(String),
    #[error("source {name:?} is disabled: {missing}")]
    SourceDisabled { name: String, missing: SecretError },
    #[error("signature refused: {0}")]
    Rejected(Rejection),
    #[error("body is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("{0}")]
    Unidentified(IdentifyError),
    #[error("{0}")]
    Store(StoreError),
}

/// What the provider is told about each provider event in its webhook.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Receipt {
    /// `accepted` when anything new was stored, else `duplicate`.
    pub status: &'static str,
    pub events: Vec<ReceiptEvent>,
    /// Which configured secret verified the request (for the log, not the provider).
    #[serde(skip)]
    pub secret_index: Option<usize>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReceiptEvent {
    pub id: String,
    pub duplicate: bool,
    /// `mapped`, `ignored` or `mapping_failed`.
    pub outcome: &'static str,
    /// Greenflash events queued for delivery.
    pub emitted: usize,
}

pub struct Intake {
    sources: ArcSwap<Sources>,
    store: Arc<dyn Store>,
    handoff: Handoff,
    default_product_id: Option<String>,
}

impl Intake {
    pub fn new(
        sources: Sources,
        store: Arc<dyn Store>,
        handoff: Handoff,
        default_product_id: Option<String>,
    ) -> Self {
        Self {
            sources: ArcSwap::from_pointee(sources),
            store,
            handoff,
            default_product_id,
        }
    }

    /// The sources in force now.
    pub fn sources(&self) -> Arc<Sources> {
        self.sources.load_full()
    }

    /// Puts a new set of sources in force for the next request (hot reload).
    pub fn replace_sources(&self, sources: Sources) {
        self.sources.store(Arc::new(sources));
    }

    pub async fn receive(
        &self,
        source_name: &str,
        request_id: &str,
        url: Option<&str>,
        headers: Headers,
        body: Bytes,
    ) -> Result<Receipt, IntakeError> {
        let sources = self.sources.load_full();
        let (source, verifier) = sources
            .get(source_name)
            .ok_or_else(|| IntakeError::UnknownSource(source_name.to_string()))?;
        let verifier = verifier
            .as_ref()
            .map_err(|missing| IntakeError::SourceDisabled {
                name: source_name.to_string(),
                missing: missing.clone(),
            })?;
        let request = Request {
            method: "POST",
            url,
            headers: &headers,
            body: &body,
        };
        let now = now_ms();
        let verified = verifier
            .verify(&request, now / 1000)
            .map_err(IntakeError::Rejected)?;
        if let Some(index) = verified.secret_index {
            telemetry::secret_matched(source_name, index);
        }
        let doc = source
            .parse_body(&headers, &body)
            .map_err(IntakeError::NotJson)?;
        let options = Options {
            default_product_id: self.default_product_id.as_deref(),
            explain: false,
        };
        let mapped = source
            .apply(&doc, &headers, &options)
            .map_err(IntakeError::Unidentified)?;

        let mut events = Vec::with_capacity(mapped.len());
        for event in &mapped {
            let status = event.status();
            let detail = event.detail();
            for failure in &event.failures {
                tracing::warn!(source = source_name, event_id = %event.id, rule = %failure.rule, reason = %failure.reason, "Mapping failed.");
                telemetry::mapped(source_name, &failure.rule, "mapping_failed");
            }
            for emitted in &event.emitted {
                telemetry::mapped(source_name, &emitted.rule, "mapped");
            }
            if status == Status::Ignored {
                telemetry::mapped(
                    source_name,
                    event.dropped_by.as_deref().unwrap_or(""),
                    "ignored",
                );
            }
            let outbox = event
                .emitted
                .iter()
                .map(|e| NewOutboxEvent {
                    rule: e.rule.clone(),
                    insert_id: e.event.insert_id.clone().unwrap_or_default(),
                    payload: serde_json::to_string(&e.event).unwrap_or_default(),
                })
                .collect();
            events.push(NewProviderEvent {
                event_id: event.id.clone(),
                event_type: event.event_type.clone(),
                status: status.as_str(),
                detail,
                outbox,
            });
        }
        // Delivery takes the events straight from here when it has room; otherwise they are
        // stored due, and it finds them in the store.
        let reserved = self
            .handoff
            .reserve(events.iter().map(|e| e.outbox.len()).sum());
        let webhook = NewWebhook {
            source: source_name.to_string(),
            request_id: request_id.to_string(),
            received_at_ms: now,
            headers_json: headers.to_stored_json(),
            body,
            events,
            claim: reserved.as_ref().map(Reservation::claim),
        };
        // In a task of its own: the provider may hang up while the commit is under way, which
        // drops this request's future, and events committed under a claim would then wait out
        // their lease instead of being handed over.
        let (store, handoff) = (self.store.clone(), self.handoff.clone());
        let stored = tokio::spawn(async move {
            let mut acceptance = store.accept(webhook).await?;
            match reserved {
                Some(reserved) => reserved.hand_over(std::mem::take(&mut acceptance.claimed)),
                None if acceptance.stored_new() => handoff.wake(),
                None => {}
            }
            Ok(acceptance)
        });
        let acceptance = stored
            .await
            .map_err(|e| {
                IntakeError::Store(StoreError::Unavailable(format!(
                    "the accept task failed: {e}"
                )))
            })?
            .map_err(IntakeError::Store)?;
        let receipt_events: Vec<ReceiptEvent> = mapped
            .iter()
            .zip(&acceptance.duplicates)
            .map(|(event, duplicate)| ReceiptEvent {
                id: event.id.clone(),
                duplicate: *duplicate,
                outcome: event.status().as_str(),
                emitted: if *duplicate { 0 } else { event.emitted.len() },
            })
            .collect();
        Ok(Receipt {
            status: if acceptance.stored_new() {
                "accepted"
            } else {
                "duplicate"
            },
            events: receipt_events,
            secret_index: verified.secret_index,
        })
    }
}
