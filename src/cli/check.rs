//! `greenflash-bridge check [--mappings DIR]`

use std::process::ExitCode;

use greenflash_bridge::mapping::{Severity, load_dir};

use super::MappingsArg;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    mappings: MappingsArg,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match load_dir(&args.mappings.mappings) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("{warning}");
            }
            for source in loaded.catalog.sources.values() {
                println!(
                    "{}: ok: source {:?} (scheme {}), {} rule{}",
                    source.file.display(),
                    source.name,
                    source.verify.scheme.name(),
                    source.rules.len(),
                    if source.rules.len() == 1 { "" } else { "s" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(diagnostics) => {
            for d in &diagnostics {
                eprintln!("{d}");
            }
            let errors = diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            eprintln!(
                "{errors} error{} in {}",
                if errors == 1 { "" } else { "s" },
                args.mappings.mappings.display()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
