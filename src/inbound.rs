//! A webhook request as the pipeline sees it: method, URL, headers and the raw body bytes.
//!
//! The server copies actix's headers into this type so that verification, mapping and the store
//! never depend on an HTTP crate's header types (actix-web and reqwest use different `http`
//! versions).

use serde_json::Value;

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
        // Borrowed, and in name order as a JSON object is written: the same text as through
        // `serde_json::Value` without building one for every webhook.
        let mut kept = std::collections::BTreeMap::new();
        for (name, value) in &self.0 {
            if name != "authorization" && name != "cookie" {
                kept.entry(name.as_str())
                    .or_insert_with(|| String::from_utf8_lossy(value));
            }
        }
        serde_json::to_string(&kept).unwrap_or_else(|_| "{}".into())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_headers_keep_the_first_of_each_and_no_credentials() {
        let mut headers = Headers::new();
        headers.insert("Stripe-Signature", "t=1,v1=ab");
        headers.insert("Content-Type", "application/json");
        headers.insert("X-Dup", "first");
        headers.insert("x-dup", "second");
        headers.insert("Authorization", "Bearer secret");
        headers.insert("Cookie", "session=secret");
        headers.insert("X-Bytes", vec![b'a', 0xff, b'"']);
        let stored = headers.to_stored_json();
        assert_eq!(
            stored,
            r#"{"content-type":"application/json","stripe-signature":"t=1,v1=ab","x-bytes":"a�\"","x-dup":"first"}"#
        );
        let back = Headers::from_json(&serde_json::from_str(&stored).unwrap());
        assert_eq!(back.get_str("x-dup"), Some("first"));
        assert_eq!(back.get("authorization"), None);
    }
}
