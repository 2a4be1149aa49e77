//! JSONPaths compiled once, when mapping files load.
//!
//! Plain paths (`$.a.b[0].c`: names and indexes only) are walked directly, which is over ten
//! times faster than a jsonpath-rust query, and so are paths that add wildcards (`$.a[*].b`,
//! which `sum` uses); anything else (filters, slices, descendants, unions) runs through
//! jsonpath-rust's parsed query.

use jsonpath_rust::parser::model::{JpQuery, Segment, Selector};
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct JsonPath {
    text: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Plain(Vec<Step>),
    /// Names, indexes and at least one wildcard.
    Wild(Vec<WildStep>),
    Query(Box<JpQuery>),
}

#[derive(Debug, Clone)]
enum WildStep {
    One(Step),
    /// `[*]` / `.*`: every element of an array, every member value of an object (in the
    /// order jsonpath-rust gives them).
    Each,
}

impl WildStep {
    /// The step itself, unless it is a wildcard.
    fn plain(&self) -> Option<Step> {
        match self {
            Self::One(step) => Some(step.clone()),
            Self::Each => None,
        }
    }
}

/// One step of a plain path.
#[derive(Debug, Clone)]
pub(super) enum Step {
    Key(String),
    Index(i64),
}

/// A path that does not parse: the message, and the 1-based column inside the path text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    pub message: String,
    pub column: usize,
}

impl JsonPath {
    pub fn parse(text: &str) -> Result<Self, PathError> {
        let query = parse_json_path(text).map_err(|e| describe(text, e))?;
        let kind = match walk_steps(&query) {
            // A plain path is a walkable one without wildcards.
            Some(steps) => match steps.iter().map(WildStep::plain).collect() {
                Some(plain) => Kind::Plain(plain),
                None => Kind::Wild(steps),
            },
            None => Kind::Query(Box::new(query)),
        };
        Ok(Self {
            text: text.to_string(),
            kind,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The leading names and indexes of the path: all of it when it is plain.
    pub(super) fn plain_prefix(&self) -> Vec<Step> {
        match &self.kind {
            Kind::Plain(steps) => steps.clone(),
            Kind::Wild(steps) => steps
                .iter()
                .map_while(|step| match step {
                    WildStep::One(step) => Some(step.clone()),
                    WildStep::Each => None,
                })
                .collect(),
            Kind::Query(q) => q.segments.iter().map_while(plain_step).collect(),
        }
    }

    /// The steps of a path of names, indexes and wildcards (`None` for a wildcard); `None` for
    /// any other path.
    pub(super) fn wild_steps(&self) -> Option<Vec<Option<Step>>> {
        match &self.kind {
            Kind::Plain(steps) => Some(steps.iter().cloned().map(Some).collect()),
            Kind::Wild(steps) => Some(steps.iter().map(WildStep::plain).collect()),
            Kind::Query(_) => None,
        }
    }

    /// The first value the path selects, if any.
    pub fn first<'v>(&self, doc: &'v Value) -> Option<&'v Value> {
        match &self.kind {
            Kind::Plain(steps) => walk(steps, doc),
            Kind::Wild(steps) => {
                let mut found = None;
                walk_wild(steps, doc, &mut |v| {
                    found = Some(v);
                    false
                });
                found
            }
            Kind::Query(q) => js_path_process(q, doc)
                .ok()?
                .into_iter()
                .next()
                .map(|r| r.val),
        }
    }

    /// Every value the path selects, in document order.
    pub fn all<'v>(&self, doc: &'v Value) -> Vec<&'v Value> {
        match &self.kind {
            Kind::Plain(steps) => walk(steps, doc).into_iter().collect(),
            Kind::Wild(steps) => {
                let mut found = Vec::new();
                walk_wild(steps, doc, &mut |v| {
                    found.push(v);
                    true
                });
                found
            }
            Kind::Query(q) => js_path_process(q, doc)
                .map(|hits| hits.into_iter().map(|r| r.val).collect())
                .unwrap_or_default(),
        }
    }
}

/// `None` unless the path is names, indexes and wildcards only.
fn walk_steps(query: &JpQuery) -> Option<Vec<WildStep>> {
    query
        .segments
        .iter()
        .map(|segment| match segment {
            Segment::Selector(Selector::Wildcard) => Some(WildStep::Each),
            other => plain_step(other).map(WildStep::One),
        })
        .collect()
}

fn plain_step(segment: &Segment) -> Option<Step> {
    match segment {
        Segment::Selector(Selector::Name(name)) => Some(Step::Key(unquote(name))),
        Segment::Selector(Selector::Index(i)) => Some(Step::Index(*i)),
        _ => None,
    }
}

/// jsonpath-rust keeps the quotes of bracketed names (`['a b']`) in `Selector::Name`.
fn unquote(name: &str) -> String {
    let quoted = name.len() >= 2
        && ((name.starts_with('\'') && name.ends_with('\''))
            || (name.starts_with('"') && name.ends_with('"')));
    if quoted {
        name[1..name.len() - 1].to_string()
    } else {
        name.to_string()
    }
}

fn walk<'v>(steps: &[Step], mut doc: &'v Value) -> Option<&'v Value> {
    for step in steps {
        doc = take(step, doc)?;
    }
    Some(doc)
}

fn take<'v>(step: &Step, doc: &'v Value) -> Option<&'v Value> {
    match (step, doc) {
        (Step::Key(k), Value::Object(map)) => map.get(k),
        (Step::Index(i), Value::Array(items)) => {
            let len = items.len() as i64;
            let index = if *i < 0 { len + i } else { *i };
            items.get(usize::try_from(index).ok()?)
        }
        _ => None,
    }
}

/// Calls `found` with every value `steps` select, in document order, while it returns true;
/// returns false once it has asked to stop.
fn walk_wild<'v>(
    steps: &[WildStep],
    doc: &'v Value,
    found: &mut dyn FnMut(&'v Value) -> bool,
) -> bool {
    let Some((step, rest)) = steps.split_first() else {
        return found(doc);
    };
    match step {
        WildStep::One(step) => take(step, doc).is_none_or(|next| walk_wild(rest, next, found)),
        WildStep::Each => match doc {
            Value::Array(items) => items.iter().all(|item| walk_wild(rest, item, found)),
            Value::Object(map) => map.values().all(|value| walk_wild(rest, value, found)),
            _ => true,
        },
    }
}

fn describe(text: &str, error: jsonpath_rust::parser::errors::JsonPathError) -> PathError {
    use jsonpath_rust::parser::errors::JsonPathError as E;
    match error {
        E::PestError(pest_error) => {
            let column = match pest_error.line_col {
                pest::error::LineColLocation::Pos((_, col)) => col,
                pest::error::LineColLocation::Span((_, col), _) => col,
            };
            let expected = pest_error.variant.message();
            PathError {
                message: format!("invalid JSONPath {text:?}: {expected}"),
                column,
            }
        }
        other => PathError {
            message: format!("invalid JSONPath {text:?}: {other}"),
            column: 1,
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn plain_and_query_paths_agree() {
        let doc = json!({"data": {"object": {"items": [{"q": 1}, {"q": 2}], "a b": "x"}}});
        let plain = JsonPath::parse("$.data.object.items[1].q").unwrap();
        assert!(matches!(plain.kind, Kind::Plain(_)));
        assert_eq!(plain.first(&doc), Some(&json!(2)));
        let last = JsonPath::parse("$.data.object.items[-1].q").unwrap();
        assert_eq!(last.first(&doc), Some(&json!(2)));
        let quoted = JsonPath::parse("$.data.object['a b']").unwrap();
        assert_eq!(quoted.first(&doc), Some(&json!("x")));
        let wild = JsonPath::parse("$.data.object.items[*].q").unwrap();
        assert!(matches!(wild.kind, Kind::Wild(_)));
        assert_eq!(wild.all(&doc), vec![&json!(1), &json!(2)]);
        let filter = JsonPath::parse("$.data.object.items[?@.q > 1].q").unwrap();
        assert_eq!(filter.first(&doc), Some(&json!(2)));
        assert_eq!(plain.first(&json!({"data": []})), None);
    }

    proptest::proptest! {
        /// The direct walk is a shortcut, so it must select exactly what jsonpath-rust
        /// selects, in the same order, for every path it takes over.
        #[test]
        fn walked_paths_select_what_jsonpath_rust_selects(
            doc in small_document(),
            steps in proptest::collection::vec(
                proptest::sample::select(vec![".a", ".b", "['c d']", "[0]", "[1]", "[-1]", "[*]", ".*"]),
                1..5,
            ),
        ) {
            let text = format!("${}", steps.concat());
            let ours = JsonPath::parse(&text).unwrap();
            proptest::prop_assert!(!matches!(ours.kind, Kind::Query(_)), "{text} is walked");
            let query = parse_json_path(&text).unwrap();
            let theirs: Vec<&Value> = js_path_process(&query, &doc)
                .map(|hits| hits.into_iter().map(|r| r.val).collect())
                .unwrap_or_default();
            proptest::prop_assert_eq!(ours.all(&doc), theirs.clone(), "{} over {}", text, doc);
            proptest::prop_assert_eq!(ours.first(&doc), theirs.first().copied());
        }
    }

    fn small_document() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![Just(Value::Null), (0i64..9).prop_map(Value::from)];
        leaf.prop_recursive(4, 48, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    proptest::sample::select(vec!["a", "b", "c d", "e"]),
                    inner,
                    0..4,
                )
                .prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
            ]
        })
    }

    #[test]
    fn reports_where_a_path_breaks() {
        let err = JsonPath::parse("$.data[?@.amount >]").unwrap_err();
        assert!(
            err.message.starts_with("invalid JSONPath"),
            "{}",
            err.message
        );
        assert!(err.column > 1);
        assert!(JsonPath::parse("data.object").is_err());
    }
}
