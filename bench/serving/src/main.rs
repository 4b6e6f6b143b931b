//! `serving-load`: the load generator of `bench/serving/run.sh`.
//!
//! - `serving-load http --url URL --body FILE --concurrency C --seconds S`: C workers, each on
//!   its own keep-alive connection, POST the same Open Inference Protocol request back to back
//!   for S seconds (after a 1 s warm-up); prints one JSON line: requests, errors, throughput
//!   (requests/s), p50 / p99 / mean latency in ms.
//! - `serving-load tract --model FILE --body FILE --iterations N`: the model run in process by
//!   tract (capstan-serving's own runtime path: decoded inputs, one `Session::run`); prints
//!   p50 / p99 in ms. The overhead of `capstan serve` is its p50 minus this one.
//! - `serving-load serve --model FILE --name NAME --listen ADDR`: `capstan_serving::server::serve`,
//!   the server `capstan serve` runs (same routes, batching, metrics), in this lean binary
//!   (built without the object-store source) so the benchmark needs no release build of the
//!   whole platform.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use capstan_serving::model::OnnxModel;
use capstan_serving::tensor::{decode_input, RequestInput};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// HTTP load at a fixed concurrency.
    Http {
        /// Infer URL.
        #[arg(long)]
        url: String,
        /// Request body (JSON).
        #[arg(long)]
        body: String,
        /// Concurrent connections.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Measured seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// The model server of `capstan serve`.
    Serve {
        /// ONNX file.
        #[arg(long)]
        model: String,
        /// Model name.
        #[arg(long)]
        name: String,
        /// Listen address.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Most rows per batched run.
        #[arg(long, default_value_t = 64)]
        max_batch: usize,
        /// Batch delay for arriving requests (µs).
        #[arg(long, default_value_t = 500)]
        batch_delay_us: u64,
    },
    /// The model in process (tract).
    Tract {
        /// ONNX file.
        #[arg(long)]
        model: String,
        /// Request body whose inputs are run.
        #[arg(long)]
        body: String,
        /// Runs measured.
        #[arg(long, default_value_t = 5000)]
        iterations: usize,
    },
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn summary(mut lat_ms: Vec<f64>) -> Value {
    lat_ms.sort_by(|a, b| a.total_cmp(b));
    let mean = lat_ms.iter().sum::<f64>() / lat_ms.len().max(1) as f64;
    json!({"p50_ms": quantile(&lat_ms, 0.5), "p99_ms": quantile(&lat_ms, 0.99), "mean_ms": mean, "samples": lat_ms.len()})
}

async fn http(url: String, body: Vec<u8>, concurrency: usize, seconds: f64) -> Result<Value> {
    let warmup = Duration::from_secs(1);
    let measure = Duration::from_secs_f64(seconds);
    let start = Instant::now() + warmup;
    let end = start + measure;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        // One client per worker: its own keep-alive connection.
        let client = reqwest::Client::builder().pool_max_idle_per_host(1).build()?;
        let url = url.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let r = client.post(&url).header("content-type", "application/json").body(body.clone()).send().await;
                let ok = match r {
                    Ok(r) => {
                        let good = r.status().is_success();
                        let _ = r.bytes().await;
                        good
                    }
                    Err(_) => false,
                };
                let t1 = Instant::now();
                if t0 >= start && t1 <= end {
                    if ok {
                        lat.push((t1 - t0).as_secs_f64() * 1000.0);
                    } else {
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await?;
        all.extend(lat);
        errors += e;
    }
    let requests = all.len() as u64;
    let mut out = summary(all);
    out["requests"] = json!(requests);
    out["errors"] = json!(errors);
    out["throughput_rps"] = json!(requests as f64 / measure.as_secs_f64());
    out["concurrency"] = json!(concurrency);
    Ok(out)
}

fn tract(model: &str, body: &[u8], iterations: usize) -> Result<Value> {
    let bytes = std::fs::read(model).with_context(|| model.to_string())?;
    let model = OnnxModel::from_bytes(&bytes)?;
    let request: Value = serde_json::from_slice(body)?;
    let inputs: Vec<RequestInput> = serde_json::from_value(request["inputs"].clone())?;
    let tensors = inputs.iter().enumerate().map(|(i, x)| decode_input(i, x)).collect::<Result<Vec<_>, _>>();
    let tensors = match tensors {
        Ok(t) => t,
        Err(e) => bail!("{e}"),
    };
    let mut session = model.session()?;
    for _ in 0..iterations.min(500) {
        session.run(&tensors)?;
    }
    let mut lat = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t0 = Instant::now();
        session.run(&tensors)?;
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(summary(lat))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let out = match cli.command {
        Cmd::Http { url, body, concurrency, seconds } => {
            let body = std::fs::read(&body).with_context(|| body.clone())?;
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?.block_on(http(
                url,
                body,
                concurrency.max(1),
                seconds,
            ))?
        }
        Cmd::Serve { model, name, listen, max_batch, batch_delay_us } => {
            use capstan_serving::batch::BatchConfig;
            use capstan_serving::server::{serve, ServeConfig, DEFAULT_MAX_BODY_BYTES};
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen).await?;
                let config = ServeConfig {
                    name,
                    source: capstan_serving::source::ModelSource::Local(model.into()),
                    registry: None,
                    version: None,
                    listen,
                    batch: BatchConfig { max_batch, max_delay: Duration::from_micros(batch_delay_us) },
                    max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                };
                serve(config, listener, async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
                Ok::<_, anyhow::Error>(())
            })?;
            return Ok(());
        }
        Cmd::Tract { model, body, iterations } => {
            let body = std::fs::read(&body).with_context(|| body.clone())?;
            tract(&model, &body, iterations.max(1))?
        }
    };
    println!("{out}");
    Ok(())
}
