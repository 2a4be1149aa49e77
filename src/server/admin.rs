//! `/admin/…`: dead letters, replay, reload and retention over HTTP. Disabled (404) unless
//! `BRIDGE_ADMIN_TOKEN` is set; then every call needs `Authorization: Bearer <token>`.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{HttpServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{Next, from_fn};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::{AppState, error};
use crate::store::{DeadSelector, ReplayQuery, now_ms};
use crate::verify::constant_time_eq;

pub(super) fn scope() -> impl HttpServiceFactory {
    web::scope("/admin")
        .wrap(from_fn(require_token))
        .route("/dlq", web::get().to(list))
        .route("/dlq/retry", web::post().to(retry))
        .route("/dlq/drop", web::post().to(drop_dead))
        .route("/dlq/{id}", web::get().to(show))
        .route("/replay", web::post().to(replay))
        .route("/reload", web::post().to(reload))
        .route("/prune", web::post().to(prune))
}

/// Every admin route passes through here first.
async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let denied = match req.app_data::<web::Data<AppState>>() {
        Some(state) => refusal(req.request(), state),
        None => Some(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no_state",
            "admin API without application state",
        )),
    };
    match denied {
        Some(response) => Ok(req.into_response(response).map_into_right_body()),
        None => Ok(next.call(req).await?.map_into_left_body()),
    }
}

/// The refusal to send, if the request may not use the admin API.
fn refusal(req: &HttpRequest, state: &AppState) -> Option<HttpResponse> {
    let Some(token) = &state.admin_token else {
        return Some(error(
            StatusCode::NOT_FOUND,
            "admin_disabled",
            "set BRIDGE_ADMIN_TOKEN to enable the admin API",
        ));
    };
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), token.expose()) => None,
        _ => Some(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <BRIDGE_ADMIN_TOKEN>",
        )),
    }
}

fn store_error(e: impl std::fmt::Display) -> HttpResponse {
    error(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e)
}

#[derive(Deserialize)]
struct SourceFilter {
    source: Option<String>,
}

async fn list(query: web::Query<SourceFilter>, state: web::Data<AppState>) -> HttpResponse {
    match state.store.dead_letters(query.source.as_deref()).await {
        Ok(dead) => HttpResponse::Ok().json(dead),
        Err(e) => store_error(e),
    }
}

async fn show(id: web::Path<i64>, state: web::Data<AppState>) -> HttpResponse {
    match state.store.outbox_event(*id).await {
        Ok(Some(event)) => HttpResponse::Ok().json(event),
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found", format!("no event {id}")),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Selection {
    #[serde(default)]
    ids: Vec<i64>,
    #[serde(default)]
    all: bool,
    source: Option<String>,
}

async fn retry(body: web::Json<Selection>, state: web::Data<AppState>) -> HttpResponse {
    let which = match (&body.ids[..], body.all, &body.source) {
        ([_, ..], false, None) => DeadSelector::Ids(body.ids.clone()),
        ([], true, None) => DeadSelector::All,
        ([], false, Some(s)) => DeadSelector::Source(s.clone()),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_selection",
                "give exactly one of ids, all, source",
            );
        }
    };
    match state.store.retry_dead(which).await {
        Ok(n) => HttpResponse::Ok().json(json!({"retried": n})),
        Err(e) => store_error(e),
    }
}

async fn drop_dead(body: web::Json<Selection>, state: web::Data<AppState>) -> HttpResponse {
    if body.ids.is_empty() || body.all || body.source.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_selection",
            "drop takes ids only",
        );
    }
    match state.store.drop_dead(&body.ids).await {
        Ok(n) => HttpResponse::Ok().json(json!({"dropped": n})),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    source: String,
    since: Option<String>,
    until: Option<String>,
    #[serde(default)]
    status: Vec<String>,
    #[serde(default)]
    dry_run: bool,
}

async fn replay(body: web::Json<ReplayBody>, state: web::Data<AppState>) -> HttpResponse {
    let now = now_ms();
    let instant = |t: &Option<String>| {
        t.as_deref()
            .map(|t| crate::units::parse_instant(t, now))
            .transpose()
    };
    let (since_ms, until_ms) = match (instant(&body.since), instant(&body.until)) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, "bad_time", e),
    };
    let query = ReplayQuery {
        source: body.source.clone(),
        since_ms,
        until_ms,
        statuses: body.status.clone(),
    };
    let sources = state.intake.sources();
    let result = crate::replay::replay(
        state.store.as_ref(),
        &sources.catalog,
        query,
        state.default_product_id.as_deref(),
        body.dry_run,
    )
    .await;
    match result {
        Ok(report) => HttpResponse::Ok().json(report),
        Err(crate::replay::ReplayError::UnknownSource(s)) => error(
            StatusCode::NOT_FOUND,
            "unknown_source",
            format!("no source named {s:?}"),
        ),
        Err(e) => store_error(e),
    }
}

async fn reload(state: web::Data<AppState>) -> HttpResponse {
    let applied = crate::reload::reload(&state.intake, &state.reload, "admin API");
    HttpResponse::Ok().json(json!({
        "reloaded": applied,
        "mappings_version": state.intake.sources().catalog.version,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PruneBody {
    older_than: String,
}

async fn prune(body: web::Json<PruneBody>, state: web::Data<AppState>) -> HttpResponse {
    let age = match crate::units::parse_duration(&body.older_than) {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_duration", e),
    };
    match state.store.prune(now_ms() - age.as_millis() as i64).await {
        Ok(report) => HttpResponse::Ok().json(report),
        Err(e) => store_error(e),
    }
}
