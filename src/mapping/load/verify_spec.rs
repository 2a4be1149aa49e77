//! Loading `[source.verify]`: which signature scheme a source is verified with, the variable its
//! secrets come from, and the options of the generic `hmac` scheme.

use toml::de::DeTable;

use super::{Loader, VERIFY_KEYS, get, key_span, valid_env_name};
use crate::mapping::diagnostic::closest;
use crate::units::TimeFormat;
use crate::verify::{
    Algorithm, Encoding, HmacOptions, Scheme, SecretEncoding, Spec, parse_message,
};

/// Keys of `verify` that only `scheme = "hmac"` takes.
const HMAC_KEYS: &[&str] = &[
    "algorithm",
    "encoding",
    "timestamp_header",
    "timestamp_format",
    "message",
    "secret_encoding",
];

impl Loader<'_> {
    pub(super) fn verify(&mut self, table: &DeTable<'_>) -> Option<Spec> {
        self.unknown_keys(table, VERIFY_KEYS, "verify");
        let scheme_val = self.required(table, "scheme", "verify")?;
        let scheme_name = self.string(scheme_val, "scheme")?;
        let Some(scheme) = Scheme::parse(scheme_name) else {
            let hint = match closest(scheme_name, Scheme::NAMES) {
                Some(c) => format!(
                    "did you mean {c:?}? known schemes: {}",
                    Scheme::NAMES.join(", ")
                ),
                None => format!("known schemes: {}", Scheme::NAMES.join(", ")),
            };
            self.error_hint(
                scheme_val.span(),
                format!("unknown verify scheme {scheme_name:?}"),
                hint,
            );
            return None;
        };
        if scheme == Scheme::None {
            self.warn(
                scheme_val.span(),
                "signatures are not verified for this source (scheme = \"none\")",
            );
        }
        let secrets_env = match get(table, "secrets_env") {
            Some(v) => {
                let name = self.string(v, "secrets_env")?;
                if !valid_env_name(name) {
                    self.error_hint(
                        v.span(),
                        format!("{name:?} is not an environment variable name"),
                        "name the variable (e.g. \"STRIPE_WEBHOOK_SECRET\"); put the secret itself, or several separated by commas, in that variable",
                    );
                }
                Some(name.to_string())
            }
            None if scheme.needs_secret() => {
                self.error_hint(
                    self.table_start(table),
                    format!("scheme {scheme_name:?} needs `secrets_env`"),
                    "name the environment variable that holds the signing secret",
                );
                None
            }
            None => None,
        };
        let tolerance = get(table, "tolerance").and_then(|v| {
            let s = self.string(v, "tolerance")?;
            match crate::units::parse_duration(s) {
                Ok(d) => Some(d),
                Err(why) => {
                    self.error(v.span(), format!("bad duration: {why}"));
                    None
                }
            }
        });
        let url = get(table, "url").and_then(|v| self.string(v, "url").map(str::to_string));
        if scheme.needs_url() && url.is_none() {
            self.error_hint(
                scheme_val.span(),
                format!("scheme {scheme_name:?} signs the URL the provider calls: add `url`"),
                "e.g. url = \"https://hooks.example.com/webhooks/NAME\", exactly as configured at the provider",
            );
        }
        let header =
            get(table, "header").and_then(|v| self.string(v, "header").map(str::to_string));
        if scheme.needs_header() && header.is_none() {
            self.error_hint(
                scheme_val.span(),
                format!("scheme {scheme_name:?} needs `header`"),
                "name the request header that carries the signature or token",
            );
        }
        let prefix = get(table, "prefix").and_then(|v| {
            if !matches!(scheme, Scheme::Hmac | Scheme::Token) {
                self.error(
                    v.span(),
                    "`prefix` applies only to schemes \"hmac\" and \"token\"",
                );
            }
            self.string(v, "prefix").map(str::to_string)
        });
        for key in HMAC_KEYS {
            if scheme != Scheme::Hmac && get(table, key).is_some() {
                self.error(
                    key_span(table, key),
                    format!("`{key}` applies only to scheme = \"hmac\""),
                );
            }
        }
        let hmac = if scheme == Scheme::Hmac {
            Some(self.hmac_options(table, prefix.clone())?)
        } else {
            None
        };
        Some(Spec {
            scheme,
            secrets_env,
            tolerance,
            url,
            header,
            prefix,
            hmac,
        })
    }

    fn hmac_options(&mut self, table: &DeTable<'_>, prefix: Option<String>) -> Option<HmacOptions> {
        let algorithm = match get(table, "algorithm") {
            Some(v) => self.enumerated(v, "algorithm", Algorithm::NAMES, Algorithm::parse)?,
            None => Algorithm::Sha256,
        };
        let encoding = match get(table, "encoding") {
            Some(v) => self.enumerated(v, "encoding", Encoding::NAMES, Encoding::parse)?,
            None => Encoding::Hex,
        };
        let timestamp_format = match get(table, "timestamp_format") {
            Some(v) => {
                self.enumerated(v, "timestamp_format", TimeFormat::NAMES, TimeFormat::parse)?
            }
            None => TimeFormat::Unix,
        };
        let secret_encoding = match get(table, "secret_encoding") {
            Some(v) => self.enumerated(
                v,
                "secret_encoding",
                SecretEncoding::NAMES,
                SecretEncoding::parse,
            )?,
            None => SecretEncoding::Utf8,
        };
        let timestamp_header = get(table, "timestamp_header")
            .and_then(|v| self.string(v, "timestamp_header").map(str::to_string));
        let message = match get(table, "message") {
            Some(v) => {
                let text = self.string(v, "message")?;
                match parse_message(text) {
                    Ok(parts) => {
                        if parts.contains(&crate::verify::MessagePart::Timestamp)
                            && timestamp_header.is_none()
                        {
                            self.error(
                                v.span(),
                                "the message uses {timestamp} but `timestamp_header` is not set",
                            );
                        }
                        Some(parts)
                    }
                    Err(why) => {
                        self.error(v.span(), why);
                        return None;
                    }
                }
            }
            None => None,
        };
        Some(HmacOptions {
            algorithm,
            encoding,
            prefix,
            timestamp_header,
            timestamp_format,
            message,
            secret_encoding,
        })
    }
}
