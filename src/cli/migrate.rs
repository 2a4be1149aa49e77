//! `greenflash-bridge migrate [--store URL]` — create or upgrade the store's schema, for
//! operators who prefer to run migrations before starting replicas (`serve` also migrates,
//! safely when several replicas start at once).

use std::process::ExitCode;

use anyhow::Context;
use greenflash_bridge::store::{self, PostgresStore};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, env = "BRIDGE_STORE", default_value = "sqlite://data/bridge.db")]
    store: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        if args.store.starts_with("postgres://") || args.store.starts_with("postgresql://") {
            let pg = PostgresStore::connect(&args.store, 1)?;
            let applied = pg.migrate().await.with_context(|| "migrating PostgreSQL")?;
            match applied.as_slice() {
                [] => println!("schema up to date"),
                versions => println!("applied migrations {versions:?}; schema up to date"),
            }
        } else {
            store::open(&args.store)
                .await
                .with_context(|| format!("opening {}", args.store))?;
            println!("schema up to date");
        }
        Ok(ExitCode::SUCCESS)
    })
}
