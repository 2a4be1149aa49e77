//! `POST /webhooks/{source}`: the raw body is read here (bounded, before anything else), so that
//! signatures are checked on exactly the bytes the provider sent and every refusal gets a JSON
//! body.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::BytesMut;
use futures_util::StreamExt;
use tracing::Instrument;

use super::{AppState, error};
use crate::inbound::Headers;
use crate::intake::IntakeError;
use crate::telemetry;

fn refuse_too_large(
    state: &AppState,
    source: &str,
    started: std::time::Instant,
    answer: impl Fn() -> HttpResponse,
) -> HttpResponse {
    tracing::info!(
        outcome = "rejected",
        reason = "payload_too_large",
        limit = state.max_body,
        "Webhook refused."
    );
    let known = state.intake.sources().catalog.get(source).is_some();
    telemetry::webhook(
        if known { source } else { "unknown" },
        "rejected",
        "payload_too_large",
        started.elapsed(),
    );
    answer()
}

pub(super) async fn receive(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = std::time::Instant::now();
    let source = path.into_inner();
    let request_id = uuid::Uuid::now_v7().to_string();
    let span = tracing::info_span!("webhook", %request_id, %source);
    // Entered only while this request's future runs: a guard held across its awaits would
    // leave the span entered on the worker thread while other requests ran there, and their
    // log lines would carry this request's id, nested spans piling up to lines of 160 KB.
    receive_in_span(req, source, request_id, payload, state, started)
        .instrument(span)
        .await
}

async fn receive_in_span(
    req: HttpRequest,
    source: String,
    request_id: String,
    mut payload: web::Payload,
    state: web::Data<AppState>,
    started: std::time::Instant,
) -> HttpResponse {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("body exceeds {} bytes", state.max_body),
        )
    };
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > state.max_body) {
        return refuse_too_large(&state, &source, started, too_large);
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(4096).min(state.max_body));
    while let Some(chunk) = payload.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => return error(StatusCode::BAD_REQUEST, "bad_body", e),
        };
        if body.len() + chunk.len() > state.max_body {
            return refuse_too_large(&state, &source, started, too_large);
        }
        body.extend_from_slice(&chunk);
    }

    let mut headers = Headers::new();
    for (name, value) in req.headers() {
        headers.insert(name.as_str(), value.as_bytes());
    }
    let url = state
        .public_url
        .as_ref()
        .map(|base| format!("{}{}", base.trim_end_matches('/'), req.uri()));
    let result = state
        .intake
        .receive(&source, &request_id, url.as_deref(), headers, body.freeze())
        .await;
    match result {
        Ok(receipt) => {
            tracing::info!(
                outcome = receipt.status,
                events = receipt.events.len(),
                secret_index = receipt.secret_index,
                "Webhook accepted."
            );
            telemetry::webhook(&source, receipt.status, "", started.elapsed());
            HttpResponse::Ok().json(receipt)
        }
        Err(e) => {
            let (status, code) = match &e {
                IntakeError::UnknownSource(_) => (StatusCode::NOT_FOUND, "unknown_source"),
                IntakeError::SourceDisabled { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, "source_disabled")
                }
                IntakeError::Rejected(r) => (StatusCode::UNAUTHORIZED, r.reason()),
                IntakeError::NotJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
                IntakeError::Unidentified(_) => (StatusCode::BAD_REQUEST, "unidentified_event"),
                IntakeError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            };
            // Unknown names are not a label: anyone can post to any path.
            let label = if matches!(e, IntakeError::UnknownSource(_)) {
                "unknown"
            } else {
                source.as_str()
            };
            telemetry::webhook(label, "rejected", code, started.elapsed());
            if status.is_server_error() {
                tracing::error!(outcome = "rejected", reason = code, error = %e, "Webhook not accepted.");
            } else {
                tracing::info!(outcome = "rejected", reason = code, error = %e, "Webhook refused.");
            }
            // A refused signature says only its reason class: never what was expected.
            let message = match &e {
                IntakeError::Rejected(r) => format!("signature refused: {}", r.reason()),
                IntakeError::Store(_) => "the event could not be stored; retry later".to_string(),
                other => other.to_string(),
            };
            error(status, code, message)
        }
    }
}
