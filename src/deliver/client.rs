//! The HTTP client for `POST {GREENFLASH_API_URL}/events`, and how its answers are classified.

use std::time::Duration;

use crate::verify::Secret;

/// What one POST achieved.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered {
        status: u16,
    },
    /// Worth trying again: connection errors, timeouts, 408, 409, 429, 5xx — and 401/403,
    /// because a wrong or revoked key is fixed by the operator, not by dropping events.
    Retry {
        status: Option<u16>,
        retry_after: Option<Duration>,
        error: String,
    },
    /// Greenflash refused this event for good (400, 404, 422 …): keep it as a dead letter.
    Permanent {
        status: u16,
        error: String,
    },
}

/// How much of an error response to keep with the event.
const MAX_ERROR_BODY: usize = 2000;

#[derive(Debug, Clone)]
pub struct GreenflashClient {
    http: reqwest::Client,
    events_url: String,
    authorization: String,
}

impl GreenflashClient {
    pub fn new(api_url: &str, api_key: &Secret, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // A redirect would resend the event somewhere else; count it as a failure instead.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("greenflash-bridge/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        let key = String::from_utf8_lossy(api_key.expose());
        Ok(Self {
            http,
            events_url: format!("{}/events", api_url.trim_end_matches('/')),
            authorization: format!("Bearer {key}"),
        })
    }

    pub async fn send(&self, payload: &str) -> Attempt {
        let response = self
            .http
            .post(&self.events_url)
            .header("authorization", &self.authorization)
            .header("content-type", "application/json")
            .body(payload.to_string())
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry {
                    status: None,
                    retry_after: None,
                    error: describe(&e),
                };
            }
        };
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Attempt::Delivered { status };
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut body = response.text().await.unwrap_or_default();
        if body.len() > MAX_ERROR_BODY {
            let cut = (0..=MAX_ERROR_BODY)
                .rev()
                .find(|i| body.is_char_boundary(*i))
                .unwrap_or(0);
            body.truncate(cut);
        }
        let error = format!("HTTP {status}: {body}");
        match status {
            401 | 403 | 408 | 409 | 429 | 500..=599 => Attempt::Retry {
                status: Some(status),
                retry_after,
                error,
            },
            _ => Attempt::Permanent { status, error },
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let delay = at - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(delay).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("4"), Some(Duration::from_secs(4)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        let later = time::OffsetDateTime::now_utc() + time::Duration::seconds(120);
        let date = later
            .format(&time::format_description::well_known::Rfc2822)
            .unwrap();
        let d = parse_retry_after(&date).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
