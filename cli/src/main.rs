//! The `capstan` binary: a thin shell over the library crates.

mod agent;
mod client;
mod controller;
mod kube_resources;
mod kube_triggers;
mod node_marker;
mod pipelines;
mod serve;
mod up;

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

/// Capstan: from a git push to a trained, tracked, registered and served model.
#[derive(Parser, Debug)]
#[command(name = "capstan", version, about, propagate_version = true)]
struct Cli {
    /// Server to talk to.
    #[arg(long, global = true, env = "CAPSTAN_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// API token (needed when the server listens beyond loopback).
    #[arg(long, global = true, env = "CAPSTAN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the whole platform on this machine: server, controller and agent.
    Up(up::UpArgs),
    /// Run the node agent's GPU telemetry on this node: sample the GPUs (NVML, or
    /// --simulate-gpus), serve Prometheus /metrics (--metrics-listen), push to --server.
    Agent(agent::AgentArgs),
    /// Run only the HTTP server (API and tracking), no controller or agent.
    Server(up::ServerCommandArgs),
    /// Run the Kubernetes controller: reconcile TrainingJobs and Queues into pods on the
    /// cluster of the kubeconfig (or in-cluster), with leader election.
    Controller(controller::ControllerArgs),
    /// Serve an ONNX model over the Open Inference Protocol v2 (REST): from a path, an
    /// object-store URI or the registry (models:/name@alias, models:/name/3).
    Serve(serve::ServeArgs),
    /// Create or update resources from YAML or JSON manifests (multi-document).
    Apply {
        /// Manifest file, or - for standard input.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
        /// Validate only; send nothing to the server.
        #[arg(long)]
        dry_run: bool,
    },
    /// List resources, or show one.
    Get {
        /// Resource type: trainingjobs (tj), queues (cq).
        kind: String,
        /// Name of one resource.
        name: Option<String>,
        /// Namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Output format.
        #[arg(short, long)]
        output: Option<Output>,
    },
    /// Show a resource in detail, with its events.
    Describe {
        /// Resource type.
        kind: String,
        /// Name.
        name: String,
        /// Namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Print a training job replica's log.
    Logs {
        /// Job name.
        name: String,
        /// Replica index.
        #[arg(long, default_value_t = 0)]
        replica: u32,
        /// Attempt (default: the current one).
        #[arg(long)]
        attempt: Option<u32>,
        /// Follow the log until the job finishes.
        #[arg(short, long)]
        follow: bool,
        /// Namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
    /// Delete resources by type and name, or those in a manifest.
    Delete {
        /// Resource type (omit with -f).
        kind: Option<String>,
        /// Name.
        name: Option<String>,
        /// Manifest file whose resources to delete.
        #[arg(short = 'f', long = "filename")]
        files: Vec<String>,
        /// Namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Wait until the resource is gone.
        #[arg(long)]
        wait: bool,
    },
    /// Print the CustomResourceDefinitions (YAML) for `kubectl apply -f -`.
    Crds,
    /// Secrets (webhook keys): create from literals, delete. `get secrets` lists names and keys.
    #[command(subcommand)]
    Secret(pipelines::SecretCommand),
    /// Pipelines: start a run by hand.
    #[command(subcommand)]
    Pipeline(pipelines::PipelineCommand),
    /// Benchmarks that live with the code (results: BENCHMARKS.md).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// The GPU scheduler on a generated cluster and workload (1-64 GPU gangs across queues
    /// and cohorts), against a naive first-fit gang baseline; prints one JSON line.
    Scheduler {
        /// Nodes.
        #[arg(long, default_value_t = 1000)]
        nodes: u32,
        /// GPUs per node.
        #[arg(long, default_value_t = 8)]
        gpus_per_node: u32,
        /// Pending gangs.
        #[arg(long, default_value_t = 10_000)]
        jobs: u32,
        /// Queues (in cohorts of four).
        #[arg(long, default_value_t = 8)]
        queues: u32,
        /// Generator seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Yaml,
    Json,
    Wide,
    Name,
}

fn main() {
    let cli = Cli::parse();
    let verbose =
        matches!(cli.command, Command::Up(_) | Command::Server(_) | Command::Agent(_) | Command::Controller(_));
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| {
        if verbose {
            "info,sqlx=warn,sea_orm=warn".into()
        } else {
            "warn".into()
        }
    });
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let code = match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

async fn run(cli: Cli) -> Result<i32> {
    let client = client::Client::new(&cli.server, cli.token.clone());
    match cli.command {
        Command::Up(args) => up::up(args).await,
        Command::Agent(args) => agent::run(args, &cli.server, cli.token.clone()).await,
        Command::Server(args) => up::server(args).await,
        Command::Controller(args) => controller::run(args, cli.token.clone()).await,
        Command::Serve(args) => serve::run(args, &cli.server, cli.token.clone()).await,
        Command::Apply { files, dry_run } => apply(&client, &files, dry_run).await,
        Command::Get { kind, name, namespace, all_namespaces, output } => {
            get(&client, &kind, name.as_deref(), &namespace, all_namespaces, output).await
        }
        Command::Describe { kind, name, namespace } => describe(&client, &kind, &name, &namespace).await,
        Command::Logs { name, replica, attempt, follow, namespace } => {
            client.logs(&namespace, &name, replica, attempt, follow).await?;
            Ok(0)
        }
        Command::Delete { kind, name, files, namespace, wait } => {
            delete(&client, kind, name, &files, &namespace, wait).await
        }
        Command::Bench(BenchCommand::Scheduler { nodes, gpus_per_node, jobs, queues, seed }) => {
            if nodes == 0 || gpus_per_node == 0 || queues == 0 {
                bail!("--nodes, --gpus-per-node and --queues must be at least 1");
            }
            let cfg = capstan_scheduler::bench::BenchConfig { nodes, gpus_per_node, jobs, queues, seed };
            println!("{}", serde_json::to_string(&capstan_scheduler::bench::run(cfg))?);
            Ok(0)
        }
        Command::Secret(cmd) => pipelines::secret(&client, cmd).await,
        Command::Pipeline(cmd) => pipelines::pipeline(&client, cmd).await,
        Command::Crds => {
            for crd in capstan_crds::crds() {
                print!("---\n{}", serde_yaml_ng::to_string(&crd)?);
            }
            Ok(0)
        }
    }
}

fn read_input(file: &str) -> Result<Vec<u8>> {
    if file == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).context("reading standard input")?;
        Ok(buf)
    } else {
        std::fs::read(PathBuf::from(file)).with_context(|| format!("reading {file}"))
    }
}

/// Validate locally (same code as the server) and print every error with file, line, field.
fn validate_file(file: &str, bytes: &[u8]) -> Result<Vec<capstan_crds::manifest::Resource>, ()> {
    use capstan_crds::manifest::{load, ManifestError};
    match load(bytes) {
        Ok(r) => Ok(r),
        Err(ManifestError::Invalid(errors)) => {
            for e in errors {
                let line = e.line.map(|l| format!("{l}:")).unwrap_or_default();
                eprintln!("error: {file}:{line} {}: {} (document {})", e.path, e.message, e.document + 1);
            }
            Err(())
        }
        Err(e) => {
            eprintln!("error: {file}: {e}");
            Err(())
        }
    }
}

async fn apply(client: &client::Client, files: &[String], dry_run: bool) -> Result<i32> {
    let mut inputs = Vec::new();
    let mut failed = false;
    for f in files {
        let bytes = read_input(f)?;
        match validate_file(f, &bytes) {
            Ok(resources) => inputs.push((f.clone(), bytes, resources)),
            Err(()) => failed = true,
        }
    }
    if failed {
        return Ok(1);
    }
    for (_f, bytes, resources) in inputs {
        if dry_run {
            for r in resources {
                println!("{}/{} valid (dry run)", r.kind().to_lowercase(), r.name());
            }
            continue;
        }
        let out = client.apply(bytes).await?;
        for item in out["items"].as_array().into_iter().flatten() {
            println!(
                "{}/{} {}",
                item["kind"].as_str().unwrap_or("").to_lowercase(),
                item["name"].as_str().unwrap_or(""),
                item["outcome"].as_str().unwrap_or("")
            );
        }
    }
    Ok(0)
}

fn plural(kind: &str) -> Result<&'static str> {
    match kind.to_ascii_lowercase().as_str() {
        "trainingjobs" | "trainingjob" | "tj" => Ok("trainingjobs"),
        "queues" | "queue" | "cq" => Ok("queues"),
        "pipelines" | "pipeline" | "pl" => Ok("pipelines"),
        "pipelineruns" | "pipelinerun" | "plr" => Ok("pipelineruns"),
        "modeldeployments" | "modeldeployment" | "mdep" => Ok("modeldeployments"),
        other => bail!("unknown resource type \"{other}\": use trainingjobs (tj) or queues (cq)"),
    }
}

/// "5s", "3m", "2h", "4d" since an RFC 3339 time.
fn age(ts: Option<&str>) -> String {
    let Some(t) = ts.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else { return "<unknown>".into() };
    let s = (chrono::Utc::now().timestamp() - t.timestamp()).max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn table(rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().enumerate().map(|(i, v)| format!("{:w$}", v, w = widths[i])).collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "<none>".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn rows_for(plural: &str, items: &[Value], wide: bool, all_ns: bool) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    if plural == "trainingjobs" {
        let mut h: Vec<&str> = vec!["NAME", "QUEUE", "PHASE", "REPLICAS", "GPUS", "RESTARTS", "AGE"];
        if wide {
            h.push("MESSAGE");
        }
        if all_ns {
            h.insert(0, "NAMESPACE");
        }
        rows.push(h.into_iter().map(String::from).collect());
        for it in items {
            let spec = &it["spec"];
            let st = &it["status"];
            let replicas = spec["replicas"].as_u64().unwrap_or(1);
            let gpus = spec["gpusPerReplica"].as_u64().unwrap_or(0) * replicas;
            let mut r = vec![
                s(&it["metadata"]["name"]),
                spec["queue"].as_str().unwrap_or("default").to_string(),
                st["phase"].as_str().unwrap_or("Pending").to_string(),
                replicas.to_string(),
                gpus.to_string(),
                st["restarts"].as_u64().unwrap_or(0).to_string(),
                age(it["metadata"]["creationTimestamp"].as_str()),
            ];
            if wide {
                r.push(st["message"].as_str().unwrap_or("").to_string());
            }
            if all_ns {
                r.insert(0, s(&it["metadata"]["namespace"]));
            }
            rows.push(r);
        }
    } else {
        rows.push(["NAME", "COHORT", "PENDING", "ADMITTED", "AGE"].into_iter().map(String::from).collect());
        for it in items {
            rows.push(vec![
                s(&it["metadata"]["name"]),
                it["spec"]["cohort"].as_str().unwrap_or("<none>").to_string(),
                it["status"]["pending"].as_u64().unwrap_or(0).to_string(),
                it["status"]["admitted"].as_u64().unwrap_or(0).to_string(),
                age(it["metadata"]["creationTimestamp"].as_str()),
            ]);
        }
    }
    rows
}

async fn get(
    client: &client::Client,
    kind: &str,
    name: Option<&str>,
    ns: &str,
    all_ns: bool,
    output: Option<Output>,
) -> Result<i32> {
    if matches!(output, None | Some(Output::Wide)) || kind.starts_with("secret") {
        if let Some(rows) = pipelines::get_table(client, kind, name, ns, all_ns).await? {
            if rows.len() > 1 {
                print!("{}", table(rows));
            } else {
                eprintln!("No resources found.");
            }
            return Ok(0);
        }
    }
    let plural = plural(kind)?;
    let namespaced = plural != "queues";
    let body = match name {
        Some(n) => client.get_one(plural, namespaced.then_some(ns), n).await?,
        None => client.list(plural, (namespaced && !all_ns).then_some(ns)).await?,
    };
    match output {
        Some(Output::Json) => println!("{}", serde_json::to_string_pretty(&body)?),
        Some(Output::Yaml) => print!("{}", serde_yaml_ng::to_string(&body)?),
        Some(Output::Name) => {
            let items = if name.is_some() { vec![body] } else { body["items"].as_array().cloned().unwrap_or_default() };
            for it in items {
                println!("{}/{}", plural.trim_end_matches('s'), s(&it["metadata"]["name"]));
            }
        }
        o => {
            let items = if name.is_some() { vec![body] } else { body["items"].as_array().cloned().unwrap_or_default() };
            if items.is_empty() {
                eprintln!(
                    "No resources found{}.",
                    if namespaced && !all_ns { format!(" in {ns} namespace") } else { String::new() }
                );
            } else {
                print!("{}", table(rows_for(plural, &items, matches!(o, Some(Output::Wide)), all_ns)));
            }
        }
    }
    Ok(0)
}

async fn describe(client: &client::Client, kind: &str, name: &str, ns: &str) -> Result<i32> {
    if let Some(text) = pipelines::describe(client, kind, name, ns).await? {
        print!("{text}");
        return Ok(0);
    }
    let plural = plural(kind)?;
    let namespaced = plural == "trainingjobs";
    let obj = client.get_one(plural, namespaced.then_some(ns), name).await?;
    let mut out = String::new();
    out.push_str(&format!("Name:         {}\n", s(&obj["metadata"]["name"])));
    if namespaced {
        out.push_str(&format!("Namespace:    {}\n", s(&obj["metadata"]["namespace"])));
    }
    out.push_str(&format!("Kind:         {}\n", s(&obj["kind"])));
    out.push_str(&format!("UID:          {}\n", s(&obj["metadata"]["uid"])));
    out.push_str(&format!("Created:      {}\n", s(&obj["metadata"]["creationTimestamp"])));
    out.push_str(&format!("Spec:\n{}", indent(&serde_yaml_ng::to_string(&obj["spec"])?)));
    let st = &obj["status"];
    if namespaced {
        out.push_str(&format!("Phase:        {}\n", st["phase"].as_str().unwrap_or("Pending")));
        if let Some(m) = st["message"].as_str() {
            out.push_str(&format!("Message:      {m}\n"));
        }
        if let Some(p) = st["queuePosition"].as_u64() {
            out.push_str(&format!("Queue position: {p}\n"));
        }
        out.push_str(&format!(
            "Restarts:     {} (counted against backoffLimit), {} uncounted\n",
            st["restarts"].as_u64().unwrap_or(0),
            st["uncountedRestarts"].as_u64().unwrap_or(0)
        ));
        if let Some(r) = st["trackingRunId"].as_str() {
            out.push_str(&format!("Tracking run: {r}\n"));
        }
        if let Some(rz) = st.get("rendezvous").filter(|v| !v.is_null()) {
            out.push_str(&format!("Rendezvous:   {}:{}\n", s(&rz["masterAddr"]), s(&rz["masterPort"])));
        }
        let reps = st["replicaStatuses"].as_array().cloned().unwrap_or_default();
        if !reps.is_empty() {
            let mut rows = vec![vec![
                "REPLICA".to_string(),
                "STATE".into(),
                "NODE".into(),
                "GPUS".into(),
                "EXIT".into(),
                "MESSAGE".into(),
            ]];
            for r in reps {
                let gpus: Vec<String> = r["gpus"].as_array().into_iter().flatten().map(s).collect();
                rows.push(vec![
                    s(&r["index"]),
                    s(&r["state"]),
                    r["node"].as_str().unwrap_or("").into(),
                    gpus.join(","),
                    r["exitCode"].as_i64().map(|c| c.to_string()).unwrap_or_default(),
                    r["message"].as_str().unwrap_or("").into(),
                ]);
            }
            out.push_str("Replicas:\n");
            out.push_str(&indent(&table(rows)));
        }
        let conds = st["conditions"].as_array().cloned().unwrap_or_default();
        if !conds.is_empty() {
            let mut rows = vec![vec!["TYPE".to_string(), "STATUS".into(), "REASON".into(), "MESSAGE".into()]];
            for c in conds {
                rows.push(vec![
                    s(&c["type"]),
                    s(&c["status"]),
                    c["reason"].as_str().unwrap_or("").into(),
                    c["message"].as_str().unwrap_or("").into(),
                ]);
            }
            out.push_str("Conditions:\n");
            out.push_str(&indent(&table(rows)));
        }
        let events = client.events(ns, name).await?;
        let items = events["items"].as_array().cloned().unwrap_or_default();
        out.push_str("Events:\n");
        if items.is_empty() {
            out.push_str("  <none>\n");
        } else {
            let mut rows =
                vec![vec!["TYPE".to_string(), "REASON".into(), "AGE".into(), "COUNT".into(), "MESSAGE".into()]];
            for e in items {
                rows.push(vec![
                    s(&e["type_"]),
                    s(&e["reason"]),
                    age(e["last_timestamp"].as_str()),
                    s(&e["count"]),
                    s(&e["message"]),
                ]);
            }
            out.push_str(&indent(&table(rows)));
        }
    } else {
        out.push_str(&format!("Status:\n{}", indent(&serde_yaml_ng::to_string(st)?)));
    }
    print!("{out}");
    Ok(0)
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

async fn delete(
    client: &client::Client,
    kind: Option<String>,
    name: Option<String>,
    files: &[String],
    ns: &str,
    wait: bool,
) -> Result<i32> {
    let mut targets: Vec<(&'static str, Option<String>, String)> = Vec::new();
    for f in files {
        let bytes = read_input(f)?;
        let Ok(resources) = validate_file(f, &bytes) else { return Ok(1) };
        for r in resources {
            targets.push((plural(r.kind())?, r.namespace().map(String::from), r.name().to_string()));
        }
    }
    match (kind, name) {
        (Some(k), Some(n)) => {
            let p = plural(&k)?;
            targets.push((p, (p == "trainingjobs").then(|| ns.to_string()), n));
        }
        (None, None) if !targets.is_empty() => {}
        _ => bail!("usage: capstan delete TYPE NAME, or capstan delete -f FILE"),
    }
    for (p, ns, name) in targets {
        client.delete(p, ns.as_deref(), &name).await?;
        println!("{}/{} deleted", p.trim_end_matches('s'), name);
        if wait {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while client.get_one(p, ns.as_deref(), &name).await.is_ok() {
                if std::time::Instant::now() > deadline {
                    bail!("{name} still exists after 120 s");
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        }
    }
    Ok(0)
}
