//! Conditions in a rule's `when` list. All conditions of a rule, and all tests of a condition,
//! must hold for the rule to match.

use regex::Regex;
use serde_json::Value;

use super::expr::{Expr, Scope};
use super::shape::Shape;
use super::transform;

#[derive(Debug, Clone)]
pub enum Test {
    Equals(Expr),
    NotEquals(Expr),
    In(Vec<Expr>),
    NotIn(Vec<Expr>),
    /// `exists = true` / `missing = true`: whether the subject is present at all.
    Exists(bool),
    Gt(Expr),
    Gte(Expr),
    Lt(Expr),
    Lte(Expr),
    Matches(Regex),
}

#[derive(Debug, Clone)]
pub struct Condition {
    pub subject: Expr,
    /// How the subject was written, for explanations.
    pub subject_text: String,
    pub tests: Vec<Test>,
}

impl Condition {
    /// Adds to `shape` the parts of a document the condition reads.
    pub fn read(&self, shape: &mut Shape) {
        self.subject.read(shape);
        for test in &self.tests {
            match test {
                Test::Equals(e)
                | Test::NotEquals(e)
                | Test::Gt(e)
                | Test::Gte(e)
                | Test::Lt(e)
                | Test::Lte(e) => e.read(shape),
                Test::In(options) | Test::NotIn(options) => {
                    options.iter().for_each(|e| e.read(shape))
                }
                Test::Exists(_) | Test::Matches(_) => {}
            }
        }
    }

    /// Whether every test holds. When one fails and `why` is given, the reason is written
    /// there. Most rules of a catalog fail a condition on most events, so the reason is only
    /// formatted when asked for (`map --explain`): formatting it was 14 % of the instructions
    /// spent mapping a Stripe `customer.subscription.updated`.
    pub fn holds(&self, scope: &Scope<'_>, why: Option<&mut String>) -> bool {
        let actual = self.subject.eval(scope);
        let mut reason = String::new();
        for test in &self.tests {
            if !test.holds(actual.as_ref(), scope, why.is_some().then_some(&mut reason)) {
                if let Some(why) = why {
                    *why = format!("{}: {reason}", self.subject_text);
                }
                return false;
            }
        }
        true
    }
}

impl Test {
    fn holds(&self, actual: Option<&Value>, scope: &Scope<'_>, why: Option<&mut String>) -> bool {
        let shown = || display(actual);
        let verdict = |ok: bool, reason: &dyn Fn() -> String| {
            if let (false, Some(why)) = (ok, why) {
                *why = reason();
            }
            ok
        };
        match self {
            Self::Exists(true) => verdict(actual.is_some(), &|| "is absent".into()),
            Self::Exists(false) => {
                verdict(actual.is_none(), &|| format!("is present ({})", shown()))
            }
            Self::Equals(e) => {
                let expected = e.eval(scope);
                verdict(same(actual, expected.as_ref()), &|| {
                    format!("is {}, not {}", shown(), display(expected.as_ref()))
                })
            }
            Self::NotEquals(e) => verdict(!same(actual, e.eval(scope).as_ref()), &|| {
                format!("is {}", shown())
            }),
            Self::In(options) => verdict(
                options.iter().any(|e| same(actual, e.eval(scope).as_ref())),
                &|| format!("is {}, not one of the listed values", shown()),
            ),
            Self::NotIn(options) => verdict(
                !options.iter().any(|e| same(actual, e.eval(scope).as_ref())),
                &|| format!("is {}, one of the excluded values", shown()),
            ),
            Self::Matches(re) => verdict(
                actual
                    .and_then(transform::to_text)
                    .is_some_and(|t| re.is_match(&t)),
                &|| format!("is {}, which does not match /{}/", shown(), re.as_str()),
            ),
            Self::Gt(e) | Self::Gte(e) | Self::Lt(e) | Self::Lte(e) => {
                let other = e.eval(scope);
                let (Some(a), Some(b)) = (
                    actual.and_then(transform::as_number),
                    other.as_ref().and_then(transform::as_number),
                ) else {
                    return verdict(false, &|| {
                        format!(
                            "cannot compare {} with {} as numbers",
                            shown(),
                            display(other.as_ref())
                        )
                    });
                };
                let (ok, op) = match self {
                    Self::Gt(_) => (a > b, ">"),
                    Self::Gte(_) => (a >= b, ">="),
                    Self::Lt(_) => (a < b, "<"),
                    _ => (a <= b, "<="),
                };
                verdict(ok, &|| format!("is {a}, not {op} {b}"))
            }
        }
    }
}

fn display(v: Option<&Value>) -> String {
    v.map_or("absent".to_string(), Value::to_string)
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x.as_f64() == y.as_f64(),
        (Some(x), Some(y)) => x == y,
        (None, None) => true,
        _ => false,
    }
}
