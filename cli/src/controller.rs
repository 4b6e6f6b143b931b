//! `capstan controller`: the Kubernetes controller. Reads the kubeconfig (`--kubeconfig`,
//! `$KUBECONFIG`, `~/.kube/config`) or the in-cluster service account, campaigns for the
//! leader Lease, and while it holds it reconciles TrainingJobs and Queues into pods
//! (`capstan_controller::k8s`). Serves `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use capstan_controller::k8s::{self, leader, metrics::Metrics, Settings};
use clap::Args;
use tokio::sync::watch;

/// Options of `capstan controller`.
#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else the in-cluster service account).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Reconcile only this namespace's TrainingJobs (default: every namespace).
    #[arg(long = "watch-namespace", env = "CAPSTAN_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Namespace of the leader-election Lease (default: the pod's namespace, else "default").
    #[arg(long, env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "capstan-controller")]
    leader_election_lease: String,
    /// This replica's identity in the Lease (default: $POD_NAME, else host name and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Capstan server whose tracking API gets each job's run (e.g. http://capstan-server:8080).
    #[arg(long = "tracking-server", env = "CAPSTAN_TRACKING_SERVER")]
    tracking_server: Option<String>,
    /// MLFLOW_TRACKING_URI given to replicas (default: --tracking-server).
    #[arg(long, env = "CAPSTAN_TRACKING_URI")]
    tracking_uri: Option<String>,
    /// /metrics, /healthz and /readyz on this address.
    #[arg(long, env = "CAPSTAN_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    metrics_listen: SocketAddr,
    /// Jobs reconciled at once within a pass.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Image with the `capstan` binary that ModelDeployments of the builtin runtime run
    /// (`capstan serve`).
    #[arg(long, env = "CAPSTAN_SERVING_IMAGE", default_value = concat!("capstan:", env!("CARGO_PKG_VERSION")))]
    serving_image: String,
}

/// A client from a kubeconfig file, else the usual inference (in-cluster, $KUBECONFIG).
pub async fn client(path: Option<&PathBuf>) -> Result<kube::Client> {
    let config = match path {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p).with_context(|| format!("reading {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using {}", p.display()))?
        }
        None => kube::Config::infer().await.context("no kubeconfig and not in a cluster")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// Run the controller until SIGTERM / Ctrl-C, or until it loses the Lease it held.
pub async fn run(args: ControllerArgs, token: Option<String>) -> Result<i32> {
    // kube's rustls and object_store's share one crypto provider: aws-lc-rs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = client(args.kubeconfig.as_ref()).await?;
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_string();
        format!("{}-{}", if host.is_empty() { "capstan" } else { &host }, std::process::id())
    });
    let metrics = Arc::new(Metrics::new());
    let listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("listening on {}", args.metrics_listen))?;
    let router = k8s::metrics::router(metrics.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });

    k8s::wait_for_crds(&client).await.context("the capstan.dev CRDs are not served: install them first (helm/capstan/crds or `capstan crds | kubectl apply -f -`)")?;
    let settings = Settings {
        namespace: args.watch_namespace.clone(),
        lease_namespace: args.leader_election_namespace.clone().unwrap_or_else(|| "default".into()),
        lease_name: args.leader_election_lease.clone(),
        identity: identity.clone(),
        tracking_uri: args.tracking_uri.clone().or(args.tracking_server.clone()),
        server: args.tracking_server.clone(),
        server_token: token,
        concurrency: args.concurrency,
        serving_image: args.serving_image.clone(),
    };
    let ctx = k8s::start(client.clone(), settings.clone(), metrics.clone()).await?;
    metrics.ready.store(true, Ordering::Release);
    tracing::info!(identity = %identity, "caches synced; campaigning for the Lease {}/{}", settings.lease_namespace, settings.lease_name);

    let (leader_tx, mut leader_rx) = watch::channel(false);
    tokio::spawn(leader::campaign(
        client.clone(),
        settings.lease_namespace.clone(),
        settings.lease_name.clone(),
        identity.clone(),
        leader_tx,
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("SIGTERM handler")?;
    // Wait to lead.
    loop {
        if *leader_rx.borrow() {
            break;
        }
        tokio::select! {
            r = leader_rx.changed() => { r.context("leader election stopped")?; }
            _ = tokio::signal::ctrl_c() => return Ok(0),
            _ = term.recv() => return Ok(0),
        }
    }
    metrics.leader.set(1);
    eprintln!("capstan controller {identity} is the leader; reconciling");
    let runner = tokio::spawn(k8s::run(ctx, stop_rx));
    let code = loop {
        tokio::select! {
            r = leader_rx.changed() => {
                if r.is_err() || !*leader_rx.borrow() {
                    eprintln!("lost the leader Lease; exiting so a fresh replica can campaign");
                    break 1;
                }
            }
            _ = tokio::signal::ctrl_c() => break 0,
            _ = term.recv() => break 0,
        }
    };
    let _ = stop_tx.send(true);
    let _ = runner.await;
    metrics.leader.set(0);
    Ok(code)
}
