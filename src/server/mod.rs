//! The HTTP surface: webhooks in, health and metrics out, and the operators' admin API.

mod admin;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::deliver::DeliveryHealth;
use crate::intake::Intake;
use crate::reload::ReloadPolicy;
use crate::store::Store;
use crate::verify::Secret;

/// Shared by every worker thread.
pub struct AppState {
    pub intake: Arc<Intake>,
    pub store: Arc<dyn Store>,
    pub delivery: Arc<DeliveryHealth>,
    /// Renders `/metrics`; `None` when another recorder owns the process (tests).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Largest accepted body, in bytes.
    pub max_body: usize,
    /// The public base URL providers call (for schemes that sign the URL).
    pub public_url: Option<String>,
    /// `BRIDGE_ADMIN_TOKEN`; the admin API is disabled without it.
    pub admin_token: Option<Secret>,
    /// For replays and reloads from the admin API.
    pub default_product_id: Option<String>,
    pub reload: Arc<ReloadPolicy>,
}

/// Registers the routes on an actix `App`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks/{source}", web::post().to(webhooks::receive))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .service(admin::scope());
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready means: the store can commit now, mappings are loaded, and Greenflash accepts our key.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let sources = state.intake.sources();
    let mut problems = Vec::new();
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(format!("store cannot commit: {e}")),
        Err(_) => problems.push("store did not answer within 2 s".to_string()),
    }
    if sources.catalog.sources.is_empty() {
        problems.push("no mappings loaded".to_string());
    }
    if state.delivery.key_refused() {
        problems.push("Greenflash refuses our API key; delivery is paused".to_string());
    }
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(status).json(json!({
        "status": if problems.is_empty() { "ready" } else { "not_ready" },
        "problems": problems,
        "mappings_version": sources.catalog.version,
    }))
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    match &state.metrics {
        Some(handle) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(handle.render()),
        None => HttpResponse::NotFound().finish(),
    }
}

pub(crate) fn error(
    status: StatusCode,
    code: &str,
    message: impl std::fmt::Display,
) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": code, "message": message.to_string()}))
}
