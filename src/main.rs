//! The `greenflash-bridge` command line. Each subcommand lives in `cli/`; the work itself is
//! library code so that tests can drive it directly.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// The accept path allocates on the HTTP workers and frees on the store's writer thread;
/// glibc's per-thread arenas make those cross-thread frees expensive (malloc_consolidate,
/// arena locks showed up as a fifth of the workers' profile), mimalloc's do not. It is built
/// without transparent huge pages (`no_thp` in Cargo.toml), which inflated RSS by half.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging();
    match cli::run(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
