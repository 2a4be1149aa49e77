//! `greenflash-bridge dlq list|show|retry|drop` — dead letters, also against the store of a
//! running service (SQLite allows a second process; its dispatcher picks retried events up).

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use greenflash_bridge::store::{self, DeadLetter, DeadSelector};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The service's store.
    #[arg(
        long,
        env = "BRIDGE_STORE",
        default_value = "sqlite://data/bridge.db",
        global = true
    )]
    store: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List dead letters, newest first.
    List {
        #[arg(long)]
        source: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one event: its payload and Greenflash's last answer.
    Show { id: i64 },
    /// Queue dead letters again (same insertId), due now.
    Retry {
        ids: Vec<i64>,
        #[arg(long, conflicts_with_all = ["ids", "source"])]
        all: bool,
        #[arg(long, conflicts_with = "ids")]
        source: Option<String>,
    },
    /// Mark dead letters as dropped: kept and visible, never sent.
    Drop {
        #[arg(required = true)]
        ids: Vec<i64>,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = store::open(&args.store)
            .await
            .with_context(|| format!("opening {}", args.store))?;
        match args.command {
            Command::List { source, json } => {
                let dead = store.dead_letters(source.as_deref()).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&dead)?);
                } else {
                    print_table(&dead);
                }
            }
            Command::Show { id } => match store.outbox_event(id).await? {
                Some(event) => {
                    let mut shown = serde_json::to_value(&event)?;
                    shown["payload"] = serde_json::from_str(&event.payload)
                        .unwrap_or(serde_json::Value::String(event.payload.clone()));
                    println!("{}", serde_json::to_string_pretty(&shown)?);
                }
                None => bail!("no event with id {id}"),
            },
            Command::Retry { ids, all, source } => {
                let which = match (ids.is_empty(), all, source) {
                    (false, false, None) => DeadSelector::Ids(ids),
                    (true, true, None) => DeadSelector::All,
                    (true, false, Some(s)) => DeadSelector::Source(s),
                    _ => bail!("give dead-letter ids, --all, or --source NAME"),
                };
                let n = store.retry_dead(which).await?;
                println!(
                    "{n} dead letter{} queued again",
                    if n == 1 { "" } else { "s" }
                );
            }
            Command::Drop { ids } => {
                let n = store.drop_dead(&ids).await?;
                println!("{n} dead letter{} dropped", if n == 1 { "" } else { "s" });
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn print_table(dead: &[DeadLetter]) {
    if dead.is_empty() {
        println!("no dead letters");
        return;
    }
    println!(
        "{:>6}  {:<12}  {:<32}  {:<24}  {:>8}  {:>6}  ERROR",
        "ID", "SOURCE", "EVENT", "RULE", "ATTEMPTS", "STATUS"
    );
    for d in dead {
        let status = d.last_status.map_or("-".to_string(), |s| s.to_string());
        let error: String = d
            .last_error
            .as_deref()
            .unwrap_or("")
            .chars()
            .take(60)
            .collect();
        println!(
            "{:>6}  {:<12}  {:<32}  {:<24}  {:>8}  {:>6}  {}",
            d.id,
            d.source,
            d.event_id,
            d.rule,
            d.attempts,
            status,
            error.replace('\n', " ")
        );
    }
}
