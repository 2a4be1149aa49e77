//! `loadtest`: the project's load benchmark (issue #6). One command:
//!
//! ```sh
//! cargo build --release --workspace && target/release/loadtest
//! ```
//!
//! It starts a fast Greenflash sink and a bare actix-web server (this binary, re-executed), then
//! the release `greenflash-bridge` with a SQLite store on the real disk, and measures:
//! saturation throughput of the bare baseline and of the bridge (signed ~3.4 KB Stripe webhooks,
//! unique ids, durable acknowledgement), latency at a fixed rate, delivery throughput to the sink,
//! the bridge's RSS, and its start-up time. Requests are pre-built and sent over keep-alive
//! connections by a minimal HTTP/1.1 client, so the generator takes as little CPU as possible
//! from the server it shares the machine with.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const SECRET: &str = "whsec_loadtest_secret_0123456789";
const PRODUCT_ID: &str = "7f3c2a10-5b8e-4d6f-9a1b-2c3d4e5f6a7b";

struct Options {
    bridge: PathBuf,
    duration: Duration,
    rate: u64,
    connections: usize,
    store_dir: PathBuf,
    store_url: Option<String>,
    /// Instead of the phases: a fixed-rate run this long, watching memory and the queue.
    soak: Option<Duration>,
    /// Start the bridge on the SQLite store the last run left, instead of an empty one.
    keep_store: bool,
    /// The bridge's `RUST_LOG`. Quieter than the service's default (`info`, a line per
    /// webhook), so that the figures are the pipeline's; `--log info` measures the default.
    log: String,
}

fn options() -> Options {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut o = Options {
        bridge: root.join("target/release/greenflash-bridge"),
        duration: Duration::from_secs(10),
        rate: 2000,
        connections: 64,
        store_dir: root.join("target/loadtest"),
        store_url: None,
        soak: None,
        keep_store: false,
        log: "warn,greenflash_bridge::app=info".to_string(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--keep-store" {
            o.keep_store = true;
            i += 1;
            continue;
        }
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--bridge" => o.bridge = PathBuf::from(value),
            "--duration" => o.duration = Duration::from_secs(value.parse().unwrap_or(10)),
            "--rate" => o.rate = value.parse().unwrap_or(2000),
            "--connections" => o.connections = value.parse().unwrap_or(64),
            "--store" => o.store_url = Some(value),
            "--soak" => o.soak = Some(Duration::from_secs(value.parse().unwrap_or(600))),
            "--log" => o.log = value,
            other => {
                eprintln!(
                    "unknown option {other}; use --bridge PATH --duration SECS --rate N --connections N --store URL --soak SECS --log FILTER --keep-store"
                );
                std::process::exit(2);
            }
        }
        i += 2;
    }
    o
}

fn main() {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("serve-baseline") => serve_baseline(),
        Some("serve-sink") => serve_sink(),
        _ => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let o = options();
            match o.soak {
                Some(length) => runtime.block_on(soak(o, length)),
                None => runtime.block_on(run(o)),
            }
        }
    }
}

/// The bare baseline: read the body, answer 204.
fn serve_baseline() {
    actix_web::rt::System::new().block_on(async {
        let server = actix_web::HttpServer::new(|| {
            actix_web::App::new().route(
                "/webhooks/{source}",
                actix_web::web::post().to(|_body: actix_web::web::Bytes| async {
                    actix_web::HttpResponse::NoContent().finish()
                }),
            )
        })
        .bind("127.0.0.1:0")
        .expect("bind");
        println!("{}", server.addrs()[0]);
        server.run().await.expect("baseline server");
    });
}

/// A Greenflash that accepts everything and counts, reachable at `GET /count`. `POST /hold`
/// makes it hold every answer until `POST /release`, so that a backlog builds up in the bridge
/// and its drain can be timed.
fn serve_sink() {
    actix_web::rt::System::new().block_on(async {
        let count = actix_web::web::Data::new(AtomicU64::new(0));
        let (gate, _) = tokio::sync::watch::channel(false);
        let gate = actix_web::web::Data::new(gate);
        type Gate = actix_web::web::Data<tokio::sync::watch::Sender<bool>>;
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(count.clone())
                .app_data(gate.clone())
                .route(
                    "/api/v1/events",
                    actix_web::web::post().to(|_b: actix_web::web::Bytes, c: actix_web::web::Data<AtomicU64>, gate: Gate| async move {
                        let _ = gate.subscribe().wait_for(|held| !held).await;
                        c.fetch_add(1, Ordering::Relaxed);
                        actix_web::HttpResponse::Ok().body(r#"{"success":true,"eventId":"00000000-0000-0000-0000-000000000000"}"#)
                    }),
                )
                .route(
                    "/count",
                    actix_web::web::get().to(|c: actix_web::web::Data<AtomicU64>| async move {
                        actix_web::HttpResponse::Ok().body(c.load(Ordering::Relaxed).to_string())
                    }),
                )
                .route(
                    "/{switch}",
                    actix_web::web::post().to(|switch: actix_web::web::Path<String>, gate: Gate| async move {
                        gate.send_replace(switch.as_str() == "hold");
                        actix_web::HttpResponse::NoContent().finish()
                    }),
                )
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .expect("bind");
        println!("{}", server.addrs()[0]);
        server.run().await.expect("sink server");
    });
}

/// Starts this binary in a helper mode and reads the address it prints.
async fn helper(mode: &str) -> (Child, String) {
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .arg(mode)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn helper");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stdout.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    (child, String::from_utf8_lossy(&line).trim().to_string())
}

async fn start_bridge(o: &Options, sink: &str) -> (Child, String, Duration) {
    if !o.keep_store {
        let _ = std::fs::remove_dir_all(&o.store_dir);
        // Freeing the last run's store (hundreds of MB) is written out by the file system's
        // next journal commit; on a disk mounted with `discard` (this project's machine) it
        // also trims every freed block, and the disk stalled 70-200 ms while it did, a second
        // or two into the run. `sync` waits for that before anything is measured.
        let _ = std::process::Command::new("sync").status();
    }
    std::fs::create_dir_all(&o.store_dir).expect("store dir");
    let store = o
        .store_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", o.store_dir.join("bridge.db").display()));
    let mappings = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mappings");
    let started = Instant::now();
    let mut child = Command::new(&o.bridge)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            &store,
            "--mappings",
        ])
        .arg(&mappings)
        .env("GREENFLASH_API_KEY", "loadtest")
        .env("GREENFLASH_API_URL", format!("http://{sink}/api/v1"))
        .env("GREENFLASH_PRODUCT_ID", PRODUCT_ID)
        .env("STRIPE_WEBHOOK_SECRET", SECRET)
        .env("RUST_LOG", &o.log)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e} (run `cargo build --release` first)",
                o.bridge.display()
            )
        });
    let mut stderr = child.stderr.take().expect("stderr");
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    let addr = loop {
        let n = stderr.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            panic!("bridge exited: {text}");
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        if let Some(i) = text.find("Listening on http://") {
            // Text logs end the address with a space, JSON logs with a quote.
            break text[i + 20..]
                .split(|c: char| c.is_whitespace() || c == '"')
                .next()
                .unwrap_or("")
                .to_string();
        }
    };
    let ready_in = started.elapsed();
    // Keep draining the log so the bridge never blocks on a full pipe.
    tokio::spawn(async move { while stderr.read(&mut buf).await.is_ok_and(|n| n > 0) {} });
    (child, addr, ready_in)
}

/// Pre-built requests: unique event ids, each signed the way Stripe signs.
fn build_requests(count: usize, addr: &str) -> Vec<Vec<u8>> {
    let signer = Signer::new(addr);
    let now = unix_now();
    (0..count)
        .map(|i| signer.request(&stripe_like_id(now, i as u64), now))
        .collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A unique event id that looks like Stripe's: `evt_` and 24 characters in no particular order,
/// so that the store's dedupe index takes keys as scattered as real ones (ids counting up would
/// all land on the index's last page).
fn stripe_like_id(run: u64, i: u64) -> String {
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    };
    let a = mix(run.wrapping_mul(0x9e3779b97f4a7c15) ^ i);
    format!("evt_{a:016x}{:08x}", i as u32)
}

/// Builds Stripe `invoice.paid` webhooks, signed as Stripe signs them.
struct Signer {
    template: serde_json::Value,
    addr: String,
}

impl Signer {
    fn new(addr: &str) -> Self {
        let template = serde_json::from_slice(include_bytes!(
            "../../tests/fixtures/stripe/invoice.paid.json"
        ))
        .expect("fixture");
        Self {
            template,
            addr: addr.to_string(),
        }
    }

    /// The whole HTTP request for event `id`, signed at `now` (Unix seconds).
    fn request(&self, id: &str, now: u64) -> Vec<u8> {
        let mut doc = self.template.clone();
        doc["id"] = serde_json::Value::String(id.to_string());
        let body = serde_json::to_vec(&doc).expect("json");
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
        mac.update(format!("{now}.").as_bytes());
        mac.update(&body);
        let sig = hex::encode(mac.finalize().into_bytes());
        let mut req = format!(
            "POST /webhooks/stripe HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nStripe-Signature: t={now},v1={sig}\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        req
    }
}

/// Sends one request on a keep-alive connection and reads the whole response; the status.
async fn roundtrip(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<u16> {
    stream.write_all(request).await?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            return Ok(status);
        }
    }
}

struct Outcome {
    sent: usize,
    ok: usize,
    elapsed: Duration,
    latency: Histogram<u64>,
    /// Requests slower than [`SLOW`]: when each started (since the phase began) and how long it took.
    slow: Vec<(Duration, Duration)>,
}

/// A request this slow is part of a stall worth locating in time.
const SLOW: Duration = Duration::from_millis(50);

/// What one connection counted: sent, answered 2xx, latencies, slow requests.
type Counted = (usize, usize, Histogram<u64>, Vec<(Duration, Duration)>);
type Connection = tokio::task::JoinHandle<Counted>;

/// Adds up what each connection counted and measured.
async fn combine(tasks: Vec<Connection>, started: Instant) -> Outcome {
    let mut outcome = Outcome {
        sent: 0,
        ok: 0,
        elapsed: Duration::ZERO,
        latency: Histogram::new(3).expect("histogram"),
        slow: Vec::new(),
    };
    for t in tasks {
        if let Ok((sent, ok, h, slow)) = t.await {
            outcome.sent += sent;
            outcome.ok += ok;
            let _ = outcome.latency.add(&h);
            outcome.slow.extend(slow);
        }
    }
    outcome.slow.sort();
    outcome.elapsed = started.elapsed();
    outcome
}

/// Closed loop: `connections` connections send back to back, from request `first` on, until
/// the time or requests run out.
async fn saturate(
    addr: &str,
    requests: Arc<Vec<Vec<u8>>>,
    first: usize,
    connections: usize,
    duration: Duration,
) -> Outcome {
    let next = Arc::new(AtomicUsize::new(first));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (addr, requests, next) = (addr.to_string(), requests.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            let mut ok = 0;
            let mut sent = 0;
            let Ok(mut stream) = TcpStream::connect(&addr).await else {
                return (sent, ok, h, Vec::new());
            };
            let _ = stream.set_nodelay(true);
            let mut buf = Vec::with_capacity(1024);
            while started.elapsed() < duration {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(request) = requests.get(i) else {
                    break;
                };
                let t = Instant::now();
                sent += 1;
                match roundtrip(&mut stream, request, &mut buf).await {
                    Ok(status) if (200..300).contains(&status) => {
                        ok += 1;
                        let _ = h.record(t.elapsed().as_micros() as u64);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            (sent, ok, h, Vec::new())
        }));
    }
    combine(tasks, started).await
}

/// The `i`th request of a run, if there is one.
type Requests = Arc<dyn Fn(usize) -> Option<Vec<u8>> + Send + Sync>;

/// Open loop at a fixed rate. A request whose connection was still busy at its scheduled time
/// counts from that time, so a stall shows up in the percentiles instead of silently lowering
/// the rate (no coordinated omission); one sent on time counts from when it was sent.
async fn fixed_rate(addr: &str, requests: Requests, rate: u64, duration: Duration) -> Outcome {
    let connections = 32usize;
    let total = ((rate as f64) * duration.as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(connections as f64 / rate as f64);
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (addr, requests) = (addr.to_string(), requests.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            let (mut sent, mut ok, mut slow) = (0, 0, Vec::new());
            let Ok(mut stream) = TcpStream::connect(&addr).await else {
                return (sent, ok, h, slow);
            };
            let _ = stream.set_nodelay(true);
            let mut buf = Vec::with_capacity(1024);
            let offset = interval.mul_f64(c as f64 / connections as f64);
            let mut k = 0usize;
            loop {
                let i = k * connections + c;
                if i >= total {
                    break;
                }
                let scheduled = start + offset + interval * k as u32;
                // Busy past its slot: the bridge held the connection, so the wait counts.
                let behind = Instant::now() > scheduled;
                tokio::time::sleep_until(scheduled.into()).await;
                let Some(request) = requests(i) else {
                    break;
                };
                // Idle at its slot: tokio's timer wakes up to a millisecond late, which is the
                // generator's delay, not the bridge's; count from the actual send.
                let from = if behind { scheduled } else { Instant::now() };
                sent += 1;
                if let Ok(status) = roundtrip(&mut stream, &request, &mut buf).await
                    && (200..300).contains(&status)
                {
                    ok += 1;
                    let took = from.elapsed();
                    let _ = h.record(took.as_micros() as u64);
                    if took > SLOW {
                        slow.push((from.saturating_duration_since(start), took));
                    }
                }
                k += 1;
            }
            (sent, ok, h, slow)
        }));
    }
    combine(tasks, start).await
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit(')').next()?.split_whitespace().collect::<Vec<_>>();
            Some((rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?) / ticks)
        })
        .unwrap_or(0.0)
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Samples the bridge's RSS every 100 ms until stopped; returns the peak.
fn watch_rss(pid: u32) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let peak = Arc::new(AtomicU64::new(0));
    let p = peak.clone();
    let handle = tokio::spawn(async move {
        loop {
            let kb = (rss_mb(pid) * 1024.0) as u64;
            p.fetch_max(kb, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (peak, handle)
}

async fn sink_count(sink: &str) -> u64 {
    let text = request_text(sink, "GET /count").await;
    text.rsplit("\r\n\r\n")
        .next()
        .and_then(|b| b.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits (up to two minutes) until the sink has counted `events`; whether it did.
async fn wait_for_sink(sink: &str, events: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    while sink_count(sink).await < events {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Holds (`true`) or releases the sink's answers.
async fn sink_hold(sink: &str, hold: bool) {
    let switch = if hold { "POST /hold" } else { "POST /release" };
    request_text(sink, switch).await;
}

/// Sends `method_path` to `addr` without a body; the whole response as text (empty when it
/// fails).
async fn request_text(addr: &str, method_path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return String::new();
    };
    let mut buf = Vec::new();
    let req = format!("{method_path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
    if roundtrip(&mut s, req.as_bytes(), &mut buf).await.is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn line(name: &str, o: &Outcome) {
    let rps = o.ok as f64 / o.elapsed.as_secs_f64();
    let q = |p: f64| o.latency.value_at_quantile(p) as f64 / 1000.0;
    println!(
        "{name:<34} {rps:>9.0}/s  ok {:>7}/{:<7}  p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms",
        o.ok,
        o.sent,
        q(0.5),
        q(0.9),
        q(0.99),
        o.latency.max() as f64 / 1000.0
    );
}

/// Where the slow requests of a phase fell in time: bursts separated by a second or more.
fn report_stalls(o: &Outcome) {
    let mut bursts: Vec<(Duration, usize, Duration)> = Vec::new();
    for &(at, took) in &o.slow {
        match bursts.last_mut() {
            Some((start, n, worst)) if at < *start + Duration::from_secs(1) => {
                *n += 1;
                *worst = (*worst).max(took);
            }
            _ => bursts.push((at, 1, took)),
        }
    }
    for (at, n, worst) in bursts {
        println!(
            "{:<34} stall at {:.2} s: {n} requests over {} ms, the worst {:.0} ms",
            "",
            at.as_secs_f64(),
            SLOW.as_millis(),
            worst.as_secs_f64() * 1000.0
        );
    }
}

/// The machine the figures come from.
fn print_machine() {
    println!(
        "machine: {} cores; {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
}

async fn run(o: Options) {
    print_machine();
    println!(
        "duration {} s per phase, {} connections at saturation, fixed rate {}/s\n",
        o.duration.as_secs(),
        o.connections,
        o.rate
    );
    let (_sink_child, sink) = helper("serve-sink").await;
    let (baseline_child, baseline) = helper("serve-baseline").await;

    let pool = 30_000 * o.duration.as_secs() as usize;
    let requests = Arc::new(build_requests(pool, "127.0.0.1"));
    let size = requests[0].len();
    println!("pre-built {pool} signed webhooks of {size} bytes (request with headers)\n");

    let base = saturate(&baseline, requests.clone(), 0, o.connections, o.duration).await;
    line("bare actix-web, saturation", &base);
    drop(baseline_child);

    let (bridge, addr, ready_in) = start_bridge(&o, &sink).await;
    let pid = bridge.id().unwrap_or(0);
    println!(
        "bridge ready to accept in {:.0} ms",
        ready_in.as_secs_f64() * 1000.0
    );
    let (peak, rss_task) = watch_rss(pid);
    let cpu_before = cpu_seconds(pid);
    let metrics_before = scrape(&addr).await;
    let sat = saturate(&addr, requests.clone(), 0, o.connections, o.duration).await;
    // Counted as intake ends, before anything else this phase reports.
    let during_intake = sink_count(&sink).await;
    let cpu = cpu_seconds(pid) - cpu_before;
    let during = scrape(&addr).await.since(&metrics_before);
    line("bridge, saturation (durable acks)", &sat);
    println!(
        "{:<34} bridge CPU {:.1} s = {:.0} µs per accepted webhook",
        "",
        cpu,
        cpu * 1e6 / sat.ok.max(1) as f64
    );
    report_bridge_time(&during, sat.elapsed);
    let ratio =
        (sat.ok as f64 / sat.elapsed.as_secs_f64()) / (base.ok as f64 / base.elapsed.as_secs_f64());
    println!("{:<34} {:>8.1}% of the bare baseline", "", ratio * 100.0);

    // Delivery at the same time: what reached the sink while intake ran flat out.
    let accepted = sat.ok as u64;
    let t = Instant::now();
    let all_delivered = wait_for_sink(&sink, accepted).await;
    println!(
        "{:<34} {} of {} accepted events delivered while intake ran; {}",
        "delivery during intake",
        during_intake,
        accepted,
        if all_delivered {
            format!("all {:.1} s after", t.elapsed().as_secs_f64())
        } else {
            "not all within 120 s after".into()
        }
    );

    let first = sat.sent.min(requests.len());
    let rest: Requests = Arc::new({
        let requests = requests.clone();
        move |i| requests.get(first + i).cloned()
    });
    let metrics_before = scrape(&addr).await;
    let cpu_before = cpu_seconds(pid);
    let fixed = fixed_rate(&addr, rest, o.rate, o.duration).await;
    let cpu = cpu_seconds(pid) - cpu_before;
    let during = scrape(&addr).await.since(&metrics_before);
    line(&format!("bridge, fixed {}/s", o.rate), &fixed);
    report_stalls(&fixed);
    // At a rate the bridge keeps up with, this is the whole cost of a webhook: intake, store
    // and delivery (the backlog stays near zero).
    println!(
        "{:<34} bridge CPU {:.1} s = {:.0} µs per webhook, delivery included",
        "",
        cpu,
        cpu * 1e6 / fixed.ok.max(1) as f64
    );
    report_bridge_time(&during, fixed.elapsed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total_delivered = sink_count(&sink).await;
    let accepted = accepted + fixed.ok as u64;
    println!(
        "{:<34} {} accepted in total, {} delivered, backlog {}",
        "queue after the fixed-rate run",
        accepted,
        total_delivered,
        accepted.saturating_sub(total_delivered)
    );
    wait_for_sink(&sink, accepted).await;

    // Delivery from a backlog: the sink holds its answers while intake runs flat out, then
    // lets go; how fast the bridge empties its queue (mostly events it finds in the store,
    // beyond what it holds in memory).
    sink_hold(&sink, true).await;
    let next = first + fixed.sent;
    let backlog = saturate(&addr, requests.clone(), next, o.connections, o.duration / 2).await;
    let accepted = accepted + backlog.ok as u64;
    let before = sink_count(&sink).await;
    let t = Instant::now();
    sink_hold(&sink, false).await;
    let all_delivered = wait_for_sink(&sink, accepted).await;
    let drained = sink_count(&sink).await - before;
    println!(
        "{:<34} {:>9.0}/s  ({drained} events delivered from a backlog of {}{})",
        "delivery, draining a backlog",
        drained as f64 / t.elapsed().as_secs_f64(),
        accepted - before,
        if all_delivered {
            ""
        } else {
            "; not all within 120 s"
        }
    );
    rss_task.abort();
    println!(
        "{:<34} {:>8.1} MB peak RSS of the bridge",
        "",
        peak.load(Ordering::Relaxed) as f64 / 1024.0
    );
    drop(bridge);
}

/// Where a phase's time went inside the bridge, from its own histograms.
fn report_bridge_time(during: &Histograms, elapsed: Duration) {
    let requests = "bridge_request_duration_seconds";
    println!(
        "{:<34} in the bridge {:.2} ms per webhook, {:.0} over {} ms",
        "",
        during.mean(requests) * 1000.0,
        during.slower_than(requests, SLOW),
        SLOW.as_millis(),
    );
    // The rest describes the SQLite writer; PostgreSQL has none.
    let commits = during.count("bridge_store_commit_seconds");
    if commits <= 0.0 {
        return;
    }
    let commit = "bridge_store_commit_seconds";
    println!(
        "{:<34} store: {:.1} operations per commit, {:.2} ms per commit, {:.0} over {} ms",
        "",
        during.mean("bridge_store_batch_jobs"),
        during.mean(commit) * 1000.0,
        during.slower_than(commit, SLOW),
        SLOW.as_millis(),
    );
    // How close the single writer is to saturation: commits queue behind each other once it is
    // busy most of the time, and that queueing is latency the disk alone does not explain.
    println!(
        "{:<34} {:.0} commits/s, the writer busy {:.0}% of the time",
        "",
        commits / elapsed.as_secs_f64(),
        during.sum("bridge_store_commit_seconds") / elapsed.as_secs_f64() * 100.0,
    );
    let checkpoints = |by: &str| {
        let labels = format!("{{by=\"{by}\"}}");
        let (count, sum) = during.labelled("bridge_store_checkpoint_seconds", &labels);
        (count, sum * 1000.0 / count.max(1.0))
    };
    let (writer, writer_ms) = checkpoints("writer");
    let (background, background_ms) = checkpoints("background");
    let slow = during.slower_than("bridge_store_checkpoint_seconds", SLOW);
    println!(
        "{:<34} WAL checkpoints: {writer:.0} by the writer ({writer_ms:.1} ms each), {background:.0} in the background ({background_ms:.1} ms each), {slow:.0} over {} ms",
        "",
        SLOW.as_millis(),
    );
}

/// Sums and counts of the bridge's histograms, from `/metrics`.
#[derive(Default)]
struct Histograms(std::collections::HashMap<String, f64>);

impl Histograms {
    fn since(mut self, before: &Histograms) -> Histograms {
        for (k, v) in self.0.iter_mut() {
            *v -= before.0.get(k).copied().unwrap_or(0.0);
        }
        self
    }

    /// The mean of a histogram over all its label sets.
    fn mean(&self, name: &str) -> f64 {
        self.sum(name) / self.count(name).max(1.0)
    }

    /// The sum of a histogram's observations over all its label sets.
    fn sum(&self, name: &str) -> f64 {
        self.total(name, "_sum")
    }

    /// How many observations a histogram has over all its label sets.
    fn count(&self, name: &str) -> f64 {
        self.total(name, "_count")
    }

    /// Count and sum of a histogram for one label set, written as `/metrics` writes it.
    fn labelled(&self, name: &str, labels: &str) -> (f64, f64) {
        let get = |suffix: &str| {
            self.0
                .get(&format!("{name}{suffix}{labels}"))
                .copied()
                .unwrap_or(0.0)
        };
        (get("_count"), get("_sum"))
    }

    /// How many observations of a histogram, over all its label sets, took longer than
    /// `bound`, which must be one of the bridge's bucket bounds (50 ms is).
    fn slower_than(&self, name: &str, bound: Duration) -> f64 {
        let bucket = format!("{name}_bucket{{");
        let le = format!("le=\"{}\"", bound.as_secs_f64());
        let at_most: f64 = self
            .0
            .iter()
            .filter(|(k, _)| k.starts_with(&bucket) && k.contains(&le))
            .map(|(_, v)| v)
            .sum();
        self.count(name) - at_most
    }

    fn total(&self, name: &str, suffix: &str) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| {
                k.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(suffix))
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

async fn scrape(addr: &str) -> Histograms {
    let mut found = Histograms::default();
    for l in request_text(addr, "GET /metrics").await.lines() {
        if let Some((key, value)) = l.rsplit_once(' ')
            && (key.contains("_sum") || key.contains("_count") || key.contains("_bucket"))
            && let Ok(v) = value.parse::<f64>()
        {
            found.0.insert(key.to_string(), v);
        }
    }
    found
}

/// `--soak SECS`: the bridge at a fixed rate for a long run, with webhooks signed as they are
/// sent (a pre-built pool would go stale under Stripe's five-minute tolerance). Prints the
/// bridge's RSS and the delivery backlog every minute, so growth shows.
async fn soak(o: Options, length: Duration) {
    print_machine();
    println!("soak: {} s at {}/s\n", length.as_secs(), o.rate);
    let (_sink_child, sink) = helper("serve-sink").await;
    let (bridge, addr, _) = start_bridge(&o, &sink).await;
    let pid = bridge.id().unwrap_or(0);
    let signer = Arc::new(Signer::new(&addr));
    let run = unix_now() % 1_000_000;
    let requests: Requests =
        Arc::new(move |i| Some(signer.request(&stripe_like_id(run, i as u64), unix_now())));
    let metrics_before = scrape(&addr).await;
    let started = Instant::now();
    let mut load = tokio::spawn({
        let addr = addr.clone();
        async move { fixed_rate(&addr, requests, o.rate, length).await }
    });
    let (peak, rss_task) = watch_rss(pid);
    let mut first_minute = None;
    let outcome = loop {
        tokio::select! {
            done = &mut load => break done,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        let rss = rss_mb(pid);
        first_minute.get_or_insert(rss);
        let delivered = sink_count(&sink).await;
        let expected = (started.elapsed().as_secs_f64() * o.rate as f64) as u64;
        println!(
            "{:>5.0} s   RSS {:>6.1} MB   delivered {:>8}   ~{:>6} behind the rate",
            started.elapsed().as_secs_f64(),
            rss,
            delivered,
            expected.saturating_sub(delivered)
        );
    };
    let Ok(outcome) = outcome else {
        return;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    line(&format!("bridge, fixed {}/s, soak", o.rate), &outcome);
    report_stalls(&outcome);
    report_bridge_time(&scrape(&addr).await.since(&metrics_before), outcome.elapsed);
    let delivered = sink_count(&sink).await;
    println!(
        "{:<34} {} accepted, {} delivered, backlog {}",
        "queue at the end",
        outcome.ok,
        delivered,
        (outcome.ok as u64).saturating_sub(delivered)
    );
    // The peak is sampled; the reading at the end may be above the last sample.
    let end = rss_mb(pid);
    let peak = end.max(peak.load(Ordering::Relaxed) as f64 / 1024.0);
    let first = first_minute.map_or(String::new(), |mb| {
        format!("after the first minute {mb:.1} MB, ")
    });
    println!(
        "{:<34} RSS {first}at the end {end:.1} MB, peak {peak:.1} MB",
        ""
    );
    rss_task.abort();
    drop(bridge);
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default()
}
