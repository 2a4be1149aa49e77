//! The `check` and `map` commands as operators run them.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::repo_path;

fn bridge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_greenflash-bridge"))
        .args(args)
        .env_remove("GREENFLASH_PRODUCT_ID")
        .output()
        .expect("run greenflash-bridge")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

const GOOD: &str = r#"[source]
name = "shop"
verify = { scheme = "stripe", secrets_env = "SHOP_SECRET" }
event_id = "$.id"
event_type = "$.type"

[[rules]]
name = "paid"
on = "order.paid"
event_type = "order_paid"
value = { money = "$.amount", currency = "$.currency" }
value_type = "currency"
influence = "positive"
"#;

/// Writes `text` as the only mapping file of a fresh directory and runs `check` on it.
fn check_text(text: &str) -> (bool, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("shop.toml"), text).unwrap();
    let out = bridge(&["check", "--mappings", dir.path().to_str().unwrap()]);
    (out.status.success(), text_of(&out, dir.path()), dir)
}

fn text_of(out: &Output, dir: &Path) -> String {
    text(out).replace(&format!("{}/", dir.display()), "")
}

/// Replaces the first `from` in GOOD by `to`, runs check, and returns its output.
fn mutate(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from}");
    let (ok, out, _dir) = check_text(&GOOD.replacen(from, to, 1));
    assert!(
        !ok,
        "check accepted the mutation {from:?} -> {to:?}:\n{out}"
    );
    out
}

#[test]
fn check_accepts_the_shipped_mappings_with_a_line_per_file() {
    let out = bridge(&[
        "check",
        "--mappings",
        repo_path("mappings").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("stripe.toml: ok: source \"stripe\" (scheme stripe), 11 rules"),
        "{stdout}"
    );
}

#[test]
fn check_accepts_a_valid_file() {
    let (ok, out, _dir) = check_text(GOOD);
    assert!(ok, "{out}");
}

#[test]
fn toml_syntax_errors_are_located() {
    let out = mutate("[[rules]]", "[[rules]");
    assert!(out.contains("shop.toml:7:"), "{out}");
    assert!(out.contains("TOML syntax"), "{out}");
}

#[test]
fn unknown_keys_are_located_with_a_suggestion() {
    let out = mutate("event_type = \"order_paid\"", "evnt_type = \"order_paid\"");
    assert!(
        out.contains("shop.toml:10:1: unknown key `evnt_type` in a rule"),
        "{out}"
    );
    assert!(out.contains("did you mean `event_type`?"), "{out}");
}

#[test]
fn invalid_jsonpaths_point_into_the_string() {
    let out = mutate("\"$.amount\"", "\"$.amount[?@.x >]\"");
    // Line 11, the value starts at column 17 (`{ money = "`): the caret lands inside it.
    let line = out
        .lines()
        .find(|l| l.contains("invalid JSONPath"))
        .expect(&out);
    assert!(line.starts_with("shop.toml:11:"), "{out}");
    let col: usize = line.split(':').nth(2).unwrap().parse().unwrap();
    assert!(col > 19, "{line}");
}

#[test]
fn bad_enum_values_are_located() {
    let out = mutate("influence = \"positive\"", "influence = \"good\"");
    assert!(
        out.contains("shop.toml:13:13: influence \"good\" is not valid"),
        "{out}"
    );
    let out = mutate("value_type = \"currency\"", "value_type = \"money\"");
    assert!(out.contains("shop.toml:12:14:"), "{out}");
    let out = mutate("scheme = \"stripe\"", "scheme = \"strip\"");
    assert!(
        out.contains("shop.toml:3:21: unknown verify scheme \"strip\""),
        "{out}"
    );
    assert!(out.contains("did you mean \"stripe\"?"), "{out}");
}

#[test]
fn scores_and_rates_out_of_range_are_located() {
    let out = mutate(
        "influence = \"positive\"\n",
        "influence = \"positive\"\nquality_impact_score = 1.5\n",
    );
    assert!(
        out.contains("shop.toml:14:24: quality_impact_score 1.5 is outside [-1, 1]"),
        "{out}"
    );
    let out = mutate(
        "influence = \"positive\"\n",
        "influence = \"positive\"\nsample_rate = -0.1\n",
    );
    assert!(
        out.contains("shop.toml:14:15: sample_rate -0.1 is outside [0, 1]"),
        "{out}"
    );
}

#[test]
fn a_rule_that_cannot_produce_a_value_is_reported_at_its_name() {
    let out = mutate(
        "value = { money = \"$.amount\", currency = \"$.currency\" }\n",
        "",
    );
    assert!(
        out.contains("shop.toml:8:8: rule \"paid\" cannot produce `value`"),
        "{out}"
    );
}

#[test]
fn a_literal_conversation_id_must_be_a_uuid() {
    let out = mutate(
        "influence = \"positive\"\n",
        "influence = \"positive\"\nconversation_id = \"conv_1\"\n",
    );
    assert!(
        out.contains("shop.toml:14:19: conversation_id \"conv_1\" is not a UUID"),
        "{out}"
    );
}

#[test]
fn duplicate_rule_names_are_located() {
    let doubled = format!(
        "{GOOD}\n[[rules]]\nname = \"paid\"\non = \"x\"\nevent_type = \"a\"\nvalue = \"1\"\n"
    );
    let (ok, out, _dir) = check_text(&doubled);
    assert!(!ok);
    assert!(
        out.contains("shop.toml:16:8: duplicate rule name \"paid\""),
        "{out}"
    );
}

#[test]
fn duplicate_source_names_name_both_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.toml"), GOOD).unwrap();
    std::fs::write(dir.path().join("b.toml"), GOOD).unwrap();
    let out = bridge(&["check", "--mappings", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let out = text_of(&out, dir.path());
    assert!(
        out.contains("b.toml:2:8: source name \"shop\" is already used by"),
        "{out}"
    );
    assert!(out.contains("a.toml"), "{out}");
}

#[test]
fn unknown_transforms_and_bad_durations_are_located() {
    let out = mutate(
        "currency = \"$.currency\" }",
        "currency = \"$.currency\", cents = true }",
    );
    assert!(
        out.contains("shop.toml:11:56: unknown key `cents` in an expression"),
        "{out}"
    );
    let out = mutate(
        "secrets_env = \"SHOP_SECRET\" }",
        "secrets_env = \"SHOP_SECRET\", tolerance = \"5 minutes\" }",
    );
    assert!(out.contains("shop.toml:3:72: bad duration"), "{out}");
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let broken = GOOD
        .replace("influence = \"positive\"", "influence = \"good\"")
        .replace("value_type = \"currency\"", "value_typ = \"currency\"");
    let (ok, out, _dir) = check_text(&broken);
    assert!(!ok);
    assert!(out.contains("influence \"good\""), "{out}");
    assert!(out.contains("unknown key `value_typ`"), "{out}");
    assert!(out.contains("2 errors"), "{out}");
}

#[test]
fn map_prints_the_events_as_a_json_array() {
    let fixture = repo_path("tests/fixtures/stripe/invoice.paid.json");
    let out = bridge(&[
        "map",
        "--mappings",
        repo_path("mappings").to_str().unwrap(),
        "--source",
        "stripe",
        fixture.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let events: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(events.as_array().unwrap().len(), 1);
    assert_eq!(events[0]["eventType"], "invoice_paid");
    assert_eq!(events[0]["value"], "20.00");
}

#[test]
fn map_explain_says_why_rules_did_not_match() {
    let fixture = repo_path("tests/fixtures/stripe/payment_intent.succeeded.json");
    let out = bridge(&[
        "map",
        "--explain",
        "--mappings",
        repo_path("mappings").to_str().unwrap(),
        "--source",
        "stripe",
        fixture.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("event evt_3TEq14Lr4TnX2bKw0yNwTKrM (payment_intent.succeeded): ignored"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "rule invoice_paid: no match: event type \"payment_intent.succeeded\" is not in `on`"
        ),
        "{stderr}"
    );
}

#[test]
fn map_explain_names_the_failing_condition() {
    let mut doc: serde_json::Value =
        serde_json::from_slice(&support::fixture("stripe/invoice.paid.json")).unwrap();
    doc["data"]["object"]["amount_paid"] = serde_json::json!(0);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("zero.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = bridge(&[
        "map",
        "--explain",
        "--mappings",
        repo_path("mappings").to_str().unwrap(),
        "--source",
        "stripe",
        file.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rule invoice_paid: no match: $.data.object.amount_paid: is 0, not > 0"),
        "{stderr}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn test_passes_on_every_shipped_catalog_and_fixture() {
    let out = bridge(&[
        "test",
        "--mappings",
        repo_path("mappings").to_str().unwrap(),
        "--fixtures",
        repo_path("tests/fixtures").to_str().unwrap(),
    ]);
    let text = text(&out);
    assert!(out.status.success(), "{text}");
    for source in [
        "stripe",
        "paddle",
        "chargebee",
        "hubspot",
        "shopify",
        "lemonsqueezy",
    ] {
        assert!(
            text.contains(&format!("ok      {source}/")),
            "{source} has no passing fixture:\n{text}"
        );
    }
    assert!(text.contains(" 0 failed, 0 skipped"), "{text}");
}

#[test]
fn test_prints_a_readable_diff_when_a_mapping_changes() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_path("mappings"), dir.path());
    let stripe = dir.path().join("stripe.toml");
    let text_before = std::fs::read_to_string(&stripe).unwrap();
    let changed = text_before.replacen(
        "event_type = \"invoice_paid\"\ninfluence = \"positive\"",
        "event_type = \"invoice_paid\"\ninfluence = \"neutral\"",
        1,
    );
    assert_ne!(changed, text_before);
    std::fs::write(&stripe, changed).unwrap();
    let out = bridge(&[
        "test",
        "--mappings",
        dir.path().to_str().unwrap(),
        "--fixtures",
        repo_path("tests/fixtures").to_str().unwrap(),
    ]);
    let text = text(&out);
    assert!(!out.status.success());
    assert!(text.contains("FAIL    stripe/invoice.paid.json"), "{text}");
    assert!(text.contains("[0].influence: - \"positive\""), "{text}");
    assert!(text.contains("[0].influence: + \"neutral\""), "{text}");
    assert!(
        text.contains("ok      stripe/charge.refunded.json"),
        "only the changed rule's fixtures fail:\n{text}"
    );
}

#[test]
fn bless_writes_expected_files_that_then_pass() {
    let fixtures = tempfile::tempdir().unwrap();
    let dir = fixtures.path().join("stripe");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        repo_path("tests/fixtures/stripe/invoice.paid.json"),
        dir.join("x.json"),
    )
    .unwrap();
    let args = [
        "test",
        "--mappings",
        repo_path("mappings").to_str().unwrap().to_owned().leak(),
        "--fixtures",
        fixtures.path().to_str().unwrap().to_owned().leak(),
    ];
    let out = bridge(&args);
    assert!(
        text(&out).contains("skip    stripe/x.json"),
        "{}",
        text(&out)
    );
    let mut blessing = args.to_vec();
    blessing.push("--bless");
    assert!(bridge(&blessing).status.success());
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("x.expected.json")).unwrap()).unwrap();
    assert_eq!(expected[0]["eventType"], "invoice_paid");
    assert!(bridge(&args).status.success());
}
