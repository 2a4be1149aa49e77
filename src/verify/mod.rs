//! Signature verification: one file per provider scheme, all behind [`Verifier`].
//!
//! Every scheme works on the raw body bytes, compares in constant time (through
//! `Mac::verify_slice` or `subtle`), tries every signature a header carries and every configured
//! secret (rotation), and reports which secret matched so the old one can be retired safely.

mod mac;
mod stripe;

use std::fmt;
use std::time::Duration;

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

/// The `verify.scheme` values a mapping file may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Stripe-Signature: t=…,v1=…`, HMAC-SHA256 over `"{t}.{body}"`.
    Stripe,
    /// No verification. Allowed only when written explicitly; `check` and start-up warn.
    None,
}

impl Scheme {
    pub const NAMES: &'static [&'static str] = &["stripe", "none"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "stripe" => Some(Self::Stripe),
            "none" => Some(Self::None),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::None => "none",
        }
    }

    /// The timestamp window the provider's own libraries use, when the scheme has a timestamp.
    pub fn default_tolerance(self) -> Option<Duration> {
        match self {
            Self::Stripe => Some(Duration::from_secs(300)),
            Self::None => None,
        }
    }

    pub fn needs_secret(self) -> bool {
        !matches!(self, Self::None)
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

/// A source's secret variable is not set (or is empty), so the source cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {var} is not set")]
pub struct MissingSecret {
    pub var: String,
}

/// What a successful verification proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Index (0-based) in `verify.secrets_env` of the secret that matched; `None` for `none`.
    pub secret_index: Option<usize>,
}

/// A scheme with its secrets resolved from the environment.
#[derive(Debug, Clone)]
pub struct Verifier {
    scheme: Scheme,
    secrets: Vec<Secret>,
    tolerance: Option<Duration>,
}

impl Verifier {
    /// Resolves the spec's secrets through `env` (the process environment in production).
    pub fn from_spec(
        spec: &Spec,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, MissingSecret> {
        let mut secrets = Vec::new();
        if spec.scheme.needs_secret() {
            let var = spec.secrets_env.clone().unwrap_or_default();
            let value = env(&var).unwrap_or_default();
            secrets = value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Secret::new(s.as_bytes()))
                .collect();
            if secrets.is_empty() {
                return Err(MissingSecret { var });
            }
        }
        Ok(Self {
            scheme: spec.scheme,
            secrets,
            tolerance: spec.tolerance.or(spec.scheme.default_tolerance()),
        })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Checks `request` at time `now` (unix seconds).
    pub fn verify(&self, request: &Request<'_>, now: i64) -> Result<Verified, Rejection> {
        let window = Window {
            now,
            tolerance: self.tolerance,
        };
        match self.scheme {
            Scheme::None => Ok(None),
            Scheme::Stripe => stripe::verify(request, &self.secrets, window),
        }
        .map(|index| Verified {
            secret_index: index,
        })
    }

    /// Signs `body` the way the provider would, with the first secret, for `send` and tests.
    /// Returns the headers to add.
    pub fn sign(&self, body: &[u8], now: i64) -> Vec<(String, String)> {
        match (self.scheme, self.secrets.first()) {
            (Scheme::Stripe, Some(secret)) => stripe::sign(body, secret, now),
            _ => Vec::new(),
        }
    }
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
            Some(tolerance) if (self.now - timestamp).unsigned_abs() > tolerance.as_secs() => {
                Err(Rejection::TimestampOutsideTolerance)
            }
            _ => Ok(()),
        }
    }
}
