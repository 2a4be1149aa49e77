//! Argument definitions and dispatch.

mod check;
mod dlq;
mod map;
mod migrate;
mod replay;
mod send;
mod serve;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "greenflash-bridge",
    version,
    about = "Receives billing and CRM webhooks, verifies and maps them, and forwards business events to Greenflash."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: receive webhooks, store them, deliver events to Greenflash.
    Serve(serve::Args),
    /// Validate the mapping files; print `path:line:col: message` for each problem.
    Check(check::Args),
    /// Print the Greenflash events the mappings make of a payload (nothing is sent).
    Map(map::Args),
    /// Sign a payload as the source's provider would and post it to a running bridge.
    Send(send::Args),
    /// Map every fixture and compare with its .expected.json (golden tests for mappings).
    Test(test::Args),
    /// Print the JSON Schema (draft-07) of mapping files, for editors.
    Schema,
    /// Dead letters: list, show, retry, drop.
    Dlq(dlq::Args),
    /// Re-map stored raw webhooks with the current mappings (backfill after a fix).
    Replay(replay::Args),
    /// Create or upgrade the store's schema (serve does this too).
    Migrate(migrate::Args),
}

/// `--mappings DIR`, shared by every command that reads mapping files.
#[derive(Debug, clap::Args)]
struct MappingsArg {
    /// Directory of mapping files (*.toml).
    #[arg(long, env = "BRIDGE_MAPPINGS", default_value = "mappings")]
    mappings: PathBuf,
}

impl MappingsArg {
    /// Loads the mapping files, printing every diagnostic when they are invalid.
    fn load(&self) -> anyhow::Result<greenflash_bridge::mapping::Loaded> {
        greenflash_bridge::mapping::load_dir(&self.mappings).map_err(|diagnostics| {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            anyhow::anyhow!(
                "the mappings in {} are invalid (run `greenflash-bridge check`)",
                self.mappings.display()
            )
        })
    }

    /// Loads the mapping files and picks the source named `name`, listing the known ones if
    /// there is none.
    fn load_source(
        &self,
        name: &str,
    ) -> anyhow::Result<std::sync::Arc<greenflash_bridge::mapping::Source>> {
        let loaded = self.load()?;
        loaded.catalog.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = loaded.catalog.sources.keys().map(String::as_str).collect();
            anyhow::anyhow!(
                "no source named {name:?}; known sources: {}",
                known.join(", ")
            )
        })
    }
}

/// The bytes of FILE, or of standard input for `-`.
fn read_input(file: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    use std::io::Read;
    if file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading standard input")?;
        Ok(buf)
    } else {
        std::fs::read(file).with_context(|| format!("reading {}", file.display()))
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Check(args) => check::run(args),
        Command::Map(args) => map::run(args),
        Command::Send(args) => send::run(args),
        Command::Test(args) => test::run(args),
        Command::Dlq(args) => dlq::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&greenflash_bridge::mapping::schema())?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Logs go to stderr: human-readable by default, JSON lines with `BRIDGE_LOG_FORMAT=json`.
/// `RUST_LOG` filters (default `info`).
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        // PostgreSQL's NOTICEs ("already exists, skipping") are not news to operators.
        .unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres=warn"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only help a person at a terminal; files and collectors get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if std::env::var("BRIDGE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    } else {
        builder.init();
    }
}
