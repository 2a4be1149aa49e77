//! A stand-in for Greenflash's `POST /api/v1/events`, served over real HTTP on loopback.
//!
//! It enforces the published schema on its own (deliberately not reusing the bridge's
//! validation, so a bug there cannot hide here), de-duplicates on `insertId` as Greenflash
//! does, and can be told to fail: scripted answers, or every request failing until cleared.

#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

pub const API_KEY: &str = "gf_test_key_5d1c";

/// A scripted answer: status and extra headers.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

#[derive(Default)]
struct State {
    /// Accepted events, first delivery of each insertId only.
    accepted: Vec<Value>,
    insert_ids: HashSet<String>,
    /// Every request that reached the handler, with the time it arrived.
    requests: Vec<(Instant, Value)>,
    duplicates: usize,
    rejected: Vec<(u16, String)>,
    script: VecDeque<Scripted>,
    fail_all: Option<u16>,
    delay: Duration,
}

#[derive(Clone)]
pub struct Standin {
    state: Arc<Mutex<State>>,
    pub base_url: String,
}

impl Standin {
    /// Starts on a free loopback port, in its own thread and runtime.
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = state.clone();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let data = web::Data::from(shared);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(web::PayloadConfig::new(1 << 20))
                        .route("/api/v1/events", web::post().to(events))
                })
                .workers(2)
                .disable_signals()
                .bind("127.0.0.1:0")
                .expect("bind stand-in");
                let addr = server.addrs()[0];
                tx.send(addr).expect("report address");
                server.run().await.expect("stand-in server");
            });
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("stand-in started");
        Self {
            state,
            base_url: format!("http://{addr}/api/v1"),
        }
    }

    /// Answers the next requests with these, in order, before behaving normally again.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.state.lock().unwrap().script.extend(answers);
    }

    /// Fails every request with `status` until `recover` is called.
    pub fn fail_all(&self, status: u16) {
        self.state.lock().unwrap().fail_all = Some(status);
    }

    /// Holds every answer this long (slow Greenflash).
    pub fn delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    pub fn recover(&self) {
        self.state.lock().unwrap().fail_all = None;
    }

    pub fn accepted(&self) -> Vec<Value> {
        self.state.lock().unwrap().accepted.clone()
    }

    pub fn request_count(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    pub fn request_times(&self) -> Vec<Instant> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .map(|(t, _)| *t)
            .collect()
    }

    pub fn duplicates(&self) -> usize {
        self.state.lock().unwrap().duplicates
    }

    pub fn rejected(&self) -> Vec<(u16, String)> {
        self.state.lock().unwrap().rejected.clone()
    }

    /// Waits until at least `n` distinct events were accepted; panics after `within`.
    pub fn wait_for_accepted(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.accepted();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "stand-in accepted {} of {n} events within {within:?}; rejected: {:?}",
                got.len(),
                self.rejected()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until at least `n` requests arrived (whatever their answer).
    pub fn wait_for_requests(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.request_count() < n {
            assert!(
                Instant::now() < deadline,
                "stand-in saw {} of {n} requests",
                self.request_count()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

async fn events(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Mutex<State>>,
) -> HttpResponse {
    let parsed: Result<Value, _> = serde_json::from_slice(&body);
    let mut s = state.lock().unwrap();
    s.requests.push((
        Instant::now(),
        parsed.as_ref().ok().cloned().unwrap_or(Value::Null),
    ));
    if let Some(answer) = s.script.pop_front() {
        let mut response =
            HttpResponse::build(actix_web::http::StatusCode::from_u16(answer.status).unwrap());
        for (k, v) in &answer.headers {
            response.insert_header((k.as_str(), v.as_str()));
        }
        return response.json(json!({"success": false, "error": "scripted"}));
    }
    if let Some(status) = s.fail_all {
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
            .json(json!({"success": false, "error": "outage"}));
    }
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {API_KEY}")) {
        s.rejected.push((401, "bad api key".into()));
        return HttpResponse::Unauthorized()
            .json(json!({"success": false, "error": "invalid API key"}));
    }
    let event = match parsed {
        Ok(v) => v,
        Err(e) => {
            s.rejected.push((400, e.to_string()));
            return HttpResponse::BadRequest()
                .json(json!({"success": false, "error": "invalid JSON"}));
        }
    };
    if let Err(problem) = check_schema(&event) {
        s.rejected.push((422, problem.clone()));
        return HttpResponse::UnprocessableEntity()
            .json(json!({"success": false, "error": problem}));
    }
    let event_id = uuid::Uuid::new_v4().to_string();
    if let Some(insert_id) = event.get("insertId").and_then(Value::as_str)
        && !s.insert_ids.insert(insert_id.to_string())
    {
        s.duplicates += 1;
        return HttpResponse::Ok().json(json!({"success": true, "eventId": event_id}));
    }
    s.accepted.push(event);
    HttpResponse::Ok().json(json!({"success": true, "eventId": event_id}))
}

/// Greenflash's published event schema.
pub fn check_schema(event: &Value) -> Result<(), String> {
    let obj = event.as_object().ok_or("body must be a JSON object")?;
    const KNOWN: &[&str] = &[
        "eventType",
        "productId",
        "value",
        "valueType",
        "influence",
        "qualityImpactScore",
        "conversationId",
        "externalConversationId",
        "userId",
        "externalUserId",
        "organizationId",
        "externalOrganizationId",
        "eventAt",
        "insertId",
        "properties",
        "sampleRate",
        "forceSample",
    ];
    for (key, value) in obj {
        if !KNOWN.contains(&key.as_str()) {
            return Err(format!("unknown field {key}"));
        }
        if value.is_null() {
            return Err(format!("{key} must not be null"));
        }
    }
    let string = |k: &str| {
        obj.get(k)
            .map(|v| v.as_str().ok_or(format!("{k} must be a string")))
    };
    let uuid = |k: &str| -> Result<(), String> {
        match string(k).transpose()? {
            Some(s) if uuid::Uuid::try_parse(s).is_err() || s.len() != 36 => {
                Err(format!("{k} must be a uuid"))
            }
            _ => Ok(()),
        }
    };
    match string("eventType").transpose()? {
        Some(s) if !s.is_empty() => {}
        _ => return Err("eventType is required".into()),
    }
    if string("productId").is_none() {
        return Err("productId is required".into());
    }
    uuid("productId")?;
    if string("value").transpose()?.is_none() {
        return Err("value is required".into());
    }
    if let Some(t) = string("valueType").transpose()?
        && !["currency", "numeric", "text", "boolean"].contains(&t)
    {
        return Err(format!("valueType {t} is not allowed"));
    }
    if let Some(i) = string("influence").transpose()?
        && !["positive", "negative", "neutral"].contains(&i)
    {
        return Err(format!("influence {i} is not allowed"));
    }
    for (k, lo, hi) in [("qualityImpactScore", -1.0, 1.0), ("sampleRate", 0.0, 1.0)] {
        if let Some(v) = obj.get(k) {
            let n = v.as_f64().ok_or(format!("{k} must be a number"))?;
            if !(lo..=hi).contains(&n) {
                return Err(format!("{k} out of range"));
            }
        }
    }
    if obj.get("forceSample").is_some_and(|v| !v.is_boolean()) {
        return Err("forceSample must be a boolean".into());
    }
    for k in ["conversationId", "userId", "organizationId"] {
        uuid(k)?;
    }
    for k in [
        "externalConversationId",
        "externalUserId",
        "externalOrganizationId",
        "insertId",
    ] {
        string(k).transpose()?;
    }
    if let Some(at) = string("eventAt").transpose()? {
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
            .map_err(|_| format!("eventAt {at} is not ISO 8601"))?;
    }
    if obj.get("properties").is_some_and(|p| !p.is_object()) {
        return Err("properties must be an object".into());
    }
    Ok(())
}
