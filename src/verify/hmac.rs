//! The generic HMAC engine, and the providers that are presets of it.
//!
//! A signature is `encode(HMAC(key, message))`, optionally behind a prefix (`sha256=`), in one
//! of a few headers, where the message is a composition of the body, a timestamp header, the
//! method, the URL and other headers. GitHub, Shopify, Slack, HubSpot v3, Square, Zendesk,
//! Close, Intercom, Attio, Typeform and Lemon Squeezy differ only in those parameters; an
//! operator describes any other provider the same way with `scheme = "hmac"`.

use super::mac::{self, Algorithm};
use super::{Context, Rejection, Scheme, Secret, Spec, base64_decode, base64_encode, first_match};
use crate::units::TimeFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

impl Encoding {
    pub const NAMES: &'static [&'static str] = &["hex", "base64"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "hex" => Some(Self::Hex),
            "base64" => Some(Self::Base64),
            _ => None,
        }
    }

    fn decode(self, text: &str) -> Option<Vec<u8>> {
        match self {
            Self::Hex => hex::decode(text).ok(),
            Self::Base64 => base64_decode(text),
        }
    }

    fn encode(self, bytes: &[u8]) -> String {
        match self {
            Self::Hex => hex::encode(bytes),
            Self::Base64 => base64_encode(bytes),
        }
    }
}

/// How the secret in the environment variable becomes the HMAC key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretEncoding {
    /// The string's bytes, as most providers use it.
    Utf8,
    Base64,
    Hex,
    /// `whsec_` + base64, as Standard Webhooks and Svix issue them.
    Whsec,
}

impl SecretEncoding {
    pub const NAMES: &'static [&'static str] = &["utf8", "base64", "hex", "whsec"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "utf8" => Some(Self::Utf8),
            "base64" => Some(Self::Base64),
            "hex" => Some(Self::Hex),
            "whsec" => Some(Self::Whsec),
            _ => None,
        }
    }

    pub fn decode(self, raw: &str) -> Result<Vec<u8>, String> {
        match self {
            Self::Utf8 => Ok(raw.as_bytes().to_vec()),
            Self::Base64 => base64_decode(raw).ok_or_else(|| "is not valid base64".to_string()),
            Self::Hex => hex::decode(raw).map_err(|_| "is not valid hex".to_string()),
            Self::Whsec => base64_decode(raw.strip_prefix("whsec_").unwrap_or(raw))
                .ok_or_else(|| "is not a whsec_… secret (base64 after the prefix)".to_string()),
        }
    }
}

/// Unix seconds of a signature timestamp written in `format`.
fn timestamp_seconds(format: TimeFormat, text: &str) -> Option<i64> {
    match format {
        TimeFormat::Unix => text.trim().parse().ok(),
        TimeFormat::UnixMs => text
            .trim()
            .parse::<i64>()
            .ok()
            .map(|ms| ms.div_euclid(1000)),
        TimeFormat::Iso8601 => {
            time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
                .ok()
                .map(|t| t.unix_timestamp())
        }
    }
}

/// `now` (Unix seconds) written in `format`, for signing.
fn render_timestamp(format: TimeFormat, now: i64) -> String {
    match format {
        TimeFormat::Unix => now.to_string(),
        TimeFormat::UnixMs => (now * 1000).to_string(),
        TimeFormat::Iso8601 => time::OffsetDateTime::from_unix_timestamp(now)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default(),
    }
}

/// One piece of the signed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessagePart {
    Text(String),
    Body,
    /// The timestamp header's value, verbatim.
    Timestamp,
    Method,
    Url,
    Header(String),
}

/// Parses a message layout such as `"{timestamp}.{body}"` or `"v0:{timestamp}:{body}"`.
/// Placeholders: `{body}`, `{timestamp}`, `{method}`, `{url}`, `{header:NAME}`.
pub fn parse_message(text: &str) -> Result<Vec<MessagePart>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        if start > 0 {
            parts.push(MessagePart::Text(rest[..start].to_string()));
        }
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in message {text:?}"))?;
        let name = &rest[start + 1..start + end];
        parts.push(match name {
            "body" => MessagePart::Body,
            "timestamp" => MessagePart::Timestamp,
            "method" => MessagePart::Method,
            "url" => MessagePart::Url,
            _ => match name.strip_prefix("header:") {
                Some(h) if !h.is_empty() => MessagePart::Header(h.to_ascii_lowercase()),
                _ => {
                    return Err(format!(
                        "unknown placeholder {{{name}}}; use {{body}}, {{timestamp}}, {{method}}, {{url}} or {{header:NAME}}"
                    ));
                }
            },
        });
        rest = &rest[start + end + 1..];
    }
    if !rest.is_empty() {
        parts.push(MessagePart::Text(rest.to_string()));
    }
    if !parts.contains(&MessagePart::Body) {
        return Err(format!("message {text:?} does not include {{body}}"));
    }
    Ok(parts)
}

/// `scheme = "hmac"` settings from the mapping file.
#[derive(Debug, Clone, PartialEq)]
pub struct HmacOptions {
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    /// Before the encoded signature in the header, such as `"sha256="`.
    pub prefix: Option<String>,
    pub timestamp_header: Option<String>,
    pub timestamp_format: TimeFormat,
    /// Default `{body}`, or `{timestamp}.{body}` with a timestamp header.
    pub message: Option<Vec<MessagePart>>,
    pub secret_encoding: SecretEncoding,
}

/// A fully described HMAC scheme: a preset, or the operator's `hmac` options.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct HmacScheme {
    algorithm: Algorithm,
    encoding: Encoding,
    /// Tried in order; the first present one is used.
    headers: Vec<String>,
    prefix: Option<String>,
    timestamp: Option<(String, TimeFormat)>,
    message: Vec<MessagePart>,
}

fn text(s: &str) -> MessagePart {
    MessagePart::Text(s.to_string())
}

impl HmacScheme {
    /// The HMAC description of `spec`'s scheme, if it is one.
    pub(super) fn for_spec(spec: &Spec) -> Option<Self> {
        use MessagePart::{Body, Method, Timestamp, Url};
        let preset = |algorithm,
                      encoding,
                      headers: &[&str],
                      prefix: Option<&str>,
                      timestamp: Option<(&str, TimeFormat)>,
                      message: Vec<MessagePart>| HmacScheme {
            algorithm,
            encoding,
            headers: headers.iter().map(|h| h.to_string()).collect(),
            prefix: prefix.map(str::to_string),
            timestamp: timestamp.map(|(h, f)| (h.to_string(), f)),
            message,
        };
        use Algorithm::{Sha1, Sha256};
        use Encoding::{Base64, Hex};
        Some(match spec.scheme {
            Scheme::Github => preset(
                Sha256,
                Hex,
                &["x-hub-signature-256"],
                Some("sha256="),
                None,
                vec![Body],
            ),
            Scheme::Shopify => preset(
                Sha256,
                Base64,
                &["x-shopify-hmac-sha256", "shopify-hmac-sha256"],
                None,
                None,
                vec![Body],
            ),
            Scheme::Lemonsqueezy => preset(Sha256, Hex, &["x-signature"], None, None, vec![Body]),
            Scheme::Intercom => preset(
                Sha1,
                Hex,
                &["x-hub-signature"],
                Some("sha1="),
                None,
                vec![Body],
            ),
            Scheme::Attio => preset(
                Sha256,
                Hex,
                &["attio-signature", "x-attio-signature"],
                None,
                None,
                vec![Body],
            ),
            Scheme::Typeform => preset(
                Sha256,
                Base64,
                &["typeform-signature"],
                Some("sha256="),
                None,
                vec![Body],
            ),
            Scheme::Square => preset(
                Sha256,
                Base64,
                &["x-square-hmacsha256-signature"],
                None,
                None,
                vec![Url, Body],
            ),
            Scheme::Slack => preset(
                Sha256,
                Hex,
                &["x-slack-signature"],
                Some("v0="),
                Some(("x-slack-request-timestamp", TimeFormat::Unix)),
                vec![text("v0:"), Timestamp, text(":"), Body],
            ),
            Scheme::Zendesk => preset(
                Sha256,
                Base64,
                &["x-zendesk-webhook-signature"],
                None,
                Some(("x-zendesk-webhook-signature-timestamp", TimeFormat::Iso8601)),
                vec![Timestamp, Body],
            ),
            Scheme::Close => preset(
                Sha256,
                Hex,
                &["close-sig-hash"],
                None,
                Some(("close-sig-timestamp", TimeFormat::Unix)),
                vec![Timestamp, Body],
            ),
            Scheme::HubspotV3 => preset(
                Sha256,
                Base64,
                &["x-hubspot-signature-v3"],
                None,
                Some(("x-hubspot-request-timestamp", TimeFormat::UnixMs)),
                vec![Method, Url, Body, Timestamp],
            ),
            Scheme::Hmac => {
                let o = spec.hmac.as_ref()?;
                let timestamp = o
                    .timestamp_header
                    .as_ref()
                    .map(|h| (h.to_ascii_lowercase(), o.timestamp_format));
                let message = o.message.clone().unwrap_or_else(|| match timestamp {
                    Some(_) => vec![Timestamp, text("."), Body],
                    None => vec![Body],
                });
                HmacScheme {
                    algorithm: o.algorithm,
                    encoding: o.encoding,
                    headers: vec![spec.header.clone()?.to_ascii_lowercase()],
                    prefix: o.prefix.clone(),
                    timestamp,
                    message,
                }
            }
            _ => return None,
        })
    }

    pub(super) fn verify(&self, ctx: &Context<'_>) -> Result<Option<usize>, Rejection> {
        let headers = ctx.request.headers;
        let value = self
            .headers
            .iter()
            .find_map(|h| headers.get_str(h))
            .ok_or(Rejection::MissingSignature)?;
        let (timestamp_text, timestamp) = match &self.timestamp {
            None => (None, None),
            Some((header, format)) => {
                let t = headers.get_str(header).ok_or(Rejection::MissingSignature)?;
                let seconds = timestamp_seconds(*format, t).ok_or(Rejection::MalformedSignature)?;
                (Some(t), Some(seconds))
            }
        };
        // Several signatures may share the header (rotation); none of the encodings use
        // commas or spaces, so both separate candidates.
        let candidates: Vec<Vec<u8>> = value
            .split([',', ' '])
            .filter(|t| !t.is_empty())
            .filter_map(|token| match &self.prefix {
                Some(p) => token.strip_prefix(p.as_str()),
                None => Some(token),
            })
            .filter_map(|token| self.encoding.decode(token))
            .collect();
        if candidates.is_empty() {
            return Err(Rejection::MalformedSignature);
        }
        let url = ctx.url.as_deref().unwrap_or("");
        let message = self.message_parts(
            ctx.request.method,
            url,
            timestamp_text.unwrap_or(""),
            ctx.request.body,
            |h| headers.get(h).unwrap_or_default(),
        );
        first_match(
            ctx.secrets,
            &candidates,
            timestamp,
            ctx.window,
            |secret, sig| mac::verify(self.algorithm, secret.expose(), &message, sig),
        )
    }

    pub(super) fn sign(
        &self,
        method: &str,
        url: &str,
        body: &[u8],
        secret: &Secret,
        now: i64,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let timestamp = self.timestamp.as_ref().map(|(header, format)| {
            let t = render_timestamp(*format, now);
            out.push((header.clone(), t.clone()));
            t
        });
        let message = self.message_parts(
            method,
            url,
            timestamp.as_deref().unwrap_or(""),
            body,
            |_| &[],
        );
        let sig = self
            .encoding
            .encode(&mac::compute(self.algorithm, secret.expose(), &message));
        let value = format!("{}{sig}", self.prefix.as_deref().unwrap_or(""));
        out.push((self.headers[0].clone(), value));
        out
    }

    fn message_parts<'a>(
        &'a self,
        method: &'a str,
        url: &'a str,
        timestamp: &'a str,
        body: &'a [u8],
        header: impl Fn(&str) -> &'a [u8],
    ) -> Vec<&'a [u8]> {
        self.message
            .iter()
            .map(|part| match part {
                MessagePart::Text(t) => t.as_bytes(),
                MessagePart::Body => body,
                MessagePart::Timestamp => timestamp.as_bytes(),
                MessagePart::Method => method.as_bytes(),
                MessagePart::Url => url.as_bytes(),
                MessagePart::Header(h) => header(h),
            })
            .collect()
    }
}
