//! `capstan serve`: one ONNX model over the Open Inference Protocol v2 (capstan-serving).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use capstan_serving::batch::BatchConfig;
use capstan_serving::server::{serve, ServeConfig, DEFAULT_MAX_BODY_BYTES};
use capstan_serving::source::{ModelSource, RegistryClient};
use clap::Args;

/// `capstan serve` options.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The model: a path to an .onnx file or a folder holding one, file://, s3://..., or a
    /// registered version (models:/NAME@ALIAS, models:/NAME/VERSION, models:/NAME/latest)
    /// resolved through --server (or MLFLOW_TRACKING_URI when it is an http(s) URL).
    #[arg(long)]
    model: String,
    /// Name the model is served under (/v2/models/NAME).
    #[arg(long)]
    name: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Version to report (default: the registry version, else 1).
    #[arg(long)]
    model_version: Option<String>,
    /// Most rows in one batched model run (1: no batching).
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Longest a batch waits, in microseconds, for requests already arriving (a lone
    /// request never waits).
    #[arg(long, default_value_t = 500)]
    batch_delay_us: u64,
    /// Largest request body in bytes (bigger: 413).
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
}

/// Runs the server until SIGTERM or SIGINT, then drains.
pub async fn run(args: ServeArgs, server: &str, token: Option<String>) -> Result<i32> {
    if args.name.is_empty() || args.name.contains('/') {
        bail!("--name '{}': must be non-empty and contain no '/'", args.name);
    }
    if args.max_batch == 0 {
        bail!("--max-batch must be at least 1");
    }
    let source = ModelSource::parse(&args.model)?;
    let registry = if matches!(source, ModelSource::Registry { .. }) {
        let base = std::env::var("MLFLOW_TRACKING_URI")
            .ok()
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .unwrap_or_else(|| server.to_string());
        let token = token.or_else(|| std::env::var("MLFLOW_TRACKING_TOKEN").ok().filter(|t| !t.is_empty()));
        Some(RegistryClient::new(&base, token)?)
    } else {
        None
    };
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    eprintln!("capstan serve: model '{}' from {} on http://{addr}", args.name, args.model);
    let config = ServeConfig {
        name: args.name,
        source,
        registry,
        version: args.model_version,
        listen: addr,
        batch: BatchConfig { max_batch: args.max_batch, max_delay: Duration::from_micros(args.batch_delay_us) },
        max_body_bytes: args.max_body_bytes,
    };
    serve(config, listener, shutdown_signal()).await?;
    eprintln!("capstan serve: stopped");
    Ok(0)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("capstan serve: draining");
}
