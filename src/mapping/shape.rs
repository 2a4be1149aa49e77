//! Which parts of a webhook body a source's rules can read, and a parser that builds only those.
//!
//! Building a whole `serde_json::Value` for a 3–4 KB provider event (and dropping it again) was
//! a quarter of the bridge's CPU per webhook, while the rules read a dozen values. So each
//! source gets, when its file loads, the union of the JSONPaths its expressions use, and the
//! accept path parses the body into a `Value` that holds exactly those parts. The rest is
//! still parsed — syntax errors are found wherever they are — but not allocated.
//!
//! Why the result maps exactly as the whole document would: every value a path *selects* is
//! kept whole, and every value a path only *steps through* keeps the members and elements the
//! next steps can reach. Anything else a path could step into (a scalar, an object where an
//! index comes next) yields nothing either way, so it becomes `null`. A path that is not plain
//! (wildcards, filters, descendants) keeps everything from its last plain step down, except the
//! `over` path of a `sum` and a `split` path: through their wildcards every element and member
//! is kept, each with only what the sum's `each` paths, or the split's rules, read in it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::path::{JsonPath, Step};

/// The parts of a document to keep.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shape {
    /// Keep this value whole.
    whole: bool,
    /// Members of an object to keep, each with its own shape.
    members: BTreeMap<String, Shape>,
    /// The lengths of the keys in `members`, one bit each (`length_bit`). Most keys of a
    /// provider's object are not members; this turns them away without comparing strings.
    member_lengths: u64,
    /// Elements of an array to keep (all of them, so that negative indexes still count from
    /// the end), each with this shape.
    items: Option<Box<Shape>>,
    /// What a wildcard reads: every element of an array and every member of an object, each
    /// with this shape. `settle` merges it into `members` and `items`, which parsing reads.
    every: Option<Box<Shape>>,
}

impl Shape {
    /// Everything: what a source gets when it reads the body in ways a shape cannot follow.
    pub fn whole() -> Self {
        Self {
            whole: true,
            ..Self::default()
        }
    }

    /// Adds what `path` reads: the value it selects, whole, and the way there.
    pub fn read(&mut self, path: &JsonPath) {
        self.at(&path.plain_prefix()).whole = true;
    }

    /// Adds what a `sum` reads, or a `split`'s rules: `element` at every value `path` selects,
    /// through its wildcards (for a split, each value is a document the rules read). A path
    /// that is not names, indexes and wildcards keeps its selection whole.
    pub fn read_each(&mut self, path: &JsonPath, element: Shape) {
        let Some(steps) = path.wild_steps() else {
            self.read(path);
            return;
        };
        let mut node = self;
        for step in &steps {
            node = match step {
                Some(step) => node.at(std::slice::from_ref(step)),
                None => node.every.get_or_insert_with(Box::default),
            };
        }
        node.merge(element);
    }

    /// Makes what wildcards read part of each member and element, where parsing looks for it.
    /// Called once the shape is complete.
    pub fn settle(&mut self) {
        if let Some(every) = &mut self.every {
            every.settle();
            let every = every.as_ref().clone();
            for member in self.members.values_mut() {
                member.merge(every.clone());
            }
            self.items.get_or_insert_with(Box::default).merge(every);
        }
        self.members.values_mut().for_each(Shape::settle);
        if let Some(items) = &mut self.items {
            items.settle();
        }
    }

    fn at(&mut self, steps: &[Step]) -> &mut Shape {
        let mut node = self;
        for step in steps {
            node = match step {
                Step::Key(key) => {
                    node.member_lengths |= length_bit(key);
                    node.members.entry(key.clone()).or_default()
                }
                Step::Index(_) => node.items.get_or_insert_with(Box::default),
            };
        }
        node
    }

    fn merge(&mut self, other: Shape) {
        self.whole |= other.whole;
        self.member_lengths |= other.member_lengths;
        for (key, shape) in other.members {
            self.members.entry(key).or_default().merge(shape);
        }
        if let Some(items) = other.items {
            self.items.get_or_insert_with(Box::default).merge(*items);
        }
        if let Some(every) = other.every {
            self.every.get_or_insert_with(Box::default).merge(*every);
        }
    }

    /// Parses a JSON body, keeping only this shape. Errors are serde_json's, as for a whole
    /// parse; the body must also be valid UTF-8 throughout, skipped strings included.
    pub fn parse(&self, body: &[u8]) -> Result<Value, serde_json::Error> {
        let text = std::str::from_utf8(body).map_err(|e| {
            <serde_json::Error as de::Error>::custom(format!(
                "invalid UTF-8 at byte {}",
                e.valid_up_to()
            ))
        })?;
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let value = Pruned(self).deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(value)
    }
}

/// A key's bit in `Shape::member_lengths`: bit n for n bytes, bit 63 for 63 or more.
fn length_bit(key: &str) -> u64 {
    1 << key.len().min(63)
}

/// A value parsed to a shape.
struct Pruned<'s>(&'s Shape);

impl<'de> DeserializeSeed<'de> for Pruned<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        if self.0.whole {
            Value::deserialize(deserializer)
        } else {
            deserializer.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Pruned<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    // A path only steps through this value, and no step goes into a scalar.
    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(Key(key)) = access.next_key()? {
            let member = (self.0.member_lengths & length_bit(&key) != 0)
                .then(|| self.0.members.get(key.as_ref()))
                .flatten()
                .or(self.0.every.as_deref());
            match member {
                Some(shape) => {
                    let value = access.next_value_seed(Pruned(shape))?;
                    map.insert(key.into_owned(), value);
                }
                None => {
                    access.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(map))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let Some(items) = &self.0.items else {
            while access.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Value::Null);
        };
        let mut out = Vec::new();
        while let Some(value) = access.next_element_seed(Pruned(items))? {
            out.push(value);
        }
        Ok(Value::Array(out))
    }
}

/// An object key, borrowed from the body unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_string())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn reading(paths: &[&str]) -> Shape {
        let mut shape = Shape::default();
        for p in paths {
            shape.read(&JsonPath::parse(p).unwrap());
        }
        shape
    }

    #[test]
    fn a_sum_keeps_only_what_each_reads_of_every_element() {
        let body = br#"{"items":{"data":[
                {"id":"si_1","price":{"id":"p1","unit_amount":1000,"product":"prod"},"quantity":3},
                {"id":"si_2","price":{"id":"p2","unit_amount":2000},"quantity":2}]},
            "plans":{"a":{"amount":5,"name":"A"},"b":{"amount":7,"name":"B"}},
            "other":1}"#;
        let mut shape = Shape::default();
        let mut element = Shape::default();
        element.read(&JsonPath::parse("$.price.unit_amount").unwrap());
        element.read(&JsonPath::parse("$.quantity").unwrap());
        shape.read_each(&JsonPath::parse("$.items.data[*]").unwrap(), element);
        // Through an object's members too, and merged with what a plain path reads there.
        let mut amount = Shape::default();
        amount.read(&JsonPath::parse("$.amount").unwrap());
        shape.read_each(&JsonPath::parse("$.plans.*").unwrap(), amount);
        shape.read(&JsonPath::parse("$.plans.b.name").unwrap());
        shape.settle();
        assert_eq!(
            shape.parse(body).unwrap(),
            json!({
                "items": {"data": [
                    {"price": {"unit_amount": 1000}, "quantity": 3},
                    {"price": {"unit_amount": 2000}, "quantity": 2},
                ]},
                "plans": {"a": {"amount": 5}, "b": {"amount": 7, "name": "B"}},
            })
        );
    }

    #[test]
    fn keys_of_a_members_length_and_long_keys_are_told_apart() {
        // Keys are screened by length before they are compared: keys as long as a member's,
        // and keys of 63 bytes or more (which share one length bit), must still be compared.
        let long = "k".repeat(70);
        let other_long = "j".repeat(64);
        let body = format!(r#"{{"ab":1,"cd":2,"{long}":3,"{other_long}":4,"abc":5}}"#);
        let shape = reading(&["$.ab", &format!("$['{long}']")]);
        assert_eq!(
            shape.parse(body.as_bytes()).unwrap(),
            json!({"ab": 1, long: 3})
        );
    }

    #[test]
    fn keeps_what_paths_read_and_nothing_else() {
        let body = br#"{"id":"evt_1","type":"invoice.paid","data":{"object":{"amount":100,
            "lines":{"data":[{"amount":40,"x":1},{"amount":60,"x":2}]},"metadata":{"a":"b"},
            "customer":{"id":"cus_1","name":"n"}}},"livemode":false}"#;
        let shape = reading(&[
            "$.id",
            "$.data.object.metadata",
            "$.data.object.lines.data[-1].amount",
            "$.data.object.customer.id",
        ]);
        assert_eq!(
            shape.parse(body).unwrap(),
            json!({"id": "evt_1", "data": {"object": {
                "metadata": {"a": "b"},
                "lines": {"data": [{"amount": 40}, {"amount": 60}]},
                "customer": {"id": "cus_1"}
            }}})
        );
    }

    #[test]
    fn a_query_keeps_everything_below_its_last_plain_step() {
        let body = br#"{"a":{"items":[{"q":1,"r":2}],"other":3},"b":4}"#;
        let shape = reading(&["$.a.items[?@.q > 0].r"]);
        assert_eq!(
            shape.parse(body).unwrap(),
            json!({"a": {"items": [{"q": 1, "r": 2}]}})
        );
        assert_eq!(
            reading(&["$..q"]).parse(body).unwrap(),
            serde_json::from_slice::<Value>(body).unwrap()
        );
    }

    #[test]
    fn steps_into_the_wrong_kind_of_value_find_nothing_either_way() {
        let body = br#"{"a":"text","b":[1,2],"c":{"0":"zero"}}"#;
        let paths = ["$.a.b", "$.b.x", "$.c[0]"];
        let pruned = reading(&paths).parse(body).unwrap();
        let whole: Value = serde_json::from_slice(body).unwrap();
        for p in paths {
            let path = JsonPath::parse(p).unwrap();
            assert_eq!(path.first(&pruned), path.first(&whole), "{p}");
        }
    }

    #[test]
    fn split_paths_carry_the_rules_shape() {
        let mut shape = Shape::default();
        shape.read_each(&JsonPath::parse("$.events").unwrap(), reading(&["$.id"]));
        assert_eq!(
            shape.parse(br#"{"events":{"id":1,"x":2},"y":3}"#).unwrap(),
            json!({"events": {"id": 1}})
        );
        let mut wild = Shape::default();
        wild.read_each(&JsonPath::parse("$[*]").unwrap(), reading(&["$.id"]));
        wild.settle();
        assert_eq!(
            wild.parse(br#"[{"id":1,"x":2},{"y":3},{"id":{"z":4}}]"#)
                .unwrap(),
            json!([{"id": 1}, {}, {"id": {"z": 4}}])
        );
        let mut filtered = Shape::default();
        filtered.read_each(&JsonPath::parse("$[?@.id]").unwrap(), reading(&["$.id"]));
        assert_eq!(
            filtered,
            Shape::whole(),
            "a filter keeps what it selects whole"
        );
    }

    #[test]
    fn bad_bodies_fail_as_a_whole_parse_does() {
        let shape = reading(&["$.id"]);
        for body in [
            &b"{\"id\":1,\"skipped\":[1,}"[..],
            b"{\"id\":1} trailing",
            b"{\"id\":1,\"skipped\":\"\xff\"}",
            b"",
        ] {
            assert!(
                shape.parse(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert!(serde_json::from_slice::<Value>(body).is_err());
        }
        let escaped = shape.parse(br#"{"i\u0064":"k","id2":1}"#).unwrap();
        assert_eq!(escaped, json!({"id": "k"}));
    }
}
