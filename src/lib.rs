//! greenflash-bridge: provider webhooks in, Greenflash business events out.
//!
//! The pipeline, top to bottom: `server` receives a webhook and hands it to `intake`, which
//! runs the stages — `verify` (signature on the raw bytes), `mapping` (TOML rules → events),
//! `store` (one durable transaction) — before the provider gets its 2xx; `deliver` then
//! forwards stored events to Greenflash with retries. `greenflash` and `inbound` hold the
//! domain types everything else shares.
#![forbid(unsafe_code)]

pub mod app;
pub mod deliver;
pub mod fixtures;
pub mod greenflash;
pub mod inbound;
pub mod intake;
pub mod mapping;
pub mod reload;
pub mod replay;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod units;
pub mod verify;
