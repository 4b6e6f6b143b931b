//! `capstan up` (server + standalone controller + local agent in one process) and
//! `capstan server` (the server alone).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use capstan_agent::{Agent, AgentConfig};
use capstan_controller::standalone;
use capstan_server::{app, auth, AppState};
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
}

/// Token for a server reachable beyond loopback: generated and printed once on first start,
/// kept only as its hash.
fn token_hash(data_dir: &Path, listen: &SocketAddr) -> Result<Option<String>> {
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
    let store = Store::open_sqlite(&data_dir.join("capstan.db")).await.context("opening the database")?;
    let token_sha256 = token_hash(&data_dir, &args.listen)?;
    let state = AppState {
        store: store.clone(),
        data_dir: data_dir.clone(),
        wake: Arc::new(Notify::new()),
        token_sha256,
        ready: Arc::new(AtomicBool::new(false)),
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
pub async fn server(args: ServerArgs) -> Result<i32> {
    let p = prepare(&args).await?;
    let addr = p.listener.local_addr()?;
    p.state.ready.store(true, Ordering::Release);
    println!("Capstan server is up at {}", url_of(addr));
    axum::serve(p.listener, app(p.state)).with_graceful_shutdown(shutdown_signal()).await?;
    Ok(0)
}

/// `capstan up`: serve at once (`/healthz`), then connect the agent to the container
/// engine and start the controller (`/readyz` turns 200 then).
pub async fn up(args: UpArgs) -> Result<i32> {
    let p = prepare(&args.server).await?;
    let addr = p.listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(
        axum::serve(p.listener, app(p.state.clone()))
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
    })
    .await
    .context("starting the local agent")?;
    let tracking_host = if addr.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], addr.port())) } else { addr };
    let ctx = standalone::Context {
        store: p.store.clone(),
        agent: Arc::new(agent),
        data_dir: p.data_dir.clone(),
        tracking_uri: url_of(tracking_host),
        wake: p.state.wake.clone(),
    };
    let controller = tokio::spawn(standalone::run(ctx, stop_rx));
    p.state.ready.store(true, Ordering::Release);
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = controller.await;
    server.await??;
    println!("Capstan stopped. Replicas still running keep running and are adopted by the next `capstan up`.");
    Ok(0)
}
