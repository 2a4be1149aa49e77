//! The real `greenflash-bridge` binary, spawned on a random loopback port with a temporary
//! store, its log captured for assertions.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::standin::{API_KEY, Standin};
use super::{PRODUCT_ID, STRIPE_SECRET, repo_path};

pub struct Bridge {
    child: Child,
    pub url: String,
    log: Arc<Mutex<String>>,
}

/// How to start a bridge. `Default` serves the shipped mappings with Stripe's secret set.
#[derive(Clone)]
pub struct Setup {
    pub mappings: PathBuf,
    pub store: PathBuf,
    /// A store URL instead of the SQLite file `store` (PostgreSQL).
    pub store_url: Option<String>,
    pub envs: Vec<(String, String)>,
    pub args: Vec<String>,
}

impl Setup {
    pub fn new(store_dir: &Path, standin: &Standin) -> Self {
        Self {
            mappings: repo_path("mappings"),
            store: store_dir.join("bridge.db"),
            store_url: None,
            envs: vec![
                ("GREENFLASH_API_KEY".into(), API_KEY.into()),
                ("GREENFLASH_API_URL".into(), standin.base_url.clone()),
                ("GREENFLASH_PRODUCT_ID".into(), PRODUCT_ID.into()),
                ("STRIPE_WEBHOOK_SECRET".into(), STRIPE_SECRET.into()),
                // Quick retries so outage tests finish fast.
                ("BRIDGE_RETRY_BASE".into(), "100ms".into()),
                ("BRIDGE_RETRY_CAP".into(), "400ms".into()),
                ("BRIDGE_SHUTDOWN_GRACE".into(), "5s".into()),
            ],
            args: Vec::new(),
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.retain(|(k, _)| k != key);
        self.envs.push((key.into(), value.into()));
        self
    }

    pub fn without_env(mut self, key: &str) -> Self {
        self.envs.retain(|(k, _)| k != key);
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn store_url(&self) -> String {
        self.store_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.store.display()))
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_greenflash-bridge"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    /// Starts `serve` and waits until it listens.
    pub fn start(&self) -> Bridge {
        let mut cmd = self.command();
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--mappings")
            .arg(&self.mappings)
            .arg("--store")
            .arg(self.store_url())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn greenflash-bridge");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("Listening on http://") {
                    let addr = line[i + "Listening on ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_string();
                    let _ = tx.send(addr);
                }
                let mut log = shared.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(url) = rx.recv_timeout(Duration::from_millis(50)) {
                return Bridge { child, url, log };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "bridge exited with {status} before listening:\n{}",
                    log.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "bridge did not start:\n{}",
                log.lock().unwrap()
            );
        }
    }

    /// Runs `serve` expecting it to refuse to start; returns (exit code, log).
    pub fn start_failure(&self) -> (Option<i32>, String) {
        let mut cmd = self.command();
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--mappings")
            .arg(&self.mappings)
            .arg("--store")
            .arg(self.store_url())
            .args(&self.args);
        let out = cmd.output().expect("run greenflash-bridge");
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        (out.status.code(), text)
    }
}

impl Bridge {
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log once `done` holds for it; fails the test, showing the log, after `within`.
    pub fn wait_for_log(&self, within: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if done(&log) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "not logged within {within:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn webhook_url(&self, source: &str) -> String {
        format!("{}/webhooks/{source}", self.url)
    }

    /// SIGKILL: no chance to flush or drain anything.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "bridge did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
