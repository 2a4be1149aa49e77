//! `greenflash-bridge replay --source S [--since T] [--until T] [--status …] [--dry-run]`

use std::process::ExitCode;

use anyhow::Context;
use greenflash_bridge::replay::replay;
use greenflash_bridge::store::{self, ReplayQuery, now_ms};
use greenflash_bridge::units::parse_instant;

use super::MappingsArg;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    mappings: MappingsArg,
    #[arg(long, env = "BRIDGE_STORE", default_value = "sqlite://data/bridge.db")]
    store: String,
    #[arg(long)]
    source: String,
    /// Only webhooks received at or after this time (RFC 3339, or a duration ago like 24h).
    #[arg(long)]
    since: Option<String>,
    /// Only webhooks received before this time.
    #[arg(long)]
    until: Option<String>,
    /// Only provider events in these states: mapped, ignored, mapping_failed (repeatable).
    #[arg(long, value_parser = ["mapped", "ignored", "mapping_failed"])]
    status: Vec<String>,
    /// Print what would change (with a diff) without queuing anything.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// The productId for rules that set none.
    #[arg(long, env = "GREENFLASH_PRODUCT_ID")]
    product_id: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = args.mappings.load()?;
    let now = now_ms();
    let instant = |t: &Option<String>| {
        t.as_deref()
            .map(|t| parse_instant(t, now))
            .transpose()
            .map_err(anyhow::Error::msg)
    };
    let query = ReplayQuery {
        source: args.source.clone(),
        since_ms: instant(&args.since)?,
        until_ms: instant(&args.until)?,
        statuses: args.status.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let store = store::open(&args.store)
            .await
            .with_context(|| format!("opening {}", args.store))?;
        Ok::<_, anyhow::Error>(
            replay(
                store.as_ref(),
                &loaded.catalog,
                query,
                args.product_id.as_deref(),
                args.dry_run,
            )
            .await?,
        )
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    for event in &report.events {
        println!(
            "event {} ({} -> {})",
            event.event_id, event.status_before, event.status_after
        );
        for rule in &event.rules {
            match &rule.insert_id {
                Some(id) => println!("  rule {}: {} (insertId {id})", rule.rule, rule.change),
                None => println!("  rule {}: {}", rule.rule, rule.change),
            }
            for line in rule.diff.iter().flat_map(|d| d.lines()) {
                println!("      {line}");
            }
        }
    }
    let verb = if report.dry_run {
        "would queue"
    } else {
        "queued"
    };
    let queued = if report.dry_run {
        report
            .events
            .iter()
            .flat_map(|e| &e.rules)
            .filter(|r| r.insert_id.is_some())
            .count()
    } else {
        report.queued
    };
    println!(
        "{} webhooks, {} events replayed; {verb} {queued} Greenflash events",
        report.webhooks,
        report.events.len()
    );
    Ok(ExitCode::SUCCESS)
}
