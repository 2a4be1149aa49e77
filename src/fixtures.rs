//! Golden fixture tests for mappings: `<dir>/<source>/<name>.json` is mapped and compared with
//! `<name>.expected.json` beside it (optional `<name>.headers.json` supplies headers). This is
//! what `greenflash-bridge test` runs, and what operators run in CI after editing a mapping.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::inbound::Headers;
use crate::mapping::{Catalog, Options};

/// The productId fixtures are mapped with, so expected files do not depend on the environment.
pub const FIXTURE_PRODUCT_ID: &str = "00000000-0000-0000-0000-000000000000";

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass {
        events: usize,
    },
    /// What differs, one line per difference.
    Fail {
        differences: Vec<String>,
    },
    /// No expected file (and not blessing).
    Unchecked,
    /// `--bless` wrote the expected file.
    Blessed {
        events: usize,
    },
    /// The fixture could not be mapped at all.
    Error {
        message: String,
    },
}

#[derive(Debug, Clone)]
pub struct Outcome {
    /// `<source>/<name>.json`, relative to the fixtures directory.
    pub fixture: String,
    pub verdict: Verdict,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct FixtureError {
    path: PathBuf,
    source: std::io::Error,
}

/// Runs every fixture under `dir` whose directory names a source in `catalog`.
pub fn run(catalog: &Catalog, dir: &Path, bless: bool) -> Result<Vec<Outcome>, FixtureError> {
    let read_dir = |path: &Path| {
        std::fs::read_dir(path).map_err(|source| FixtureError {
            path: path.to_path_buf(),
            source,
        })
    };
    let mut outcomes = Vec::new();
    let mut sources: Vec<PathBuf> = read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    sources.sort();
    for source_dir in sources {
        let Some(name) = source_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
        else {
            continue;
        };
        let Some(source) = catalog.get(&name) else {
            continue;
        };
        let mut files: Vec<PathBuf> = read_dir(&source_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let n = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                n.ends_with(".json")
                    && !n.ends_with(".expected.json")
                    && !n.ends_with(".headers.json")
            })
            .collect();
        files.sort();
        for file in files {
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let fixture = format!("{name}/{stem}.json");
            let expected_path = source_dir.join(format!("{stem}.expected.json"));
            let verdict = match map_file(
                source,
                &file,
                &source_dir.join(format!("{stem}.headers.json")),
            ) {
                Err(message) => Verdict::Error { message },
                Ok(actual) => judge(actual, &expected_path, bless),
            };
            outcomes.push(Outcome { fixture, verdict });
        }
    }
    Ok(outcomes)
}

fn map_file(
    source: &crate::mapping::Source,
    file: &Path,
    headers_path: &Path,
) -> Result<Value, String> {
    let body = std::fs::read(file).map_err(|e| format!("cannot read: {e}"))?;
    let headers = match std::fs::read(headers_path) {
        Ok(text) => Headers::from_json(
            &serde_json::from_slice(&text)
                .map_err(|e| format!("{}: not JSON: {e}", headers_path.display()))?,
        ),
        Err(_) => Headers::new(),
    };
    let doc = source
        .parse_body(&headers, &body)
        .map_err(|e| format!("not JSON: {e}"))?;
    let options = Options {
        default_product_id: Some(FIXTURE_PRODUCT_ID),
        explain: false,
    };
    let mapped = source
        .apply(&doc, &headers, &options)
        .map_err(|e| e.to_string())?;
    let mut events = Vec::new();
    for event in mapped {
        if let Some(f) = event.failures.first() {
            return Err(format!("event {}: rule {}: {}", event.id, f.rule, f.reason));
        }
        for e in event.emitted {
            events.push(serde_json::to_value(&e.event).map_err(|e| e.to_string())?);
        }
    }
    Ok(Value::Array(events))
}

fn judge(actual: Value, expected_path: &Path, bless: bool) -> Verdict {
    let count = actual.as_array().map_or(0, Vec::len);
    if bless {
        let text = serde_json::to_string_pretty(&actual).unwrap_or_default() + "\n";
        return match std::fs::write(expected_path, text) {
            Ok(()) => Verdict::Blessed { events: count },
            Err(e) => Verdict::Error {
                message: format!("cannot write {}: {e}", expected_path.display()),
            },
        };
    }
    let Ok(text) = std::fs::read(expected_path) else {
        return Verdict::Unchecked;
    };
    let expected: Value = match serde_json::from_slice(&text) {
        Ok(v) => v,
        Err(e) => {
            return Verdict::Error {
                message: format!("{} is not JSON: {e}", expected_path.display()),
            };
        }
    };
    let mut differences = Vec::new();
    diff("", &expected, &actual, &mut differences);
    if differences.is_empty() {
        Verdict::Pass { events: count }
    } else {
        Verdict::Fail { differences }
    }
}

/// Lists the differences between `expected` and `actual` as `path: - old / + new` lines.
pub fn diff(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let p = format!("{path}.{k}");
                match a.get(k) {
                    Some(av) => diff(&p, ev, av, out),
                    None => out.push(format!("{p}: - {ev}\n{p}: + (absent)")),
                }
            }
            for (k, av) in a {
                if !e.contains_key(k) {
                    let p = format!("{path}.{k}");
                    out.push(format!("{p}: - (absent)\n{p}: + {av}"));
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            for i in 0..e.len().max(a.len()) {
                let p = format!("{path}[{i}]");
                match (e.get(i), a.get(i)) {
                    (Some(ev), Some(av)) => diff(&p, ev, av, out),
                    (Some(ev), None) => out.push(format!("{p}: - {ev}\n{p}: + (absent)")),
                    (None, Some(av)) => out.push(format!("{p}: - (absent)\n{p}: + {av}")),
                    (None, None) => {}
                }
            }
        }
        _ if expected != actual => out.push(format!("{path}: - {expected}\n{path}: + {actual}")),
        _ => {}
    }
}
