//! `serve`: load the mappings, open the store, start delivery and the HTTP server, and stop
//! them in order.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use tokio::sync::watch;

use crate::deliver::{DeliveryConfig, Dispatcher, GreenflashClient, Sink};
use crate::greenflash::is_uuid;
use crate::intake::{Intake, Sources};
use crate::mapping::{Diagnostic, load_dir};
use crate::reload::{self, ReloadPolicy};
use crate::server::{AppState, routes};
use crate::store::{self, StoreError};
use crate::telemetry;
use crate::verify::Secret;

/// The productId a dry run uses when `GREENFLASH_PRODUCT_ID` is not set.
pub const DRY_RUN_PRODUCT_ID: &str = "00000000-0000-0000-0000-000000000000";

/// Everything `serve` is configured with (flags and environment, resolved by the CLI).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: String,
    pub mappings: PathBuf,
    pub store: String,
    pub max_body: usize,
    pub dry_run: bool,
    pub public_url: Option<String>,
    pub api_url: String,
    pub api_key: Option<Secret>,
    pub product_id: Option<String>,
    pub delivery: DeliveryConfig,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Watch the mappings directory for changes (SIGHUP reloads either way).
    pub watch_mappings: bool,
    /// `BRIDGE_ADMIN_TOKEN`: enables `/admin/…` behind `Authorization: Bearer`.
    pub admin_token: Option<Secret>,
    /// Delivered and ignored events and their raw bodies are pruned after this age.
    pub retention: Duration,
    /// How often retention runs.
    pub prune_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "GREENFLASH_API_KEY is not set: set it to deliver events, or run `serve --dry-run` to log them instead"
    )]
    NoApiKey,
    #[error("GREENFLASH_PRODUCT_ID {0:?} is not a UUID")]
    BadProductId(String),
    #[error("GREENFLASH_PRODUCT_ID is not set and source {0:?} has rules without product_id")]
    NoProductId(String),
    #[error("the mappings in {dir} are invalid:\n{}", list(.diagnostics))]
    Mappings {
        dir: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot build the Greenflash client: {0}")]
    Client(#[from] crate::deliver::ClientError),
}

fn list(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A started service; `run` drives it until SIGTERM or SIGINT.
pub struct Application {
    addr: SocketAddr,
    server: actix_web::dev::Server,
    dispatcher: tokio::task::JoinHandle<()>,
    stop_delivery: watch::Sender<bool>,
    shutdown_grace: Duration,
}

impl Application {
    /// Validates the configuration and starts every part, or says what is wrong.
    pub async fn build(
        config: ServeConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, StartError> {
        let sink = match (&config.api_key, config.dry_run) {
            (_, true) => Sink::DryRun,
            (Some(key), false) => Sink::Greenflash(GreenflashClient::new(
                &config.api_url,
                key,
                config.request_timeout,
            )?),
            (None, false) => return Err(StartError::NoApiKey),
        };
        if let Some(id) = &config.product_id
            && !is_uuid(id)
        {
            return Err(StartError::BadProductId(id.clone()));
        }
        let loaded = load_dir(&config.mappings).map_err(|diagnostics| StartError::Mappings {
            dir: config.mappings.clone(),
            diagnostics,
        })?;
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        let mut product_id = config.product_id.clone();
        if product_id.is_none() && config.dry_run {
            // Nothing reaches Greenflash in a dry run, so a placeholder lets a newcomer see
            // the mapped events before having a product.
            tracing::warn!(
                "GREENFLASH_PRODUCT_ID is not set; dry run uses the placeholder {DRY_RUN_PRODUCT_ID}."
            );
            product_id = Some(DRY_RUN_PRODUCT_ID.to_string());
        }
        if product_id.is_none()
            && let Some(source) = loaded
                .catalog
                .sources
                .values()
                .find(|s| !s.sets_product_id_everywhere())
        {
            return Err(StartError::NoProductId(source.name.clone()));
        }
        let product_id_set = product_id.is_some();
        let sources = Sources::new(loaded.catalog, env);
        for (name, missing) in sources.disabled() {
            tracing::error!(source = name, variable = %missing.var, "Source disabled: its secret variable is not set; its endpoint answers 503.");
        }

        let store = store::open(&config.store).await?;
        let recovered = store.recover().await?;
        if recovered > 0 {
            tracing::info!(
                events = recovered,
                "Resuming deliveries interrupted by the last stop."
            );
        }
        let dispatcher = Dispatcher::new(store.clone(), sink, config.delivery.clone());
        let intake = Arc::new(Intake::new(
            sources,
            store.clone(),
            dispatcher.handoff(),
            product_id.clone(),
        ));
        let version = intake.sources().catalog.version.clone();

        let (stop_delivery, stopped) = watch::channel(false);
        let delivery = dispatcher.health();
        let grace = config.shutdown_grace;
        let dispatcher = tokio::spawn(dispatcher.run(stopped, grace));

        let listener = TcpListener::bind(&config.listen).map_err(|source| StartError::Listen {
            addr: config.listen.clone(),
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.listen.clone(),
            source,
        })?;
        let metrics = telemetry::install();
        if let Some(handle) = &metrics {
            tokio::spawn(telemetry::upkeep(handle.clone()));
            tokio::spawn(report_queue(store.clone()));
        }
        telemetry::mappings_version(&version, &version);
        let reload_policy = Arc::new(ReloadPolicy {
            dir: config.mappings.clone(),
            has_default_product_id: product_id_set,
            watch: config.watch_mappings,
        });
        tokio::spawn(reload::run(intake.clone(), reload_policy.clone()));
        tokio::spawn(retention(
            store.clone(),
            config.retention,
            config.prune_interval,
        ));
        let state = web::Data::new(AppState {
            intake,
            store,
            delivery,
            metrics,
            max_body: config.max_body,
            public_url: config.public_url.clone(),
            admin_token: config.admin_token.clone(),
            default_product_id: product_id,
            reload: reload_policy,
        });
        let server = HttpServer::new(move || App::new().app_data(state.clone()).configure(routes))
            // Signals are ours: SIGINT must drain too, not only SIGTERM (actix forces on SIGINT).
            .disable_signals()
            .shutdown_timeout(config.shutdown_grace.as_secs().max(1))
            .listen(listener)
            .map_err(|source| StartError::Listen {
                addr: config.listen.clone(),
                source,
            })?
            .run();
        tracing::info!(%addr, mappings_version = %version, dry_run = config.dry_run, "Listening on http://{addr}");
        Ok(Self {
            addr,
            server,
            dispatcher,
            stop_delivery,
            shutdown_grace: config.shutdown_grace,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until SIGTERM or SIGINT, then stops accepting, lets in-flight requests finish,
    /// and gives in-flight deliveries the grace period before returning.
    pub async fn run(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let server = tokio::spawn(self.server);
        shutdown_signal().await;
        tracing::info!("Shutting down: no new webhooks; finishing in-flight work.");
        handle.stop(true).await;
        let _ = server.await;
        let _ = self.stop_delivery.send(true);
        let _ = tokio::time::timeout(
            self.shutdown_grace + Duration::from_secs(1),
            self.dispatcher,
        )
        .await;
        tracing::info!("Stopped.");
        Ok(())
    }
}

/// Prunes what retention allows, periodically.
async fn retention(store: Arc<dyn store::Store>, keep: Duration, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let before = store::now_ms() - i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        match store.prune(before).await {
            Ok(report) if report != store::PruneReport::default() => {
                tracing::info!(
                    outbox_events = report.outbox_events,
                    provider_events = report.provider_events,
                    webhooks = report.webhooks,
                    "Retention pruned old rows."
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "Retention could not prune; will try again."),
        }
    }
}

/// Keeps the queue gauges current.
async fn report_queue(store: Arc<dyn store::Store>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        if let Ok(stats) = store.stats().await {
            let age = stats
                .oldest_pending_ms
                .map(|at| Duration::from_millis(u64::try_from(store::now_ms() - at).unwrap_or(0)))
                .unwrap_or_default();
            telemetry::queue(stats.pending, age, stats.dead);
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can still be killed; wait forever.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
