//! The accept path parses a body only as far as the source's rules read it. These tests hold it
//! to mapping exactly as the whole document does: every shipped catalog over every fixture, and
//! random documents under random rules.

mod support;

use std::path::PathBuf;

use greenflash_bridge::inbound::Headers;
use greenflash_bridge::mapping::{Loaded, Options, Source, load_dir, load_texts};
use proptest::prelude::*;
use serde_json::{Value, json};
use support::{PRODUCT_ID, repo_path};

const OPTIONS: Options<'static> = Options {
    default_product_id: Some(PRODUCT_ID),
    explain: true,
};

/// Maps `body` from a whole parse and from the source's partial one; both must agree, traces
/// (the dry run's explanations) included.
fn assert_same_mapping(source: &Source, body: &[u8], what: &str) {
    let headers = Headers::new();
    let whole: Value = serde_json::from_slice(body).expect("fixture is JSON");
    let partial = source
        .parse_body(&headers, body)
        .unwrap_or_else(|e| panic!("{what}: partial parse failed: {e}"));
    assert_eq!(
        source.apply(&partial, &headers, &OPTIONS),
        source.apply(&whole, &headers, &OPTIONS),
        "{what}"
    );
}

fn json_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("fixture directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            found.extend(json_files(&path));
        } else if path.extension().is_some_and(|e| e == "json")
            && !path.to_string_lossy().ends_with(".expected.json")
        {
            found.push(path);
        }
    }
    found
}

#[test]
fn every_catalog_maps_every_fixture_as_from_the_whole_document() {
    let loaded = load_dir(&repo_path("mappings")).expect("shipped mappings are valid");
    let fixtures = json_files(&repo_path("tests/fixtures"));
    assert!(fixtures.len() >= 15, "{} fixtures", fixtures.len());
    let mut emitted = 0;
    for source in loaded.catalog.sources.values() {
        for path in &fixtures {
            let body = std::fs::read(path).expect("fixture");
            // Other providers' payloads too: rules that find nothing must agree as well.
            assert_same_mapping(
                source,
                &body,
                &format!("{} / {}", source.name, path.display()),
            );
            let headers = Headers::new();
            if let Ok(events) = source.apply(
                &source.parse_body(&headers, &body).expect("parses"),
                &headers,
                &OPTIONS,
            ) {
                emitted += events.iter().map(|e| e.emitted.len()).sum::<usize>();
            }
        }
    }
    // The comparison is only worth something if the fixtures exercise the rules.
    assert!(emitted >= 15, "only {emitted} events emitted");
}

#[test]
fn a_malformed_body_is_refused_by_the_partial_parse_too() {
    let loaded = load_dir(&repo_path("mappings")).expect("shipped mappings are valid");
    let stripe = loaded.catalog.get("stripe").expect("stripe");
    let headers = Headers::new();
    for body in [
        &br#"{"id":"evt_1","type":"invoice.paid","unread":[1,2,}"#[..],
        br#"{"id":"evt_1","type":"invoice.paid"} {}"#,
        b"{\"id\":\"evt_1\",\"unread\":\"\xc3\x28\"}",
        br#"{"id":"evt_1","unread":"\uZZZZ"}"#,
    ] {
        assert!(
            stripe.parse_body(&headers, body).is_err(),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn a_form_body_becomes_an_object_of_its_fields() {
    let loaded = load_dir(&repo_path("mappings")).expect("shipped mappings are valid");
    let source = loaded.catalog.get("stripe").expect("stripe");
    let body = b"From=%2B15551234567&Body=hello+there&Media=a&Media=b&Media=c";
    for content_type in [
        "application/x-www-form-urlencoded",
        "Application/X-WWW-Form-Urlencoded; charset=utf-8",
    ] {
        let mut headers = Headers::new();
        headers.insert("content-type", content_type.as_bytes());
        assert_eq!(
            source
                .parse_body(&headers, body)
                .expect("a form body parses"),
            json!({"From": "+15551234567", "Body": "hello there", "Media": ["a", "b", "c"]}),
            "{content_type}"
        );
    }
    let mut json_headers = Headers::new();
    json_headers.insert("content-type", b"application/json");
    assert!(source.parse_body(&json_headers, body).is_err(), "not JSON");
}

// ---- random documents under random rules ----

fn key() -> impl Strategy<Value = String> {
    prop_oneof![3 => Just("a"), 2 => Just("c"), 1 => Just("d e")].prop_map(str::to_string)
}

fn document() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-50i64..50).prop_map(Value::from),
        (-5.0f64..5.0).prop_map(|f| json!(f)),
        prop_oneof![
            Just(""),
            Just("x"),
            Just("evt_1"),
            Just("2026-01-02T03:04:05Z")
        ]
        .prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(4, 40, 4, |inner| {
        prop_oneof![
            2 => prop::collection::vec(inner.clone(), 1..4).prop_map(Value::Array),
            1 => prop::collection::btree_map(key(), inner, 1..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    // Every document identifies itself by `b`, so that the rules run rather than stop early.
    prop::collection::btree_map(key(), value, 2..4).prop_map(|members| {
        let mut doc: serde_json::Map<String, Value> = members.into_iter().collect();
        doc.insert("b".into(), json!("evt_1"));
        Value::Object(doc)
    })
}

/// A JSONPath over the generated keys: mostly plain, sometimes with a wildcard, a filter or
/// a descent, which a partial parse must keep whole below.
fn path() -> impl Strategy<Value = String> {
    let step = prop_oneof![
        4 => key().prop_map(|k| if k.contains(' ') { format!("['{k}']") } else { format!(".{k}") }),
        3 => (-1i64..2).prop_map(|i| format!("[{i}]")),
        1 => Just("[*]".to_string()),
        1 => Just("[?@.a]".to_string()),
        1 => key().prop_map(|k| format!("..{}", k.replace(' ', ""))),
    ];
    prop::collection::vec(step, 1..4).prop_map(|steps| format!("${}", steps.concat()))
}

fn expression() -> impl Strategy<Value = String> {
    prop_oneof![
        path().prop_map(|p| format!("{p:?}")),
        (path(), path()).prop_map(|(a, b)| format!("{{ first = [{a:?}, {b:?}] }}")),
        path().prop_map(|p| format!("{{ template = \"t-{{{p}}}\" }}")),
        (path(), path()).prop_map(|(a, b)| format!("{{ sum = {a:?}, each = [{b:?}] }}")),
        (path(), path(), path())
            .prop_map(|(a, b, c)| format!("{{ sum = {a:?}, each = [{b:?}, {c:?}] }}")),
        path().prop_map(|a| format!("{{ sum = {a:?} }}")),
        path().prop_map(|p| format!("{{ path = {p:?}, time = \"iso8601\" }}")),
    ]
}

fn condition() -> impl Strategy<Value = String> {
    (path(), path(), 0..4).prop_map(|(subject, other, kind)| match kind {
        0 => format!("{{ path = {subject:?}, exists = true }}"),
        1 => format!("{{ path = {subject:?}, equals = {{ path = {other:?} }} }}"),
        2 => format!("{{ path = {subject:?}, gt = 0 }}"),
        _ => format!("{{ path = {subject:?}, missing = true }}"),
    })
}

fn mapping_file() -> impl Strategy<Value = String> {
    prop::collection::vec((condition(), expression(), expression()), 1..4).prop_map(|rules| {
        let mut text = String::from("[source]\nname = \"random\"\n");
        text.push_str("verify = { scheme = \"none\" }\n");
        text.push_str("event_id = \"$.b\"\nevent_type = \"$.b\"\n");
        for (i, (when, value, property)) in rules.into_iter().enumerate() {
            text.push_str(&format!(
                "\n[[rules]]\nname = \"r{i}\"\non = \"*\"\nwhen = [{when}]\n\
                     event_type = \"e{i}\"\nvalue = {{ first = [{value}, \"$.b\"] }}\nvalue_type = \"text\"\n\
                     properties.p = {property}\n"
            ));
        }
        text
    })
}

/// A path through wildcards, the kind a `sum` adds up over.
fn wild_path() -> impl Strategy<Value = String> {
    let step = prop_oneof![
        3 => Just(".a"),
        2 => Just(".c"),
        3 => Just("[*]"),
        1 => Just("[0]"),
    ];
    prop::collection::vec(step, 1..4).prop_map(|steps| format!("${}", steps.concat()))
}

/// Rules that only add up: sums through wildcards, with zero to two `each` paths, beside plain
/// paths that read some of the same members directly.
fn summing_file() -> impl Strategy<Value = String> {
    let sum = (wild_path(), prop::collection::vec(wild_path(), 0..3)).prop_map(|(over, each)| {
        let each: Vec<String> = each.iter().map(|p| format!("{p:?}")).collect();
        format!("{{ sum = {over:?}, each = [{}] }}", each.join(", "))
    });
    (prop::collection::vec(sum, 1..4), wild_path()).prop_map(|(sums, plain)| {
        let mut text = String::from("[source]\nname = \"random\"\n");
        text.push_str("verify = { scheme = \"none\" }\n");
        text.push_str("event_id = \"$.b\"\nevent_type = \"$.b\"\n");
        text.push_str("\n[[rules]]\nname = \"sums\"\non = \"*\"\nevent_type = \"e\"\n");
        text.push_str("value = \"1\"\nvalue_type = \"numeric\"\n");
        for (i, sum) in sums.iter().enumerate() {
            text.push_str(&format!("properties.s{i} = {sum}\n"));
        }
        text.push_str(&format!("properties.plain = {plain:?}\n"));
        text
    })
}

/// Random rules over the events of a body split by a path through wildcards (`$[*]` most
/// often, the shape providers batch in).
fn splitting_file() -> impl Strategy<Value = String> {
    let split = prop_oneof![3 => Just("$[*]".to_string()), 1 => wild_path()];
    (mapping_file(), split).prop_map(|(file, split)| {
        file.replacen("[source]\n", &format!("[source]\nsplit = {split:?}\n"), 1)
    })
}

/// A batch of documents: an array of them, or an object whose members are.
fn batch() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::collection::vec(document(), 1..4).prop_map(Value::Array),
        1 => prop::collection::btree_map(key(), document(), 1..3)
            .prop_map(|m| json!({ "a": Value::Object(m.into_iter().collect()) })),
    ]
}

/// Loads the generated `file` and maps `doc` both ways.
fn assert_same_random_mapping(file: &str, doc: &Value) -> Result<(), TestCaseError> {
    let loaded = load_texts(&[(PathBuf::from("random.toml"), file.to_string())]);
    // A generated file the loader refuses (a path it does not accept, say) proves nothing.
    prop_assume!(loaded.is_ok());
    let loaded: Loaded = loaded.unwrap();
    let source = loaded.catalog.get("random").expect("the generated source");
    let body = serde_json::to_vec(doc).unwrap();
    assert_same_mapping(source, &body, &format!("{file}\n{doc}"));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_rules_map_random_documents_as_from_the_whole_document(
        file in mapping_file(),
        doc in document(),
    ) {
        assert_same_random_mapping(&file, &doc)?;
    }

    #[test]
    fn random_splits_map_random_batches_as_from_the_whole_document(
        file in splitting_file(),
        doc in batch(),
    ) {
        assert_same_random_mapping(&file, &doc)?;
    }

    #[test]
    fn random_sums_map_random_documents_as_from_the_whole_document(
        file in summing_file(),
        doc in document(),
    ) {
        assert_same_random_mapping(&file, &doc)?;
    }
}
