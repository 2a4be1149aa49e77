//! A fresh PostgreSQL database per test, from `BRIDGE_TEST_POSTGRES` (an admin URL such as
//! `postgres://postgres:postgres@127.0.0.1/postgres`). `.ci/run` installs and starts the server
//! and sets `BRIDGE_REQUIRE_POSTGRES=1`, so in CI a missing server fails the tests instead of
//! skipping them.

use tokio_postgres::NoTls;

/// The URL of a new, empty database, or `None` (test skipped) when no server is configured.
pub async fn fresh_database() -> Option<String> {
    let Ok(admin) = std::env::var("BRIDGE_TEST_POSTGRES") else {
        assert!(
            std::env::var("BRIDGE_REQUIRE_POSTGRES").is_err(),
            "BRIDGE_REQUIRE_POSTGRES is set but BRIDGE_TEST_POSTGRES is not"
        );
        eprintln!("skipped: set BRIDGE_TEST_POSTGRES to run the PostgreSQL variant");
        return None;
    };
    let (client, connection) = tokio_postgres::connect(&admin, NoTls)
        .await
        .expect("connect to BRIDGE_TEST_POSTGRES");
    tokio::spawn(connection);
    let name = format!("bridge_test_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    let (base, _) = admin.rsplit_once('/').expect("URL with a database");
    Some(format!("{base}/{name}"))
}
