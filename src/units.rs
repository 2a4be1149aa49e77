//! Human-friendly durations (`"500ms"`, `"30s"`, `"5m"`, `"72h"`, `"30d"`), byte sizes
//! (`"1MiB"`) and timestamp notations for mapping files and command-line flags.

use std::time::Duration;

/// How a timestamp is written, in a payload (`time` in a mapping) or in a signature header
/// (`timestamp_format` of a generic HMAC scheme).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFormat {
    /// Seconds since the epoch (Stripe `created`).
    Unix,
    /// Milliseconds since the epoch (HubSpot `occurredAt`).
    UnixMs,
    /// An RFC 3339 / ISO 8601 string with an offset (Paddle, Shopify).
    Iso8601,
}

impl TimeFormat {
    pub const NAMES: &'static [&'static str] = &["unix", "unix_ms", "iso8601"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "unix" => Some(Self::Unix),
            "unix_ms" => Some(Self::UnixMs),
            "iso8601" => Some(Self::Iso8601),
            _ => None,
        }
    }
}

/// Parses a whole number followed by one of `ms`, `s`, `m`, `h`, `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit; write e.g. \"300s\" or \"5m\""))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let seconds = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}; use ms, s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_secs(seconds))
}

/// An instant given as RFC 3339 (`2026-03-09T16:00:00Z`) or as a duration ago (`24h`), in ms
/// since the epoch.
pub fn parse_instant(text: &str, now_ms: i64) -> Result<i64, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(at) = time::OffsetDateTime::parse(text.trim(), &Rfc3339) {
        return Ok((at.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let ago = parse_duration(text).map_err(|_| {
        format!(
            "{text:?} is neither an RFC 3339 time (2026-03-09T16:00:00Z) nor a duration ago (24h)"
        )
    })?;
    Ok(now_ms - ago.as_millis() as i64)
}

/// Parses a byte count: a whole number, optionally followed by `B`, `KiB`, `MiB` or `GiB`.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: usize = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "KB" | "k" => 1 << 10,
        "MiB" | "MB" | "M" => 1 << 20,
        "GiB" | "GB" | "G" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use B, KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_byte_sizes() {
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert!(parse_bytes("1 lots").is_err());
    }

    #[test]
    fn parses_each_unit_and_rejects_nonsense() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("72h"), Ok(Duration::from_secs(72 * 3600)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
    }
}
