//! Value conversions used by expressions: money from minor units, timestamps to ISO 8601 UTC,
//! case, type coercion. Each returns `None` when the input cannot be converted, which the
//! expression treats as "absent".

use serde_json::{Number, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::units::TimeFormat;

/// The ISO 4217 minor-unit exponent of `currency` (any case). Currencies not listed use 2.
pub fn currency_exponent(currency: &str) -> u32 {
    // Upper-cased on the stack: codes are three letters, and anything else uses 2 anyway.
    let mut code = [0u8; 3];
    if currency.len() == code.len() {
        for (upper, byte) in code.iter_mut().zip(currency.bytes()) {
            *upper = byte.to_ascii_uppercase();
        }
    }
    match &code {
        b"BIF" | b"CLP" | b"DJF" | b"GNF" | b"ISK" | b"JPY" | b"KMF" | b"KRW" | b"PYG" | b"RWF"
        | b"UGX" | b"UYI" | b"VND" | b"VUV" | b"XAF" | b"XOF" | b"XPF" => 0,
        b"BHD" | b"IQD" | b"JOD" | b"KWD" | b"LYD" | b"OMR" | b"TND" => 3,
        b"CLF" | b"UYW" => 4,
        _ => 2,
    }
}

/// `amount` minor units of `currency` as a decimal string: USD 2000 → "20.00", JPY 3000 →
/// "3000", KWD 6000 → "6.000". Integer arithmetic only, so no float rounding creeps in.
pub fn money(amount: &Value, currency: &str) -> Option<String> {
    let minor = as_integer(amount)?;
    let exponent = currency_exponent(currency) as usize;
    let digits = minor.unsigned_abs().to_string();
    // Written piece by piece rather than with `format!` padding: every currency event of every
    // webhook comes through here.
    let mut out = String::with_capacity(digits.len() + exponent + 3);
    if minor < 0 {
        out.push('-');
    }
    if exponent == 0 {
        out.push_str(&digits);
        return Some(out);
    }
    let point = digits.len().saturating_sub(exponent);
    out.push_str(if point == 0 { "0" } else { &digits[..point] });
    out.push('.');
    out.extend(std::iter::repeat_n(
        '0',
        exponent.saturating_sub(digits.len()),
    ));
    out.push_str(&digits[point..]);
    Some(out)
}

/// The integer in a JSON number or numeric string (`2000`, `"2000"`, `2000.0`).
pub fn as_integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The number in a JSON number or numeric string.
pub fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Converts a timestamp to ISO 8601 in UTC (`2026-03-09T16:11:11Z`).
pub fn to_iso8601(value: &Value, format: TimeFormat) -> Option<String> {
    let instant = match format {
        TimeFormat::Unix => OffsetDateTime::from_unix_timestamp(as_integer(value)?).ok()?,
        TimeFormat::UnixMs => {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(as_integer(value)?) * 1_000_000)
                .ok()?
        }
        TimeFormat::Iso8601 => OffsetDateTime::parse(value.as_str()?, &Rfc3339).ok()?,
    };
    instant
        .to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .ok()
}

/// Renders any scalar as text: strings as they are, numbers and booleans as JSON writes them.
pub fn to_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Like [`to_text`], but moves a string out instead of copying it.
pub fn into_text(value: Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s),
        other => to_text(&other),
    }
}

pub fn to_number(value: &Value) -> Option<Value> {
    match value {
        Value::Number(_) => Some(value.clone()),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(i) = s.parse::<i64>() {
                return Some(Value::from(i));
            }
            Number::from_f64(s.parse().ok()?).map(Value::Number)
        }
        Value::Bool(b) => Some(Value::from(u8::from(*b))),
        _ => None,
    }
}

pub fn to_boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Some(true),
            "false" | "no" | "0" => Some(false),
            _ => None,
        },
        Value::Number(n) => Some(n.as_f64()? != 0.0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn money_uses_the_iso_4217_exponent() {
        assert_eq!(money(&json!(2000), "usd").as_deref(), Some("20.00"));
        assert_eq!(money(&json!(3000), "jpy").as_deref(), Some("3000"));
        assert_eq!(money(&json!(6000), "KWD").as_deref(), Some("6.000"));
        assert_eq!(money(&json!(5), "eur").as_deref(), Some("0.05"));
        assert_eq!(money(&json!(-1500), "usd").as_deref(), Some("-15.00"));
        assert_eq!(money(&json!("999"), "gbp").as_deref(), Some("9.99"));
        assert_eq!(money(&json!("abc"), "usd"), None);
        // Fewer digits than the exponent, zero, and a negative below one unit.
        assert_eq!(money(&json!(5), "kwd").as_deref(), Some("0.005"));
        assert_eq!(money(&json!(0), "KWD").as_deref(), Some("0.000"));
        assert_eq!(money(&json!(0), "jpy").as_deref(), Some("0"));
        assert_eq!(money(&json!(-5), "usd").as_deref(), Some("-0.05"));
        assert_eq!(money(&json!(123456), "CLF").as_deref(), Some("12.3456"));
        // Not a three-letter code: the default exponent.
        assert_eq!(money(&json!(2000), "jpyx").as_deref(), Some("20.00"));
    }

    #[test]
    fn timestamps_become_utc_iso8601() {
        assert_eq!(
            to_iso8601(&json!(1773072671), TimeFormat::Unix).as_deref(),
            Some("2026-03-09T16:11:11Z")
        );
        assert_eq!(
            to_iso8601(&json!(1773072671123_i64), TimeFormat::UnixMs).as_deref(),
            Some("2026-03-09T16:11:11.123Z")
        );
        assert_eq!(
            to_iso8601(&json!("2026-03-18T10:00:00-04:00"), TimeFormat::Iso8601).as_deref(),
            Some("2026-03-18T14:00:00Z")
        );
        assert_eq!(to_iso8601(&json!("soon"), TimeFormat::Iso8601), None);
    }

    #[test]
    fn coercions() {
        assert_eq!(to_text(&json!(1)).as_deref(), Some("1"));
        assert_eq!(to_number(&json!("42")), Some(json!(42)));
        assert_eq!(to_number(&json!("4.5")), Some(json!(4.5)));
        assert_eq!(to_boolean(&json!("true")), Some(true));
        assert_eq!(to_boolean(&json!({})), None);
    }
}
