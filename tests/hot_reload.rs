//! Hot reload on the running binary: a valid edit takes effect for the next request, an
//! invalid one is refused with its diagnostics while the last good mappings keep serving.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::bridge::Setup;
use support::standin::Standin;
use support::{invoice_paid, post_stripe, repo_path};

const WAIT: Duration = Duration::from_secs(20);

async fn send(base: &str, id: &str) -> u16 {
    post_stripe(&reqwest::Client::new(), base, &invoice_paid(id))
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn version(base: &str) -> String {
    let ready: Value = reqwest::get(format!("{base}/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ready["mappings_version"].as_str().unwrap().to_string()
}

async fn wait_for_version_change(base: &str, from: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = version(base).await;
        if now != from {
            return now;
        }
        assert!(Instant::now() < deadline, "mappings were not reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn edits_take_effect_and_broken_edits_are_refused() {
    let standin = Standin::start();
    let dir = tempfile::tempdir().unwrap();
    let maps = dir.path().join("mappings");
    std::fs::create_dir_all(&maps).unwrap();
    let original = std::fs::read_to_string(repo_path("mappings/stripe.toml")).unwrap();
    std::fs::write(maps.join("stripe.toml"), &original).unwrap();
    let mut setup = Setup::new(dir.path(), &standin);
    setup.mappings = maps.clone();
    let bridge = setup.start();

    assert_eq!(send(&bridge.url, "evt_reload_1").await, 200);
    let first = standin.wait_for_accepted(1, WAIT);
    assert_eq!(first[0]["eventType"], "invoice_paid");

    // A valid edit, saved the way editors do: write elsewhere, rename over.
    let v1 = version(&bridge.url).await;
    let edited = original.replacen(
        "event_type = \"invoice_paid\"",
        "event_type = \"invoice_settled\"",
        1,
    );
    std::fs::write(dir.path().join("stripe.toml.tmp"), &edited).unwrap();
    std::fs::rename(dir.path().join("stripe.toml.tmp"), maps.join("stripe.toml")).unwrap();
    let v2 = wait_for_version_change(&bridge.url, &v1).await;
    assert_eq!(send(&bridge.url, "evt_reload_2").await, 200);
    let events = standin.wait_for_accepted(2, WAIT);
    assert_eq!(events[1]["eventType"], "invoice_settled");

    // A broken edit is refused; the last good mappings keep serving.
    std::fs::write(
        maps.join("stripe.toml"),
        edited.replacen("influence = \"positive\"", "influence = \"great\"", 1),
    )
    .unwrap();
    bridge.wait_for_log(WAIT, |log| log.contains("Mappings reload refused"));
    assert!(
        bridge
            .log()
            .contains("influence \\\"great\\\" is not valid")
            || bridge.log().contains("influence \"great\" is not valid"),
        "{}",
        bridge.log()
    );
    assert_eq!(version(&bridge.url).await, v2);
    assert_eq!(send(&bridge.url, "evt_reload_3").await, 200);
    let events = standin.wait_for_accepted(3, WAIT);
    assert_eq!(events[2]["eventType"], "invoice_settled");
}

#[tokio::test]
async fn sighup_reloads_too() {
    let standin = Standin::start();
    let dir = tempfile::tempdir().unwrap();
    let maps = dir.path().join("mappings");
    std::fs::create_dir_all(&maps).unwrap();
    let original = std::fs::read_to_string(repo_path("mappings/stripe.toml")).unwrap();
    std::fs::write(maps.join("stripe.toml"), &original).unwrap();
    // Without the watcher, only the signal can have reloaded.
    let mut setup = Setup::new(dir.path(), &standin).env("BRIDGE_WATCH_MAPPINGS", "false");
    setup.mappings = maps.clone();
    let bridge = setup.start();
    let v1 = version(&bridge.url).await;
    std::fs::write(
        maps.join("stripe.toml"),
        original.replacen("\"payment_failed\"", "\"payment_declined\"", 1),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        version(&bridge.url).await,
        v1,
        "no watcher, no reload before the signal"
    );
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &bridge.pid().to_string()])
        .status();
    let v2 = wait_for_version_change(&bridge.url, &v1).await;
    assert_ne!(v1, v2);
    bridge.wait_for_log(WAIT, |log| {
        log.contains("Mappings reloaded") && log.contains("SIGHUP")
    });
}
