//! `greenflash-bridge test [--mappings DIR] [--fixtures DIR] [--bless]`

use std::path::PathBuf;
use std::process::ExitCode;

use greenflash_bridge::fixtures::{self, Verdict};

use super::MappingsArg;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    mappings: MappingsArg,
    /// Directory with one sub-directory of fixtures per source.
    #[arg(long, default_value = "tests/fixtures")]
    fixtures: PathBuf,
    /// Write each fixture's current output as its expected file (review the diff before
    /// committing it).
    #[arg(long)]
    bless: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = args.mappings.load()?;
    let outcomes = fixtures::run(&loaded.catalog, &args.fixtures, args.bless)?;
    let (mut passed, mut failed, mut unchecked) = (0, 0, 0);
    for outcome in &outcomes {
        match &outcome.verdict {
            Verdict::Pass { events } => {
                passed += 1;
                println!(
                    "ok      {} ({events} event{})",
                    outcome.fixture,
                    plural(*events)
                );
            }
            Verdict::Blessed { events } => {
                passed += 1;
                println!(
                    "blessed {} ({events} event{})",
                    outcome.fixture,
                    plural(*events)
                );
            }
            Verdict::Unchecked => {
                unchecked += 1;
                println!(
                    "skip    {} (no .expected.json; run with --bless to create it)",
                    outcome.fixture
                );
            }
            Verdict::Fail { differences } => {
                failed += 1;
                println!("FAIL    {}", outcome.fixture);
                for d in differences {
                    for line in d.lines() {
                        println!("        {line}");
                    }
                }
            }
            Verdict::Error { message } => {
                failed += 1;
                println!("FAIL    {}: {message}", outcome.fixture);
            }
        }
    }
    println!("fixtures: {passed} passed, {failed} failed, {unchecked} skipped");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
