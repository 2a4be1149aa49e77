//! `greenflash-bridge map --source NAME [--explain] FILE` — preview a mapping offline.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use greenflash_bridge::inbound::Headers;
use greenflash_bridge::mapping::Options;

use super::{MappingsArg, read_input};

/// The productId shown when neither the mapping nor GREENFLASH_PRODUCT_ID gives one.
const PLACEHOLDER_PRODUCT_ID: &str = "00000000-0000-0000-0000-000000000000";

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    mappings: MappingsArg,
    /// The source (the `name` in a mapping file's [source] table).
    #[arg(long)]
    source: String,
    /// Also print, for each rule, whether it matched and why (to stderr).
    #[arg(long)]
    explain: bool,
    /// A JSON object of request headers, for mappings that read headers.
    #[arg(long)]
    headers: Option<PathBuf>,
    /// The productId for rules that set none.
    #[arg(long, env = "GREENFLASH_PRODUCT_ID")]
    product_id: Option<String>,
    /// The payload file, or `-` for standard input.
    file: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let source = args.mappings.load_source(&args.source)?;
    let body = read_input(&args.file)?;
    let headers = match &args.headers {
        Some(path) => {
            let text =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Headers::from_json(
                &serde_json::from_slice(&text)
                    .with_context(|| format!("{} is not JSON", path.display()))?,
            )
        }
        None => Headers::new(),
    };
    let doc = source
        .parse_body(&headers, &body)
        .with_context(|| format!("{} is not JSON", args.file.display()))?;
    let options = Options {
        default_product_id: Some(args.product_id.as_deref().unwrap_or(PLACEHOLDER_PRODUCT_ID)),
        explain: args.explain,
    };
    let mapped = source.apply(&doc, &headers, &options)?;
    let events: Vec<&greenflash_bridge::greenflash::Event> = mapped
        .iter()
        .flat_map(|p| p.emitted.iter().map(|e| &e.event))
        .collect();
    println!("{}", serde_json::to_string_pretty(&events)?);
    let mut failed = false;
    for event in &mapped {
        if args.explain {
            eprintln!(
                "event {} ({}): {}",
                event.id,
                event.event_type,
                event.status().as_str()
            );
            for t in &event.trace {
                let verdict = if t.matched { "matched" } else { "no match" };
                match &t.reason {
                    Some(r) => eprintln!("  rule {}: {verdict}: {r}", t.rule),
                    None => eprintln!("  rule {}: {verdict}", t.rule),
                }
                for note in &t.notes {
                    eprintln!("    {note}");
                }
            }
        }
        for f in &event.failures {
            failed = true;
            eprintln!(
                "mapping failure: event {}: rule {}: {}",
                event.id, f.rule, f.reason
            );
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
