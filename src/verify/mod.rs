//! Signature verification: every scheme behind one [`Verifier`].
//!
//! Every scheme works on the raw body bytes, compares in constant time, tries every signature a
//! header carries and every configured secret (rotation), judges timestamps both ways (stale
//! *and* far-future), and reports which secret matched so the old one can be retired safely.
//! Most providers that sign the body with one header are presets of the generic HMAC engine
//! (`hmac.rs`); providers with their own header grammar have their own file.

mod basic;
mod hmac;
mod hubspot;
mod mac;
mod paddle;
mod recurly;
mod standard;
mod stripe;
mod twilio;

use std::fmt;
use std::time::Duration;

use base64::Engine;

pub use self::hmac::{Encoding, HmacOptions, MessagePart, SecretEncoding, parse_message};
pub use mac::Algorithm;

/// Constant-time equality for secrets of any length (admin tokens, shared credentials).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    mac::same_secret(a, b)
}

use crate::inbound::Request;

/// A signing secret. Its `Debug` never shows the bytes, so it cannot leak through logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

macro_rules! schemes {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// The `verify.scheme` values a mapping file may name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Scheme { $($variant),* }

        impl Scheme {
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            pub fn parse(name: &str) -> Option<Self> {
                match name { $($name => Some(Self::$variant),)* _ => None }
            }

            pub fn name(self) -> &'static str {
                match self { $(Self::$variant => $name),* }
            }
        }
    };
}

schemes! {
    Stripe => "stripe",
    StandardWebhooks => "standard-webhooks",
    Svix => "svix",
    Github => "github",
    Shopify => "shopify",
    Paddle => "paddle",
    HubspotV3 => "hubspot-v3",
    HubspotV2 => "hubspot-v2",
    HubspotV1 => "hubspot-v1",
    Lemonsqueezy => "lemonsqueezy",
    Recurly => "recurly",
    Slack => "slack",
    Intercom => "intercom",
    Zendesk => "zendesk",
    Square => "square",
    Attio => "attio",
    Close => "close",
    Calendly => "calendly",
    Typeform => "typeform",
    Twilio => "twilio",
    Basic => "basic",
    Token => "token",
    Hmac => "hmac",
    None => "none",
}

impl Scheme {
    /// The timestamp window the provider documents (or its libraries use), when the scheme
    /// has a timestamp.
    pub fn default_tolerance(self) -> Option<Duration> {
        let secs = match self {
            Self::Stripe | Self::StandardWebhooks | Self::Svix | Self::HubspotV3 => 300,
            Self::Recurly | Self::Slack | Self::Zendesk | Self::Close => 300,
            Self::Calendly => 180,
            Self::Paddle => 5,
            Self::Hmac => 300,
            _ => return None,
        };
        Some(Duration::from_secs(secs))
    }

    pub fn needs_secret(self) -> bool {
        self != Self::None
    }

    /// Schemes that sign the URL the provider called: `verify.url` is required.
    pub fn needs_url(self) -> bool {
        matches!(
            self,
            Self::HubspotV3 | Self::HubspotV2 | Self::Square | Self::Twilio
        )
    }

    /// Schemes configured with the header that carries the signature or token.
    pub fn needs_header(self) -> bool {
        matches!(self, Self::Token | Self::Hmac)
    }
}

/// The `verify` table of a source, as written in its mapping file.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub scheme: Scheme,
    /// The environment variable holding the secret, or several separated by commas.
    pub secrets_env: Option<String>,
    pub tolerance: Option<Duration>,
    /// The public URL the provider calls, for schemes that sign it.
    pub url: Option<String>,
    /// The header carrying the signature (`hmac`) or the token (`token`).
    pub header: Option<String>,
    /// `token`: a prefix before the token in the header, such as `"Bearer "`.
    pub prefix: Option<String>,
    /// `hmac`: how the signature is computed and carried.
    pub hmac: Option<HmacOptions>,
}

impl Spec {
    pub fn new(scheme: Scheme) -> Self {
        Self {
            scheme,
            secrets_env: None,
            tolerance: None,
            url: None,
            header: None,
            prefix: None,
            hmac: None,
        }
    }
}

/// Why a request was refused. The names are the `reason` in 401 bodies, logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("missing_signature")]
    MissingSignature,
    #[error("malformed_signature")]
    MalformedSignature,
    #[error("timestamp_outside_tolerance")]
    TimestampOutsideTolerance,
    #[error("no_matching_signature")]
    NoMatchingSignature,
}

impl Rejection {
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingSignature => "missing_signature",
            Self::MalformedSignature => "malformed_signature",
            Self::TimestampOutsideTolerance => "timestamp_outside_tolerance",
            Self::NoMatchingSignature => "no_matching_signature",
        }
    }
}

/// A source's secret variable is unset, empty, or not in the form its scheme needs, so the
/// source cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {var} {problem}")]
pub struct SecretError {
    pub var: String,
    pub problem: String,
}

/// What a successful verification proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Index (0-based) in `verify.secrets_env` of the secret that matched; `None` for `none`.
    pub secret_index: Option<usize>,
}

/// Headers (and, for Twilio JSON bodies, a query string) that make a request verifiable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signed {
    pub headers: Vec<(String, String)>,
    /// To append to the URL (`?` excluded).
    pub query: Option<String>,
}

/// A scheme with its secrets resolved from the environment and decoded.
#[derive(Debug, Clone)]
pub struct Verifier {
    spec: Spec,
    secrets: Vec<Secret>,
    hmac: Option<hmac::HmacScheme>,
}

/// What every scheme's `verify` receives.
struct Context<'a> {
    request: &'a Request<'a>,
    secrets: &'a [Secret],
    window: Window,
    /// The URL to sign over, for schemes that sign it.
    url: Option<String>,
}

impl Verifier {
    /// Resolves the spec's secrets through `env` (the process environment in production).
    pub fn from_spec(
        spec: &Spec,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SecretError> {
        let mut secrets = Vec::new();
        if spec.scheme.needs_secret() {
            let var = spec.secrets_env.clone().unwrap_or_default();
            let value = env(&var).unwrap_or_default();
            for raw in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let decoded = decode_secret(spec, raw).map_err(|problem| SecretError {
                    var: var.clone(),
                    problem,
                })?;
                secrets.push(Secret::new(decoded));
            }
            if secrets.is_empty() {
                return Err(SecretError {
                    var,
                    problem: "is not set".into(),
                });
            }
        }
        Ok(Self {
            hmac: hmac::HmacScheme::for_spec(spec),
            spec: spec.clone(),
            secrets,
        })
    }

    /// Checks `request` at time `now` (unix seconds).
    pub fn verify(&self, request: &Request<'_>, now: i64) -> Result<Verified, Rejection> {
        let ctx = Context {
            request,
            secrets: &self.secrets,
            window: Window {
                now,
                tolerance: self.spec.tolerance.or(self.spec.scheme.default_tolerance()),
            },
            url: self.url_for(request),
        };
        let index = match (self.spec.scheme, &self.hmac) {
            (Scheme::None, _) => None,
            (_, Some(h)) => h.verify(&ctx)?,
            (Scheme::Stripe, _) => stripe::verify(&ctx, stripe::STRIPE)?,
            (Scheme::Calendly, _) => stripe::verify(&ctx, stripe::CALENDLY)?,
            (Scheme::StandardWebhooks, _) => standard::verify(&ctx, standard::WEBHOOK)?,
            (Scheme::Svix, _) => standard::verify(&ctx, standard::SVIX)?,
            (Scheme::Paddle, _) => paddle::verify(&ctx)?,
            (Scheme::Recurly, _) => recurly::verify(&ctx)?,
            (Scheme::HubspotV2, _) => hubspot::verify(&ctx, hubspot::Version::V2)?,
            (Scheme::HubspotV1, _) => hubspot::verify(&ctx, hubspot::Version::V1)?,
            (Scheme::Twilio, _) => twilio::verify(&ctx)?,
            (Scheme::Basic, _) => basic::verify_basic(&ctx)?,
            (Scheme::Token, _) => basic::verify_token(
                &ctx,
                self.spec.header.as_deref().unwrap_or(""),
                self.spec.prefix.as_deref(),
            )?,
            // Every other scheme is an HMAC preset, handled above.
            (_, None) => return Err(Rejection::NoMatchingSignature),
        };
        Ok(Verified {
            secret_index: index,
        })
    }

    /// Signs `body` the way the provider would, with the first secret (for `send`).
    /// `url` is where the request will be sent.
    pub fn sign(&self, method: &str, url: &str, body: &[u8], now: i64) -> Signed {
        let Some(secret) = self.secrets.first() else {
            return Signed::default();
        };
        let url = self.spec.url.clone().unwrap_or_else(|| url.to_string());
        let headers = match (self.spec.scheme, &self.hmac) {
            (Scheme::None, _) => Vec::new(),
            (_, Some(h)) => h.sign(method, &url, body, secret, now),
            (Scheme::Stripe, _) => stripe::sign(stripe::STRIPE, body, secret, now),
            (Scheme::Calendly, _) => stripe::sign(stripe::CALENDLY, body, secret, now),
            (Scheme::StandardWebhooks, _) => standard::sign(standard::WEBHOOK, body, secret, now),
            (Scheme::Svix, _) => standard::sign(standard::SVIX, body, secret, now),
            (Scheme::Paddle, _) => paddle::sign(body, secret, now),
            (Scheme::Recurly, _) => recurly::sign(body, secret, now),
            (Scheme::HubspotV2, _) => {
                hubspot::sign(hubspot::Version::V2, method, &url, body, secret)
            }
            (Scheme::HubspotV1, _) => {
                hubspot::sign(hubspot::Version::V1, method, &url, body, secret)
            }
            (Scheme::Twilio, _) => return twilio::sign(&url, body, secret),
            (Scheme::Basic, _) => basic::sign_basic(secret),
            (Scheme::Token, _) => basic::sign_token(
                self.spec.header.as_deref().unwrap_or(""),
                self.spec.prefix.as_deref(),
                secret,
            ),
            (_, None) => Vec::new(),
        };
        Signed {
            headers,
            query: None,
        }
    }

    fn url_for(&self, request: &Request<'_>) -> Option<String> {
        let url = self.raw_url_for(request)?;
        Some(
            if self.spec.scheme == Scheme::HubspotV3 && url.contains('%') {
                hubspot_decode(&url)
            } else {
                url
            },
        )
    }

    fn raw_url_for(&self, request: &Request<'_>) -> Option<String> {
        match (&self.spec.url, request.url) {
            // Twilio's JSON webhooks add `bodySHA256` to the configured URL's query.
            (Some(base), Some(actual))
                if self.spec.scheme == Scheme::Twilio && !base.contains('?') =>
            {
                Some(match actual.split_once('?') {
                    Some((_, query)) => format!("{base}?{query}"),
                    None => base.clone(),
                })
            }
            (Some(base), _) => Some(base.clone()),
            (None, actual) => actual.map(str::to_string),
        }
    }
}

/// HubSpot v3 signs the URI with these escapes decoded (HubSpot's "validating requests" page).
fn hubspot_decode(url: &str) -> String {
    const DECODED: [(&str, &str); 12] = [
        ("%3A", ":"),
        ("%2F", "/"),
        ("%3F", "?"),
        ("%40", "@"),
        ("%21", "!"),
        ("%24", "$"),
        ("%27", "'"),
        ("%28", "("),
        ("%29", ")"),
        ("%2A", "*"),
        ("%2C", ","),
        ("%3B", ";"),
    ];
    let mut out = url.to_string();
    for (escaped, plain) in DECODED {
        out = out
            .replace(escaped, plain)
            .replace(&escaped.to_ascii_lowercase(), plain);
    }
    out
}

fn decode_secret(spec: &Spec, raw: &str) -> Result<Vec<u8>, String> {
    let encoding = match spec.scheme {
        Scheme::StandardWebhooks | Scheme::Svix => SecretEncoding::Whsec,
        Scheme::Close => SecretEncoding::Hex,
        Scheme::Hmac => spec
            .hmac
            .as_ref()
            .map_or(SecretEncoding::Utf8, |h| h.secret_encoding),
        _ => SecretEncoding::Utf8,
    };
    encoding.decode(raw)
}

/// Standard base64 that also accepts missing padding (Standard Webhooks' Python library does).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(text.trim()).ok()
}

fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The accepted timestamp range for timestamped schemes: `now ± tolerance`, rejecting stale
/// *and* far-future timestamps (a future timestamp is as suspicious as an old one).
#[derive(Debug, Clone, Copy)]
struct Window {
    now: i64,
    tolerance: Option<Duration>,
}

impl Window {
    fn check(self, timestamp: i64) -> Result<(), Rejection> {
        match self.tolerance {
            Some(tolerance) if self.now.abs_diff(timestamp) > tolerance.as_secs() => {
                Err(Rejection::TimestampOutsideTolerance)
            }
            _ => Ok(()),
        }
    }
}

/// Tries every secret against every candidate signature; the index of the first secret that
/// matches. The timestamp is judged only on an authentic request, so that a stale but valid
/// signature is reported as what it is: a replay.
fn first_match(
    secrets: &[Secret],
    candidates: &[Vec<u8>],
    timestamp: Option<i64>,
    window: Window,
    matches: impl Fn(&Secret, &[u8]) -> bool,
) -> Result<Option<usize>, Rejection> {
    for (index, secret) in secrets.iter().enumerate() {
        if candidates.iter().any(|c| matches(secret, c)) {
            if let Some(t) = timestamp {
                window.check(t)?;
            }
            return Ok(Some(index));
        }
    }
    Err(Rejection::NoMatchingSignature)
}
