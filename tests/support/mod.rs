//! Shared test harness: the Greenflash stand-in, the real bridge binary, provider signing.

#![allow(dead_code)]

pub mod bridge;
pub mod postgres;
pub mod sign;
pub mod standin;

pub const PRODUCT_ID: &str = "7f3c2a10-5b8e-4d6f-9a1b-2c3d4e5f6a7b";
pub const STRIPE_SECRET: &str = "whsec_e2e_0f9a8b7c6d5e4f3a";

/// The project's own files, so tests do not depend on the working directory.
pub fn repo_path(relative: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn fixture(relative: &str) -> Vec<u8> {
    let path = repo_path(&format!("tests/fixtures/{relative}"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
