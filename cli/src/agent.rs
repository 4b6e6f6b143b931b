//! `capstan agent`: the node agent's GPU telemetry on a node of its own. It samples the
//! node's GPUs (NVML, or simulated with `--simulate-gpus`), judges their health, serves
//! Prometheus `/metrics` with dcgm-exporter's names (`--metrics-listen`), and pushes batches to
//! the server given by `--server`, keeping a bounded backlog while the server is away.
//!
//! Today the standalone controller schedules only on the machine `capstan up` runs on; a
//! remote `capstan agent` reports its GPUs, their health and readings (API, `/metrics`), and
//! does not run replicas yet.
//!
//! Also here: [`LocalSink`], through which `capstan up`'s embedded agent hands its batches to
//! the server in the same process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use capstan_agent::exporter::CONTENT_TYPE;
use capstan_agent::push::{Batch, HttpSink, PushFuture, PushReply, Sink};
use capstan_agent::telemetry::{self, Telemetry, TelemetryConfig};
use capstan_store::Store;
use clap::Args;
use tokio::sync::watch;

/// Options of `capstan agent`.
#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Simulated GPUs instead of the real ones: a count ("8") or count x product
    /// ("8xH100-80GB"); their readings, metrics and API entries say `simulated`.
    #[arg(long, env = "CAPSTAN_SIMULATE_GPUS")]
    simulate_gpus: Option<String>,
    /// Serve Prometheus /metrics on this address (dcgm-exporter's port is 9400). Off when not
    /// given.
    #[arg(long, env = "CAPSTAN_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Node name (default: the host name).
    #[arg(long, env = "CAPSTAN_NODE_NAME")]
    node_name: Option<String>,
    /// Folder for the agent's state (GPU health verdicts, and the simulated device plugin's
    /// grants with --kubernetes, survive restarts here).
    #[arg(long, env = "CAPSTAN_AGENT_DATA_DIR", default_value = ".capstan-agent")]
    data_dir: PathBuf,
    /// How often every GPU is read ("1s", "500ms", "2m").
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    sample_interval: Duration,
    /// How often a batch goes to the server.
    #[arg(long, default_value = "5s", value_parser = parse_interval)]
    push_interval: Duration,
    /// Window of the runs' system metrics (one averaged point per GPU per window).
    #[arg(long, default_value = "10s", value_parser = parse_interval)]
    system_metrics_interval: Duration,
    /// On Kubernetes: keep this node's GPU labels (GPU Feature Discovery's), unhealthy-GPU
    /// annotation, condition and taint current. Uses --kubeconfig, else the in-cluster
    /// service account; the node is --node-name.
    #[arg(long, env = "CAPSTAN_AGENT_KUBERNETES")]
    kubernetes: bool,
    /// Kubeconfig for --kubernetes (default: in-cluster, $KUBECONFIG, ~/.kube/config).
    #[arg(long, requires = "kubernetes")]
    kubeconfig: Option<PathBuf>,
    /// With --kubernetes: the kubelet's pod-resources socket, which says which pod got which
    /// GPU, simulated GPUs included (without it: NVML's processes and their cgroups; for
    /// simulated GPUs, a simulated device plugin).
    #[arg(long, env = "CAPSTAN_POD_RESOURCES_SOCKET", default_value = capstan_agent::attribution::podresources::KUBELET_SOCKET)]
    pod_resources_socket: PathBuf,
}

/// "1s", "500ms", "2m", "1h", or a bare number of seconds; 100 ms to 1 h.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(at) => (&t[..at], &t[at..]),
        None => (t, "s"),
    };
    let n: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 1s, 500ms or 2m"))?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    if !(100.0..=3_600_000.0).contains(&ms) {
        return Err(format!("{text:?} is out of range (100ms to 1h)"));
    }
    Ok(Duration::from_millis(ms as u64))
}

/// The host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Batches of the embedded agent, handed to the server's ingest in the same process.
pub struct LocalSink {
    store: Store,
}

impl LocalSink {
    /// A sink into `store`.
    pub fn new(store: Store) -> LocalSink {
        LocalSink { store }
    }
}

impl Sink for LocalSink {
    fn push<'a>(&'a self, batch: &'a Batch) -> PushFuture<'a> {
        Box::pin(async move {
            let value = serde_json::to_value(batch).map_err(|e| e.to_string())?;
            let reply = capstan_server::nodes::ingest(&self.store, &batch.node, &value)
                .await
                .map_err(|e| format!("HTTP {}: {}", e.status, e.body))?;
            serde_json::from_value::<PushReply>(reply).map_err(|e| e.to_string())
        })
    }
}

/// The exposition of `tel` as (content type, body), for `/metrics`.
pub fn metrics_of(tel: &Telemetry) -> (String, String) {
    (CONTENT_TYPE.to_string(), tel.render_metrics())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

/// `capstan agent`.
pub async fn run(args: AgentArgs, server: &str, token: Option<String>) -> Result<i32> {
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        bail!("--server {server:?}: expected an http:// URL");
    }
    let node = args.node_name.clone().filter(|n| !n.trim().is_empty()).unwrap_or_else(host_name);
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let config = TelemetryConfig {
        sample_interval: args.sample_interval,
        push_interval: args.push_interval,
        system_metrics_interval: args.system_metrics_interval,
        ..TelemetryConfig::default()
    };
    let tel = Arc::new(Telemetry::open(&node, args.simulate_gpus.as_deref(), &args.data_dir, config)?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics = match args.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--metrics-listen {addr}: cannot listen"))?;
            let bound = listener.local_addr()?;
            let t = tel.clone();
            let app = Router::new()
                .route(
                    "/metrics",
                    get(move || {
                        let t = t.clone();
                        async move {
                            let (content_type, body) = metrics_of(&t);
                            ([(header::CONTENT_TYPE, content_type)], body).into_response()
                        }
                    }),
                )
                .route("/healthz", get(|| async { "ok" }));
            let mut stop = stop_rx.clone();
            println!("Prometheus metrics at http://{bound}/metrics");
            Some(tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await
            }))
        }
        None => None,
    };
    println!(
        "capstan agent on {node}: {} GPUs ({:?}), sampling every {:?}, pushing to {server} every {:?}",
        tel.gpus().len(),
        tel.kind(),
        args.sample_interval,
        args.push_interval
    );
    let marker = if args.kubernetes {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let client = crate::controller::client(args.kubeconfig.as_ref()).await?;
        println!("marking Kubernetes node {node} with its GPUs' labels and health");
        Some(tokio::spawn(crate::node_marker::run(
            client,
            node.clone(),
            tel.clone(),
            crate::node_marker::Attributor::new(
                args.pod_resources_socket.clone(),
                args.data_dir.join("sim-grants.json"),
            ),
            stop_rx.clone(),
        )))
    } else {
        None
    };
    let loops = tokio::spawn(telemetry::run(tel.clone(), Arc::new(HttpSink::new(server, token)), stop_rx));
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = loops.await;
    if let Some(m) = marker {
        let _ = m.await;
    }
    if let Some(m) = metrics {
        m.await??;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_interval("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_interval("0.5s"), Ok(Duration::from_millis(500)));
        for bad in ["", "s", "10x", "1ms", "2h", "-1s", "1.2.3s"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }
}
