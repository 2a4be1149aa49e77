//! Expressions: how a mapping file says where a value comes from and how to convert it.
//!
//! Evaluation is pure and allocation-light. An expression that finds nothing yields `None`
//! ("absent"); JSON `null` and the empty string count as absent too, so a field is omitted
//! from the Greenflash payload rather than sent as `null` or `""`.

use std::cell::RefCell;
use std::collections::HashMap;

use serde_json::Value;

use super::path::JsonPath;
use super::shape::Shape;
use super::transform;
use crate::inbound::Headers;
use crate::units::TimeFormat;

/// What an expression can see: the provider event, the request headers and the names the
/// pipeline knows about the event.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub doc: &'a Value,
    pub headers: &'a Headers,
    pub source: &'a str,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub rule: &'a str,
    /// The sums already worked out for `doc`.
    pub sums: &'a Sums,
}

/// The `sum`s worked out for one provider event, by slot. A catalog's rules repeat the same
/// sums — Stripe's subscription rules compare the same two totals, then report one of them —
/// and each walks every item of the event, so each is worked out once per event. Only valid for
/// the document it was filled from: a new event gets a new one.
#[derive(Debug, Default)]
pub struct Sums(RefCell<Vec<Option<Option<Value>>>>);

impl Sums {
    fn get_or(&self, slot: usize, work: impl FnOnce() -> Option<Value>) -> Option<Value> {
        if let Some(Some(known)) = self.0.borrow().get(slot) {
            return known.clone();
        }
        let value = work();
        let mut known = self.0.borrow_mut();
        if known.len() <= slot {
            known.resize(slot + 1, None);
        }
        known[slot] = Some(value.clone());
        value
    }
}

/// Names a template may interpolate besides paths: `{source}`, `{event_id}`, `{event_type}`,
/// `{rule}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    Source,
    EventId,
    EventType,
    Rule,
}

impl Var {
    pub const NAMES: &'static [&'static str] = &["source", "event_id", "event_type", "rule"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "source" => Some(Self::Source),
            "event_id" => Some(Self::EventId),
            "event_type" => Some(Self::EventType),
            "rule" => Some(Self::Rule),
            _ => None,
        }
    }

    fn get<'a>(self, scope: &Scope<'a>) -> &'a str {
        match self {
            Self::Source => scope.source,
            Self::EventId => scope.event_id,
            Self::EventType => scope.event_type,
            Self::Rule => scope.rule,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Part {
    Text(String),
    Path(JsonPath),
    Var(Var),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Upper,
    Lower,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coerce {
    String,
    Number,
    Boolean,
}

#[derive(Debug, Clone)]
pub enum Expr {
    Literal(Value),
    Path(JsonPath),
    Header(String),
    Template(Vec<Part>),
    /// The first of several expressions that is present.
    First(Vec<Expr>),
    /// Minor units to a decimal string with the currency's ISO 4217 exponent.
    Money {
        amount: Box<Expr>,
        currency: Box<Expr>,
    },
    /// Σ over the elements `over` selects of the product of `each` (paths relative to the
    /// element), e.g. Σ unit_amount × quantity.
    Sum {
        over: JsonPath,
        each: Vec<JsonPath>,
        /// Where the result is kept while one event is mapped (see `Sums`); sums written alike
        /// in one file share a slot.
        slot: usize,
    },
    /// An expression followed by conversions, applied in a fixed order: time, lookup, case,
    /// coercion, then the default when still absent.
    Convert {
        input: Box<Expr>,
        time: Option<TimeFormat>,
        lookup: Option<HashMap<String, Value>>,
        case: Option<Case>,
        to: Option<Coerce>,
        default: Option<Box<Expr>>,
    },
}

impl Expr {
    /// Adds to `shape` the parts of a document the expression reads.
    pub fn read(&self, shape: &mut Shape) {
        match self {
            Self::Literal(_) | Self::Header(_) => {}
            Self::Path(p) => shape.read(p),
            Self::Sum { over, each, .. } => {
                // The elements are read only where `each` points, or whole when they are the
                // factors themselves: a subscription's items are much more than their prices.
                let mut element = if each.is_empty() {
                    Shape::whole()
                } else {
                    Shape::default()
                };
                each.iter().for_each(|p| element.read(p));
                shape.read_each(over, element);
            }
            Self::Template(parts) => parts.iter().for_each(|part| {
                if let Part::Path(p) = part {
                    shape.read(p);
                }
            }),
            Self::First(options) => options.iter().for_each(|e| e.read(shape)),
            Self::Money { amount, currency } => {
                amount.read(shape);
                currency.read(shape);
            }
            Self::Convert { input, default, .. } => {
                input.read(shape);
                if let Some(default) = default {
                    default.read(shape);
                }
            }
        }
    }

    pub fn eval(&self, scope: &Scope<'_>) -> Option<Value> {
        match self {
            Self::Literal(v) => present(v).cloned(),
            Self::Path(p) => p.first(scope.doc).and_then(present).cloned(),
            Self::Header(name) => scope
                .headers
                .get_str(name)
                .filter(|v| !v.is_empty())
                .map(|v| Value::String(v.to_string())),
            Self::Template(parts) => {
                let mut out = String::new();
                for part in parts {
                    match part {
                        Part::Text(t) => out.push_str(t),
                        Part::Var(v) => out.push_str(v.get(scope)),
                        Part::Path(p) => out
                            .push_str(&transform::to_text(p.first(scope.doc).and_then(present)?)?),
                    }
                }
                present_string(out)
            }
            Self::First(options) => options.iter().find_map(|e| e.eval(scope)),
            Self::Money { amount, currency } => {
                let amount = amount.eval(scope)?;
                let currency = currency.eval(scope)?;
                transform::money(&amount, currency.as_str()?).map(Value::String)
            }
            Self::Sum { over, each, slot } => {
                scope.sums.get_or(*slot, || sum(over, each, scope.doc))
            }
            Self::Convert {
                input,
                time,
                lookup,
                case,
                to,
                default,
            } => {
                let converted = input.eval(scope).and_then(|mut v| {
                    if let Some(format) = time {
                        v = Value::String(transform::to_iso8601(&v, *format)?);
                    }
                    if let Some(table) = lookup {
                        v = table.get(&transform::to_text(&v)?)?.clone();
                    }
                    if let Some(case) = case {
                        let s = v.as_str()?;
                        v = Value::String(match case {
                            Case::Upper => s.to_uppercase(),
                            Case::Lower => s.to_lowercase(),
                        });
                    }
                    match to {
                        Some(Coerce::String) => v = Value::String(transform::to_text(&v)?),
                        Some(Coerce::Number) => v = transform::to_number(&v)?,
                        Some(Coerce::Boolean) => v = Value::Bool(transform::to_boolean(&v)?),
                        None => {}
                    }
                    Some(v)
                });
                converted.or_else(|| default.as_ref()?.eval(scope))
            }
        }
    }

    /// Whether the expression can yield a value without reading the event (for `check`'s
    /// "this rule can always produce event_type" proof).
    pub fn always_present(&self) -> bool {
        match self {
            Self::Literal(v) => present(v).is_some(),
            Self::Template(parts) => parts.iter().all(|p| !matches!(p, Part::Path(_))),
            Self::First(options) => options.iter().any(Expr::always_present),
            Self::Convert {
                default: Some(d), ..
            } => d.always_present(),
            _ => false,
        }
    }

    /// The literal value, when the expression is one (for load-time checks of enums and ranges).
    pub fn as_literal(&self) -> Option<&Value> {
        match self {
            Self::Literal(v) => Some(v),
            _ => None,
        }
    }
}

fn present(v: &Value) -> Option<&Value> {
    match v {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        _ => Some(v),
    }
}

fn present_string(s: String) -> Option<Value> {
    (!s.is_empty()).then_some(Value::String(s))
}

fn sum(over: &JsonPath, each: &[JsonPath], doc: &Value) -> Option<Value> {
    let elements = over.all(doc);
    if elements.is_empty() {
        return None;
    }
    let mut int_total: i64 = 0;
    let mut float_total = 0.0;
    let mut all_integers = true;
    for element in elements {
        if all_integers {
            match integer_product(element, each)? {
                Some(product) => {
                    int_total = int_total.checked_add(product)?;
                    continue;
                }
                None => all_integers = false,
            }
        }
        float_total += number_product(element, each)?;
    }
    if all_integers {
        Some(Value::from(int_total))
    } else {
        serde_json::Number::from_f64(float_total + int_total as f64).map(Value::Number)
    }
}

/// The values an element of a `sum` multiplies: what its `each` paths select in it, or the
/// element itself when there are none; `None` for a path that selects nothing.
fn factors<'v>(
    element: &'v Value,
    each: &'v [JsonPath],
) -> impl Iterator<Item = Option<&'v Value>> {
    let itself = each.is_empty().then_some(Some(element));
    itself
        .into_iter()
        .chain(each.iter().map(move |path| path.first(element)))
}

/// The product of an element's factors as an integer: `None` when a factor is missing (the
/// whole sum is then absent), `Some(None)` when one is not an integer or the product overflows.
/// Walked without collecting the factors into vectors, which took 6 % of the instructions spent
/// mapping a Stripe `customer.subscription.updated`.
fn integer_product(element: &Value, each: &[JsonPath]) -> Option<Option<i64>> {
    let mut product = Some(1i64);
    for factor in factors(element, each) {
        let factor = factor?;
        product =
            product.and_then(|p| transform::as_integer(factor).and_then(|f| p.checked_mul(f)));
    }
    Some(product)
}

/// The product of an element's factors as a float; `None` when one is missing or not a number.
fn number_product(element: &Value, each: &[JsonPath]) -> Option<f64> {
    factors(element, each)
        .map(|factor| factor.and_then(transform::as_number))
        .product()
}
