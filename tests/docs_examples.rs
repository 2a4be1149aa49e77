//! Every TOML example in docs/mappings.md must load: fragments are completed with a minimal
//! `[source]` table, so the documentation cannot drift from what the bridge accepts.

use std::path::PathBuf;

use greenflash_bridge::mapping::load_texts;

const MINIMAL_SOURCE: &str = r#"[source]
name = "example"
verify = { scheme = "stripe", secrets_env = "EXAMPLE_SECRET" }
event_id = "$.id"
event_type = "$.type"
"#;

fn toml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

#[test]
fn every_mapping_example_in_the_docs_loads() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/mappings.md");
    let markdown = std::fs::read_to_string(&path).unwrap();
    let blocks = toml_blocks(&markdown);
    assert!(blocks.len() >= 5, "found {} examples", blocks.len());
    for (n, block) in blocks.iter().enumerate() {
        let text = if block.contains("[source]") {
            block.clone()
        } else {
            format!("{MINIMAL_SOURCE}\n{block}")
        };
        let file = PathBuf::from(format!("docs/mappings.md#example-{}", n + 1));
        if let Err(diagnostics) = load_texts(&[(file, text.clone())]) {
            let list: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
            panic!(
                "example {} does not load:\n{}\n---\n{text}",
                n + 1,
                list.join("\n")
            );
        }
    }
}
