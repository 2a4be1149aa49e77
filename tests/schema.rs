//! The committed mappings/mapping.schema.json is what `schema` prints, and it accepts every
//! shipped mapping file and rejects a typo, so editors flag real mistakes only.

mod support;

use serde_json::Value;
use support::repo_path;

/// Validates `value` against the draft-07 subset the schema uses.
fn validate(schema: &Value, root: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/definitions/");
        return validate(&root["definitions"][name], root, value, path, errors);
    }
    if let Some(options) = schema.get("anyOf").and_then(Value::as_array) {
        let ok = options.iter().any(|o| {
            let mut e = Vec::new();
            validate(o, root, value, path, &mut e);
            e.is_empty()
        });
        if !ok {
            errors.push(format!("{path}: matches none of anyOf"));
        }
        return;
    }
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !ok {
            errors.push(format!("{path}: not a {t}"));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        errors.push(format!("{path}: {value} not in enum"));
    }
    if let (Some(p), Some(s)) = (
        schema.get("pattern").and_then(Value::as_str),
        value.as_str(),
    ) && !regex::Regex::new(p).unwrap().is_match(s)
    {
        errors.push(format!("{path}: {s:?} does not match {p}"));
    }
    if let (Some(min), Some(n)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) && n < min
    {
        errors.push(format!("{path}: below minimum"));
    }
    if let (Some(max), Some(n)) = (
        schema.get("maximum").and_then(Value::as_f64),
        value.as_f64(),
    ) && n > max
    {
        errors.push(format!("{path}: above maximum"));
    }
    if let Some(obj) = value.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !obj.contains_key(req.as_str().unwrap()) {
                errors.push(format!("{path}: missing {req}"));
            }
        }
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(s, root, v, &format!("{path}.{k}"), errors),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => errors.push(format!("{path}: unknown key {k}")),
                    Some(s @ Value::Object(_)) => {
                        validate(s, root, v, &format!("{path}.{k}"), errors)
                    }
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            validate(items, root, v, &format!("{path}[{i}]"), errors);
        }
    }
}

fn toml_as_json(text: &str) -> Value {
    let table: toml::Table = toml::from_str(text).unwrap();
    serde_json::to_value(table).unwrap()
}

fn schema() -> Value {
    serde_json::from_slice(&std::fs::read(repo_path("mappings/mapping.schema.json")).unwrap())
        .unwrap()
}

#[test]
fn the_committed_schema_is_what_the_schema_command_prints() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_greenflash-bridge"))
        .arg("schema")
        .output()
        .unwrap();
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        printed,
        schema(),
        "run `greenflash-bridge schema > mappings/mapping.schema.json`"
    );
    assert_eq!(
        printed["$schema"],
        "http://json-schema.org/draft-07/schema#"
    );
}

#[test]
fn the_schema_accepts_every_shipped_mapping_and_flags_a_typo() {
    let schema = schema();
    let mut checked = 0;
    for entry in std::fs::read_dir(repo_path("mappings")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut errors = Vec::new();
        validate(&schema, &schema, &toml_as_json(&text), "$", &mut errors);
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        checked += 1;

        let typo = text.replacen("event_type = ", "evnt_type = ", 2);
        let mut errors = Vec::new();
        validate(&schema, &schema, &toml_as_json(&typo), "$", &mut errors);
        assert!(
            errors.iter().any(|e| e.contains("unknown key evnt_type")),
            "{}: {errors:?}",
            path.display()
        );
    }
    assert_eq!(checked, 6);
}
