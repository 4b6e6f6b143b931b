//! `capstan up` (server + standalone controller + local agent in one process) and
//! `capstan server` (the server alone).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use capstan_agent::{Agent, AgentConfig};
use capstan_controller::standalone;
use capstan_server::{app, auth, AppState};
use capstan_store::artifacts::ArtifactStore;
use capstan_store::Store;
use clap::Args;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{watch, Notify};

/// Options of `capstan up`.
#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Give the local agent simulated GPUs: a count ("8") or count x product ("8xH100-80GB").
    #[arg(long, env = "CAPSTAN_SIMULATE_GPUS")]
    simulate_gpus: Option<String>,
    /// Docker Engine API socket (Docker or `podman system service`). Default: $DOCKER_HOST,
    /// then /run/podman/podman.sock, then /var/run/docker.sock.
    #[arg(long, env = "CAPSTAN_DOCKER_SOCKET")]
    docker_socket: Option<String>,
}

/// Options of `capstan server` (and the server part of `capstan up`).
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Address to listen on. Anything beyond loopback requires the API token.
    #[arg(long, env = "CAPSTAN_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Folder for the database, logs and artifacts.
    #[arg(long, env = "CAPSTAN_DATA_DIR", default_value = ".capstan")]
    data_dir: PathBuf,
    /// Database: postgres://USER[:PASSWORD]@HOST:PORT/DATABASE (an existing database; the
    /// tables are created on first start) or sqlite:///PATH. Default: the SQLite file
    /// <data-dir>/capstan.db.
    #[arg(long, env = "CAPSTAN_DATABASE_URL", value_name = "URL")]
    database_url: Option<String>,
    /// Where run artifacts are stored: a local folder, file:///path, or s3://bucket/prefix
    /// (credentials and region from the AWS_* environment; AWS_ENDPOINT_URL for an
    /// S3-compatible server). Default: <data-dir>/artifacts.
    #[arg(long, env = "CAPSTAN_ARTIFACTS_DESTINATION", value_name = "URL")]
    artifacts_destination: Option<String>,
}

/// Options of `capstan server`: the server's, plus where its pipeline triggers live.
#[derive(Args, Debug)]
pub struct ServerCommandArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Pipeline triggers on Kubernetes: webhooks and `capstan pipeline run` read the cluster's
    /// Pipeline objects and Secrets and create PipelineRun objects (reconciled by `capstan
    /// controller`) instead of rows in the server's store. The web UI and the resource API
    /// read TrainingJobs, Queues, ModelDeployments, Pipelines, PipelineRuns, their events and
    /// the pods' logs from the cluster (apply and delete there are refused: use kubectl).
    /// Uses --kubeconfig, else the in-cluster service account, $KUBECONFIG or ~/.kube/config.
    #[arg(long, env = "CAPSTAN_KUBERNETES")]
    kubernetes: bool,
    /// Kubeconfig for --kubernetes.
    #[arg(long, requires = "kubernetes", value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// With --kubernetes: only this namespace's Pipelines start runs, and only its objects
    /// show in the UI (Queues, cluster-scoped, always show) (default: every namespace).
    #[arg(long, requires = "kubernetes", value_name = "NAMESPACE")]
    pipelines_namespace: Option<String>,
}

/// Token for a server reachable beyond loopback: `$CAPSTAN_API_TOKEN` when set (the Helm
/// chart passes one from a Secret, shared with the controller), else generated and printed
/// once on first start, kept only as its hash.
fn token_hash(data_dir: &Path, listen: &SocketAddr) -> Result<Option<String>> {
    if let Ok(t) = std::env::var("CAPSTAN_API_TOKEN") {
        if t.trim().len() < 16 {
            bail!("CAPSTAN_API_TOKEN must be at least 16 characters");
        }
        return Ok(Some(auth::hash_token(t.trim())));
    }
    let path = data_dir.join("api-token.sha256");
    if let Ok(h) = std::fs::read_to_string(&path) {
        return Ok(Some(h.trim().to_string()));
    }
    if listen.ip().is_loopback() {
        return Ok(None);
    }
    let token = format!("cap_{}{}", uuid_hex(), uuid_hex());
    std::fs::write(&path, auth::hash_token(&token)).with_context(|| format!("writing {}", path.display()))?;
    println!("Listening beyond loopback: every API call needs this token (shown once; only its hash is kept):");
    println!("  export CAPSTAN_TOKEN={token}");
    Ok(Some(auth::hash_token(&token)))
}

fn uuid_hex() -> String {
    // 122 random bits from the kernel (a random v4 UUID per read).
    let bytes = std::fs::read("/proc/sys/kernel/random/uuid").unwrap_or_default();
    let s: String = String::from_utf8_lossy(&bytes).chars().filter(|c| c.is_ascii_hexdigit()).collect();
    s
}

struct Prepared {
    store: Store,
    data_dir: PathBuf,
    listener: tokio::net::TcpListener,
    state: AppState,
}

async fn prepare(args: &ServerArgs) -> Result<Prepared> {
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    // Bind first so a port clash is reported before anything else happens.
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("listening on {}", args.listen))?;
    let store = match &args.database_url {
        Some(url) => Store::open(url).await.context("opening the database at --database-url")?,
        None => Store::open_sqlite(&data_dir.join("capstan.db")).await.context("opening the database")?,
    };
    let token_sha256 = token_hash(&data_dir, &args.listen)?;
    let artifacts = match &args.artifacts_destination {
        Some(dest) => ArtifactStore::from_destination(dest)?,
        None => ArtifactStore::local(&data_dir.join("artifacts"))?,
    };
    artifacts.check().await?;
    let state = AppState {
        store: store.clone(),
        data_dir: data_dir.clone(),
        wake: Arc::new(Notify::new()),
        token_sha256,
        ready: Arc::new(AtomicBool::new(false)),
        artifacts,
    };
    Ok(Prepared { store, data_dir, listener, state })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

fn url_of(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// `capstan server`.
pub async fn server(args: ServerCommandArgs) -> Result<i32> {
    let p = prepare(&args.server).await?;
    let addr = p.listener.local_addr()?;
    let mut routes = app(p.state.clone());
    if args.kubernetes {
        // kube's rustls and object_store's share one crypto provider: aws-lc-rs.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let client = crate::controller::client(args.kubeconfig.as_ref()).await?;
        let cluster = crate::kube_triggers::KubePipelines::new(client.clone(), args.pipelines_namespace.clone());
        cluster.check().await.context(
            "--kubernetes: cannot list the cluster's Pipelines (are the capstan.dev CRDs installed, and may this \
             ServiceAccount list pipelines.capstan.dev?)",
        )?;
        routes = capstan_server::webhooks::on_cluster(routes, Arc::new(cluster));
        // The web UI's jobs, queues, deployments and pipelines, the resource API's reads and
        // the replicas' logs come from the cluster too (apply and delete are refused).
        let view = crate::kube_resources::KubeResources::new(client, args.pipelines_namespace.clone());
        routes = capstan_server::resources::on_cluster_resources(routes, Arc::new(view));
        let scope = args.pipelines_namespace.as_deref().unwrap_or("every namespace");
        println!("Pipeline triggers run on Kubernetes: Pipelines of {scope}, runs as PipelineRun objects");
    }
    p.state.ready.store(true, Ordering::Release);
    println!("Capstan server is up at {}", url_of(addr));
    axum::serve(p.listener, routes).with_graceful_shutdown(shutdown_signal()).await?;
    Ok(0)
}

/// `capstan up`: serve at once (`/healthz`), then connect the agent to the container
/// engine and start the controller (`/readyz` turns 200 then).
pub async fn up(args: UpArgs) -> Result<i32> {
    let p = prepare(&args.server).await?;
    let addr = p.listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut server_stop = stop_rx.clone();
    // /metrics serves the embedded agent's GPU series once the agent is up (empty before).
    let gpus: Arc<std::sync::OnceLock<Arc<capstan_agent::telemetry::Telemetry>>> = Arc::default();
    let gpus_of_metrics = gpus.clone();
    let render: capstan_server::nodes::MetricsRender = Arc::new(move || match gpus_of_metrics.get() {
        Some(t) => crate::agent::metrics_of(t),
        None => (capstan_agent::exporter::CONTENT_TYPE.to_string(), "# EOF\n".to_string()),
    });
    let routes = app(p.state.clone()).merge(capstan_server::nodes::metrics_router(p.state.clone(), render));
    let server = tokio::spawn(
        axum::serve(p.listener, routes)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|stop| *stop).await;
            })
            .into_future(),
    );
    println!("Capstan is up at {}", url_of(addr));
    let node_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let agent = Agent::new(AgentConfig {
        node_name,
        docker_socket: args.docker_socket.clone(),
        state_dir: p.data_dir.join("agent"),
        simulate_gpus: args.simulate_gpus.clone(),
        // In-process pushes cost nothing: every second, so the API and faults are current.
        telemetry: capstan_agent::telemetry::TelemetryConfig {
            push_interval: std::time::Duration::from_secs(1),
            ..Default::default()
        },
    })
    .await
    .context("starting the local agent")?;
    let telemetry = agent.telemetry().clone();
    let _ = gpus.set(telemetry.clone());
    let gpu_loops = tokio::spawn(capstan_agent::telemetry::run(
        telemetry.clone(),
        Arc::new(crate::agent::LocalSink::new(p.store.clone())),
        stop_rx.clone(),
    ));
    // A GPU turning unhealthy (or cleared) wakes the controller, which moves the jobs on it.
    let (health_changed, wake) = (telemetry.health_changed(), p.state.wake.clone());
    let relay = tokio::spawn(async move {
        loop {
            health_changed.notified().await;
            wake.notify_one();
        }
    });
    let tracking_host = if addr.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], addr.port())) } else { addr };
    let ctx = standalone::Context {
        store: p.store.clone(),
        agent: Arc::new(agent),
        data_dir: p.data_dir.clone(),
        tracking_uri: url_of(tracking_host),
        wake: p.state.wake.clone(),
        artifacts: Some(p.state.artifacts.clone()),
    };
    let controller = tokio::spawn(standalone::run(ctx, stop_rx));
    p.state.ready.store(true, Ordering::Release);
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = controller.await;
    let _ = gpu_loops.await;
    relay.abort();
    server.await??;
    println!("Capstan stopped. Replicas still running keep running and are adopted by the next `capstan up`.");
    Ok(0)
}
