//! `greenflash-bridge serve`

use std::process::ExitCode;
use std::time::Duration;

use greenflash_bridge::app::{Application, ServeConfig};
use greenflash_bridge::deliver::{DeliveryConfig, RetryPolicy};
use greenflash_bridge::units::{parse_bytes, parse_duration};
use greenflash_bridge::verify::Secret;

use super::MappingsArg;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "BRIDGE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    #[command(flatten)]
    mappings: MappingsArg,
    /// Where to store webhooks and events: sqlite://PATH.
    #[arg(long, env = "BRIDGE_STORE", default_value = "sqlite://data/bridge.db")]
    store: String,
    /// Log each event instead of sending it (no API key needed).
    #[arg(long)]
    dry_run: bool,
    /// Largest webhook body accepted; larger ones get 413.
    #[arg(long, env = "BRIDGE_MAX_BODY", default_value = "1MiB", value_parser = parse_bytes)]
    max_body: usize,
    /// The public base URL providers call (e.g. https://hooks.example.com), for schemes that
    /// sign the URL.
    #[arg(long, env = "BRIDGE_PUBLIC_URL")]
    public_url: Option<String>,
    /// Greenflash API key (required unless --dry-run).
    #[arg(long, env = "GREENFLASH_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[arg(
        long,
        env = "GREENFLASH_API_URL",
        default_value = "https://www.greenflash.ai/api/v1"
    )]
    api_url: String,
    /// The productId (UUID) for events whose mapping sets none.
    #[arg(long, env = "GREENFLASH_PRODUCT_ID")]
    product_id: Option<String>,
    /// Deliveries in flight at once.
    #[arg(long, env = "BRIDGE_DELIVERY_CONCURRENCY", default_value_t = 128)]
    delivery_concurrency: usize,
    /// Timeout of one delivery request.
    #[arg(long, env = "BRIDGE_DELIVERY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    delivery_timeout: Duration,
    /// How long a replica holds an event it is delivering before others may take it over
    /// (after a crash). Longer than the delivery timeout.
    #[arg(long, env = "BRIDGE_DELIVERY_LEASE", default_value = "60s", value_parser = parse_duration)]
    delivery_lease: Duration,
    /// First retry delay (then doubling, with full jitter).
    #[arg(long, env = "BRIDGE_RETRY_BASE", default_value = "1s", value_parser = parse_duration)]
    retry_base: Duration,
    /// Longest retry delay.
    #[arg(long, env = "BRIDGE_RETRY_CAP", default_value = "10m", value_parser = parse_duration)]
    retry_cap: Duration,
    /// Dead-letter an event still failing this long after it was accepted.
    #[arg(long, env = "BRIDGE_GIVE_UP_AFTER", default_value = "72h", value_parser = parse_duration)]
    give_up_after: Duration,
    /// Reload the mappings when files in the directory change (SIGHUP always reloads). Turn
    /// off where file events do not arrive, e.g. some network mounts.
    #[arg(long, env = "BRIDGE_WATCH_MAPPINGS", default_value_t = true, action = clap::ArgAction::Set)]
    watch_mappings: bool,
    /// Delivered and ignored events, and raw bodies with nothing left to do, are deleted after
    /// this age. Dedupe identities are kept as long.
    #[arg(long, env = "BRIDGE_RETENTION", default_value = "30d", value_parser = parse_duration)]
    retention: Duration,
    /// How often retention runs.
    #[arg(long, env = "BRIDGE_PRUNE_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    prune_interval: Duration,
    /// While Greenflash refuses our API key, how often one event is tried to see if it works again.
    #[arg(long, env = "BRIDGE_AUTH_PROBE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    auth_probe_interval: Duration,
    /// Enables the admin API (/admin/…), which then requires `Authorization: Bearer <token>`.
    #[arg(long, env = "BRIDGE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// How long shutdown waits for in-flight requests and deliveries.
    #[arg(long, env = "BRIDGE_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    shutdown_grace: Duration,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = ServeConfig {
        listen: args.listen,
        mappings: args.mappings.mappings,
        store: args.store,
        max_body: args.max_body,
        dry_run: args.dry_run,
        public_url: args.public_url,
        api_url: args.api_url,
        api_key: args.api_key.filter(|k| !k.is_empty()).map(Secret::new),
        product_id: args.product_id.filter(|p| !p.is_empty()),
        delivery: DeliveryConfig {
            concurrency: args.delivery_concurrency,
            auth_probe_interval: args.auth_probe_interval,
            lease: args
                .delivery_lease
                .max(args.delivery_timeout + Duration::from_secs(1)),
            retry: RetryPolicy {
                base: args.retry_base,
                cap: args.retry_cap,
                give_up_after: args.give_up_after,
            },
            ..DeliveryConfig::default()
        },
        request_timeout: args.delivery_timeout,
        shutdown_grace: args.shutdown_grace,
        watch_mappings: args.watch_mappings,
        admin_token: args.admin_token.filter(|t| !t.is_empty()).map(Secret::new),
        retention: args.retention,
        prune_interval: args.prune_interval,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = Application::build(config, |var| std::env::var(var).ok()).await?;
        app.run().await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
