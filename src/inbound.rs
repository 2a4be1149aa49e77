//! A webhook request as the pipeline sees it: method, URL, headers and the raw body bytes.
//!
//! The server copies actix's headers into this type so that verification, mapping and the store
//! never depend on an HTTP crate's header types (actix-web and reqwest use different `http`
//! versions).

use serde_json::{Map, Value};

/// Request headers with lower-cased names, in arrival order. Lookups are case-insensitive
/// because providers' casing differs from their documentation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Headers(Vec<(String, Vec<u8>)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.0.push((name.to_ascii_lowercase(), value.into()));
    }

    /// The first value of `name`, as bytes.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `name`, if it is valid UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The headers worth keeping with a stored webhook so that it can be re-mapped later
    /// (mappings may read the event type or id from a header). Credentials are left out.
    pub fn to_stored_json(&self) -> String {
        let mut map = Map::new();
        for (name, value) in &self.0 {
            if name == "authorization" || name == "cookie" || map.contains_key(name) {
                continue;
            }
            let value = String::from_utf8_lossy(value).into_owned();
            map.insert(name.clone(), Value::String(value));
        }
        Value::Object(map).to_string()
    }

    /// Inverse of [`Headers::to_stored_json`]; also reads `<name>.headers.json` fixture files.
    pub fn from_json(json: &Value) -> Self {
        let mut headers = Self::new();
        if let Value::Object(map) = json {
            for (name, value) in map {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                headers.insert(name, text);
            }
        }
        headers
    }
}

/// Everything a verifier may sign over.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The URL the provider called, for schemes that sign it (HubSpot v3, Square, Twilio).
    pub url: Option<&'a str>,
    pub headers: &'a Headers,
    pub body: &'a [u8],
}
