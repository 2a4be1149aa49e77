//! The HTTP client for `POST {GREENFLASH_API_URL}/events`, and how its answers are classified.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};

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

/// Why the client cannot be built: settings that would make every delivery fail.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("GREENFLASH_API_URL {url:?} is not an http(s) URL: {reason}")]
    ApiUrl { url: String, reason: String },
    #[error(
        "GREENFLASH_API_KEY cannot be sent in an HTTP header: it holds a control character (a trailing newline?)"
    )]
    ApiKey,
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

#[derive(Debug, Clone)]
pub struct GreenflashClient {
    http: reqwest::Client,
    /// Parsed once; a URL given as text would be parsed again for every event.
    events_url: reqwest::Url,
    /// Marked sensitive, so that it shows as `Sensitive` in any debug output.
    authorization: HeaderValue,
}

impl GreenflashClient {
    pub fn new(api_url: &str, api_key: &Secret, timeout: Duration) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // A redirect would resend the event somewhere else; count it as a failure instead.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("greenflash-bridge/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        let bad_url = |reason: String| ClientError::ApiUrl {
            url: api_url.to_string(),
            reason,
        };
        let events_url = reqwest::Url::parse(&format!("{}/events", api_url.trim_end_matches('/')))
            .map_err(|e| bad_url(e.to_string()))?;
        if !matches!(events_url.scheme(), "http" | "https") {
            return Err(bad_url(format!("the scheme is {:?}", events_url.scheme())));
        }
        let key = String::from_utf8_lossy(api_key.expose());
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| ClientError::ApiKey)?;
        authorization.set_sensitive(true);
        Ok(Self {
            http,
            events_url,
            authorization,
        })
    }

    pub async fn send(&self, payload: &str) -> Attempt {
        let response = self
            .http
            .post(self.events_url.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
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

    fn client(url: &str, key: &str) -> Result<GreenflashClient, ClientError> {
        GreenflashClient::new(url, &Secret::new(key), Duration::from_secs(1))
    }

    #[test]
    fn settings_that_would_fail_every_delivery_fail_at_start() {
        let url = client("www.greenflash.ai/api/v1", "gf_key").unwrap_err();
        assert!(
            url.to_string().starts_with(
                "GREENFLASH_API_URL \"www.greenflash.ai/api/v1\" is not an http(s) URL"
            ),
            "{url}"
        );
        let scheme = client("ftp://greenflash.ai/api/v1", "gf_key").unwrap_err();
        assert!(
            scheme.to_string().contains(r#"the scheme is "ftp""#),
            "{scheme}"
        );
        let key = client("https://www.greenflash.ai/api/v1", "gf_key\n").unwrap_err();
        assert!(matches!(key, ClientError::ApiKey), "{key}");
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let built = client("https://www.greenflash.ai/api/v1/", "gf_live_secret").unwrap();
        let shown = format!("{built:?}");
        assert!(!shown.contains("gf_live_secret"), "{shown}");
        assert!(shown.contains(r#"path: "/api/v1/events""#), "{shown}");
    }

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
