//! `greenflash-bridge send --source NAME [--to URL] FILE` — the local `stripe trigger`: sign a
//! payload exactly as the source's provider would and post it to a running bridge.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use greenflash_bridge::verify::Verifier;

use super::{MappingsArg, read_input};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    mappings: MappingsArg,
    /// The source (the `name` in a mapping file's [source] table).
    #[arg(long)]
    source: String,
    /// The running bridge.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    to: String,
    /// The payload file, or `-` for standard input.
    file: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let source = args.mappings.load_source(&args.source)?;
    let verifier = Verifier::from_spec(&source.verify, |var| std::env::var(var).ok())
        .with_context(|| format!("cannot sign for source {:?}", source.name))?;
    let body = read_input(&args.file)?;
    let is_json = serde_json::from_slice::<serde_json::Value>(&body).is_ok();
    let mut url = format!("{}/webhooks/{}", args.to.trim_end_matches('/'), source.name);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let signed = verifier.sign("POST", &url, &body, now);
    if let Some(query) = &signed.query {
        url = format!("{url}?{query}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, text) = runtime.block_on(async {
        let mut request = reqwest::Client::new()
            .post(&url)
            .header(
                "content-type",
                if is_json {
                    "application/json"
                } else {
                    "application/x-www-form-urlencoded"
                },
            )
            .body(body);
        for (name, value) in &signed.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("posting to {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        Ok::<_, anyhow::Error>((status, text))
    })?;
    println!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    println!("{text}");
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
