//! The Kubernetes controller (`capstan controller`) against the real control plane of
//! tests/cluster/ (etcd, kube-apiserver 1.34, kube-controller-manager, kwok playing the
//! kubelets of fake 8-GPU nodes; its pod stages end a pod with the exit code named in the
//! `kwok.capstan.dev/exit-code` annotation, which the controller copies from the job).
//!
//! Every controller here runs with the permissions of the Helm chart's ServiceAccount only:
//! the chart's RBAC is rendered with `helm template`, applied, and the controller's
//! kubeconfig impersonates `system:serviceaccount:capstan-system:capstan-controller`. So the
//! suite passing proves the chart's RBAC sufficient.
//!
//! Behind the `cluster` feature (scripts/test.sh turns it on); fails, never skips, without
//! the control plane:
//!
//!     eval "$(tests/cluster/up.sh /tmp/capstan-cluster)"
//!     CAPSTAN_TEST_KUBECONFIG=$KUBECONFIG cargo test -p capstan-e2e --features cluster --test kube_controller
#![cfg(feature = "cluster")]

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::Duration;

use capstan_e2e::kube::{
    apply_docs, can_i, chart_docs, create_namespace, delete_namespace, get_json, install_crds, kubeconfig, kubectl,
    kubectl_ok, run_tool, spawn_controller, tail, text, wait_for, write_impersonating, ChartDocs, Kill, AGENT_SA,
    CHART_NS, CONTROLLER_SA,
};
use capstan_e2e::{capstan_bin, workspace_root, Capstan};
use serde_json::Value;

static SETUP: Once = Once::new();
static SERIAL: Mutex<()> = Mutex::new(());

/// Install the CRDs and the chart's RBAC for the controller; write the impersonating
/// kubeconfig.
fn setup() -> PathBuf {
    let imp = std::env::temp_dir().join(format!("capstan-kubeconfig-controller-{}", std::process::id()));
    SETUP.call_once(|| {
        install_crds(&["trainingjobs.capstan.dev"]);
        // The ServiceAccounts and their RBAC; the Deployment and DaemonSet would need a real
        // image and kubelet.
        let docs = chart_docs(&["templates/controller.yaml", "templates/agent.yaml"], ChartDocs::WithoutWorkloads);
        apply_docs(&docs);
        // The same cluster, as the controller's ServiceAccount.
        write_impersonating(&imp, CONTROLLER_SA);
        write_impersonating(&agent_kubeconfig(), AGENT_SA);
        // Sanity: impersonation works and is limited.
        let can = |verb: &str, res: &str| can_i(&imp, verb, res, None);
        assert!(can("create", "pods"), "the chart lets the controller create pods");
        assert!(!can("create", "secrets"), "the chart must not let the controller touch secrets");
        assert!(!can("delete", "nodes"), "the chart must not let the controller delete nodes");
    });
    imp
}

/// The cluster as the chart's agent ServiceAccount (written by [`setup`]).
fn agent_kubeconfig() -> PathBuf {
    std::env::temp_dir().join(format!("capstan-kubeconfig-agent-{}", std::process::id()))
}

/// One test's namespace and controller (serialised: tests share the cluster's 32 GPUs).
struct Env {
    ns: String,
    controller: Option<Child>,
    log: PathBuf,
    kubeconfig: PathBuf,
    _serial: MutexGuard<'static, ()>,
}

impl Env {
    fn new(prefix: &str) -> Env {
        Env::with_tracking(prefix, None)
    }

    fn with_tracking(prefix: &str, tracking: Option<&str>) -> Env {
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let kubeconfig = setup();
        let ns = create_namespace(prefix);
        let log = std::env::temp_dir().join(format!("{ns}-controller.log"));
        let mut env = Env { ns, controller: None, log, kubeconfig, _serial: serial };
        env.controller = Some(env.start_controller(tracking, "0"));
        env
    }

    fn start_controller(&self, tracking: Option<&str>, identity: &str) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let extra = match tracking {
            Some(t) => vec!["--tracking-server", t],
            None => vec![],
        };
        spawn_controller(&self.kubeconfig, &self.ns, identity, &extra, log)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn apply(&self, yaml: &str) -> String {
        kubectl_ok(&["apply", "-n", &self.ns, "-f", "-"], Some(yaml))
    }

    /// `kubectl patch trainingjob NAME --type=merge -p PATCH` (must succeed).
    fn merge_patch(&self, job: &str, patch: &str) {
        kubectl_ok(&["patch", "trainingjob", job, "-n", &self.ns, "--type=merge", "-p", patch], None);
    }

    fn job(&self, name: &str) -> Option<Value> {
        get_json(&["trainingjob", name, "-n", &self.ns])
    }

    fn pods(&self, job: &str) -> Vec<Value> {
        get_json(&["pods", "-n", &self.ns, "-l", &format!("capstan.dev/job-name={job}")])
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default()
    }

    fn describe(&self, job: &str) -> String {
        let d = kubectl(&["describe", "trainingjob", job, "-n", &self.ns]);
        let p = kubectl(&["get", "pods", "-n", &self.ns, "-o", "wide"]);
        format!("{}\n{}\ncontroller log (tail):\n{}", text(&d), text(&p), tail(&self.log(), 30))
    }

    /// Wait until the job's phase is `phase`; returns the job.
    fn wait_phase(&self, job: &str, phase: &str) -> Value {
        wait_for(
            Duration::from_secs(90),
            &format!("{job} to be {phase}"),
            || self.job(job).filter(|j| j["status"]["phase"] == phase),
            || self.describe(job),
        )
    }

    fn wait_pods_running(&self, job: &str, n: usize) -> Vec<Value> {
        wait_for(
            Duration::from_secs(90),
            &format!("{n} running pods of {job}"),
            || {
                let pods = self.pods(job);
                let running: Vec<Value> = pods
                    .into_iter()
                    .filter(|p| p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null())
                    .collect();
                (running.len() == n).then_some(running)
            },
            || self.describe(job),
        )
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Delete the namespace while the controller still runs (it removes its finalizers),
        // and wait, so the next test finds every GPU free.
        delete_namespace(&self.ns);
        if let Some(mut c) = self.controller.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn job_yaml(name: &str, replicas: u32, gpus: u32, extra_spec: &str, annotations: &str) -> String {
    format!(
        "apiVersion: capstan.dev/v1alpha1\nkind: TrainingJob\nmetadata:\n  name: {name}\n  annotations:\n    capstan.dev/test: \"yes\"\n{annotations}spec:\n  image: trainer:1\n  replicas: {replicas}\n  gpusPerReplica: {gpus}\n  command: [\"python\", \"train.py\"]\n{extra_spec}"
    )
}

fn exit_after(code: i32, duration: &str) -> String {
    format!("    kwok.capstan.dev/exit-code: \"{code}\"\n    kwok.capstan.dev/run-duration: \"{duration}\"\n")
}

fn gpu_limit(pod: &Value) -> String {
    pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"].as_str().unwrap_or("0").to_string()
}

fn env_of(pod: &Value, name: &str) -> Option<String> {
    pod["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(str::to_string))
}

#[test]
fn a_gang_runs_on_kwok_gpu_nodes_to_success_and_its_tracking_run_follows() {
    let capstan = Capstan::start();
    let env = Env::with_tracking("kc-success", Some(capstan.url()));
    env.apply(&job_yaml("ok", 2, 4, "", &exit_after(0, "3s")));

    let pods = env.wait_pods_running("ok", 2);
    for p in &pods {
        let node = p["spec"]["nodeName"].as_str().unwrap_or_default();
        assert!(node.starts_with("gpu-node-"), "bound to a kwok GPU node: {p}");
        assert_eq!(gpu_limit(p), "4");
        assert_eq!(env_of(p, "MASTER_ADDR").as_deref(), Some(format!("ok-0.ok.{}.svc", env.ns).as_str()));
        assert_eq!(env_of(p, "WORLD_SIZE").as_deref(), Some("2"));
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "TrainingJob");
    }
    // Topology-aware packing: 2 x 4 GPUs fit one 8-GPU node, so the gang shares it.
    assert_eq!(pods[0]["spec"]["nodeName"], pods[1]["spec"]["nodeName"], "one node for a gang that fits one");
    let svc = get_json(&["service", "ok", "-n", &env.ns]).expect("the headless Service exists");
    assert_eq!(svc["spec"]["clusterIP"], "None");

    let job = env.wait_phase("ok", "Succeeded");
    let conds = job["status"]["conditions"].as_array().unwrap();
    assert!(conds.iter().any(|c| c["type"] == "Succeeded" && c["status"] == "True"), "{job}");
    let run = job["status"]["trackingRunId"].as_str().expect("a tracking run id").to_string();
    let (code, body) = capstan.get(&format!("/api/2.0/mlflow/runs/get?run_id={run}"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["run"]["info"]["status"], "FINISHED", "{body}");
    let tags = body["run"]["data"]["tags"].as_array().unwrap();
    assert!(tags.iter().any(|t| t["key"] == "capstan.dev/namespace" && t["value"] == env.ns.as_str()), "{body}");
    // kubectl's printer columns.
    let table = kubectl_ok(&["get", "tj", "-n", &env.ns], None);
    assert!(table.contains("PHASE") && table.contains("Succeeded"), "{table}");
    // Events were published.
    let events = kubectl_ok(&["get", "events", "-n", &env.ns], None);
    assert!(events.contains("Admitted") && events.contains("Completed"), "{events}");
}

#[test]
fn pods_are_created_only_once_the_whole_gang_is_placed() {
    let env = Env::new("kc-gang");
    // 3 x 8 GPUs of the 32 run; a gang of 2 x 8 cannot be placed beside them.
    env.apply(&job_yaml("big", 3, 8, "", ""));
    env.wait_pods_running("big", 3);
    env.apply(&job_yaml("second", 2, 8, "", ""));
    let job = wait_for(
        Duration::from_secs(60),
        "second to be pending with a reason",
        || env.job("second").filter(|j| j["status"]["phase"] == "Pending" && j["status"]["message"].is_string()),
        || env.describe("second"),
    );
    assert!(job["status"]["queuePosition"].as_u64().is_some(), "{job}");
    // A few passes later there is still not one pod of it: nothing partial.
    std::thread::sleep(Duration::from_secs(2));
    assert!(env.pods("second").is_empty(), "no pod of a gang that is not wholly placed: {:?}", env.pods("second"));
    // Free the GPUs: the whole gang starts.
    kubectl_ok(&["delete", "trainingjob", "big", "-n", &env.ns, "--wait=false"], None);
    let pods = env.wait_pods_running("second", 2);
    assert!(pods.iter().all(|p| gpu_limit(p) == "8"));
    let nodes: std::collections::HashSet<&str> = pods.iter().map(|p| p["spec"]["nodeName"].as_str().unwrap()).collect();
    assert_eq!(nodes.len(), 2, "two whole nodes");
}

#[test]
fn a_failing_replica_restarts_the_gang_until_the_backoff_limit() {
    let env = Env::new("kc-fail");
    env.apply(&job_yaml("flaky", 2, 1, "  runPolicy:\n    backoffLimit: 2\n", &exit_after(3, "1s")));
    let job = env.wait_phase("flaky", "Failed");
    assert_eq!(job["status"]["restarts"], 2, "{job}");
    assert_eq!(job["status"]["exitCode"], 3, "{job}");
    let failed = job["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Failed").cloned();
    assert!(failed.is_some_and(|c| c["status"] == "True"), "{job}");
    let events = kubectl_ok(&["get", "events", "-n", &env.ns, "-o", "json"], None);
    let ev: Value = serde_json::from_str(&events).unwrap();
    let reasons: Vec<String> =
        ev["items"].as_array().unwrap().iter().filter_map(|e| e["reason"].as_str().map(str::to_string)).collect();
    assert!(reasons.iter().any(|r| r == "GangRestart" || r == "Restarting"), "restart events: {reasons:?}");
}

#[test]
fn a_high_priority_job_preempts_a_low_priority_one() {
    let env = Env::new("kc-preempt");
    let class = format!("{}-high", env.ns);
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: {class}\nvalue: 1000\ndescription: test\n"
        )),
    );
    env.apply(&job_yaml("low", 4, 8, "  priority: 0\n", ""));
    env.wait_pods_running("low", 4);
    env.apply(&job_yaml("high", 1, 8, &format!("  priorityClassName: {class}\n"), ""));
    let high = env.wait_pods_running("high", 1);
    assert_eq!(gpu_limit(&high[0]), "8");
    let low = wait_for(
        Duration::from_secs(60),
        "low to be preempted and pending",
        || env.job("low").filter(|j| j["status"]["phase"] == "Pending"),
        || env.describe("low"),
    );
    let pre = low["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Preempted").cloned();
    assert!(pre.is_some_and(|c| c["status"] == "True"), "{low}");
    assert_eq!(low["status"]["restarts"], 0, "preemption does not count against backoffLimit: {low}");
    wait_for(
        Duration::from_secs(60),
        "low's pods to be gone",
        || env.pods("low").is_empty().then_some(()),
        || env.describe("low"),
    );
    let _ = kubectl(&["delete", "priorityclass", &class]);
}

#[test]
fn suspend_stops_the_pods_and_resume_starts_them_again() {
    let env = Env::new("kc-suspend");
    env.apply(&job_yaml("pausable", 2, 2, "", ""));
    env.wait_pods_running("pausable", 2);
    env.merge_patch("pausable", r#"{"spec":{"runPolicy":{"suspend":true}}}"#);
    env.wait_phase("pausable", "Suspended");
    wait_for(
        Duration::from_secs(60),
        "the suspended job's pods to be gone",
        || env.pods("pausable").is_empty().then_some(()),
        || env.describe("pausable"),
    );
    env.merge_patch("pausable", r#"{"spec":{"runPolicy":{"suspend":false}}}"#);
    let pods = env.wait_pods_running("pausable", 2);
    let attempt = pods[0]["metadata"]["labels"]["capstan.dev/attempt"].as_str().unwrap().to_string();
    assert_ne!(attempt, "1", "a resumed gang is a new attempt");
    env.wait_phase("pausable", "Running");
}

#[test]
fn deleting_a_job_removes_its_pods_and_then_the_job() {
    let env = Env::new("kc-delete");
    env.apply(&job_yaml("doomed", 2, 1, "", ""));
    env.wait_pods_running("doomed", 2);
    let job = env.job("doomed").unwrap();
    assert!(
        job["metadata"]["finalizers"].as_array().is_some_and(|f| f.iter().any(|x| x == "capstan.dev/cleanup")),
        "{job}"
    );
    kubectl_ok(&["delete", "trainingjob", "doomed", "-n", &env.ns, "--wait=false"], None);
    wait_for(
        Duration::from_secs(60),
        "the job and its pods to be gone",
        || (env.job("doomed").is_none() && env.pods("doomed").is_empty()).then_some(()),
        || env.describe("doomed"),
    );
}

#[test]
fn the_examples_apply_and_every_gang_is_all_or_nothing() {
    let env = Env::new("kc-examples");
    // The TrainingJob examples (the Queue example is cluster-scoped and names its own cohort).
    for f in ["hello-distributed.yaml", "lora-finetune.yaml", "torchrun-ddp.yaml", "deepspeed.yaml"] {
        let path = workspace_root().join("examples").join(f);
        kubectl_ok(&["apply", "-n", &env.ns, "-f", path.to_str().unwrap()], None);
    }
    let list = get_json(&["trainingjobs", "-n", &env.ns]).expect("list the jobs");
    let jobs: Vec<String> =
        list["items"].as_array().unwrap().iter().map(|j| j["metadata"]["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(jobs.len(), 4, "{jobs:?}");
    // 0 + 1 + 16 + 32 GPUs asked of 32: some run, the rest wait, none is half-started.
    let settled = wait_for(
        Duration::from_secs(90),
        "every example to be running or pending with a reason",
        || {
            let mut running = 0;
            for j in &jobs {
                let job = env.job(j)?;
                let replicas = job["spec"]["replicas"].as_u64()? as usize;
                let pods = env.pods(j);
                match job["status"]["phase"].as_str()? {
                    "Running" if pods.len() == replicas => running += 1,
                    "Pending" if pods.is_empty() && job["status"]["message"].is_string() => {}
                    _ => return None,
                }
            }
            Some(running)
        },
        || jobs.iter().map(|j| env.describe(j)).collect::<Vec<_>>().join("\n"),
    );
    assert!(settled >= 2, "the small examples run");
    let all_pods = get_json(&["pods", "-n", &env.ns]).unwrap();
    for p in all_pods["items"].as_array().unwrap() {
        assert!(p["spec"]["nodeName"].as_str().is_some_and(|n| n.starts_with("gpu-node-")), "{p}");
    }
}

#[test]
fn one_of_two_controllers_leads_and_the_other_takes_over() {
    let mut env = Env::new("kc-leader");
    let second = env.start_controller(None, "1");
    let lease_name = format!("lease-{}", env.ns);
    let holder = || {
        get_json(&["lease", &lease_name, "-n", CHART_NS])
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    };
    let first = wait_for(Duration::from_secs(30), "a leader", holder, || env.log());
    assert!(first.ends_with("-0") || first.ends_with("-1"), "{first}");
    // Stop the leader; the other takes over once the Lease expires, and reconciles.
    let mut second = Some(second);
    if first.ends_with("-0") {
        let mut c = env.controller.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
        env.controller = second.take();
    } else {
        let mut c = second.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let next = wait_for(Duration::from_secs(60), "another leader", || holder().filter(|h| *h != first), || env.log());
    assert_ne!(next, first);
    env.apply(&job_yaml("after-failover", 1, 1, "", ""));
    env.wait_pods_running("after-failover", 1);
}

#[test]
fn the_chart_lints_and_the_api_server_accepts_what_it_renders() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    setup();
    let chart = workspace_root().join("helm/capstan");
    let chart = chart.to_str().unwrap();
    let o = run_tool("helm", &kubeconfig(), &["lint", chart], None);
    assert!(o.status.success(), "helm lint:\n{}", text(&o));
    for set in [
        vec![],
        vec![
            "--set",
            "server.storage.type=postgres",
            "--set",
            "server.storage.postgres.existingSecret=pg",
            "--set",
            "server.replicas=2",
            "--set",
            "server.ingress.enabled=true",
        ],
    ] {
        let mut args = vec!["template", "capstan", chart, "--namespace", CHART_NS];
        args.extend(set.iter().copied());
        let o = run_tool("helm", &kubeconfig(), &args, None);
        assert!(o.status.success(), "helm template {set:?}:\n{}", text(&o));
        let rendered = String::from_utf8(o.stdout).unwrap();
        for kind in ["Deployment", "DaemonSet", "ClusterRole", "Service", "ServiceAccount"] {
            assert!(rendered.contains(&format!("kind: {kind}")), "{kind} missing");
        }
        let applied = run_tool("kubectl", &kubeconfig(), &["apply", "--dry-run=server", "-f", "-"], Some(&rendered));
        assert!(applied.status.success(), "the API server refused the chart:\n{}", text(&applied));
    }
    // values.schema.json and the template's own checks refuse bad values, naming them.
    let o =
        run_tool("helm", &kubeconfig(), &["template", "capstan", chart, "--set", "server.storage.type=mysql"], None);
    assert!(!o.status.success() && text(&o).contains("storage"), "{}", text(&o));
    let o = run_tool("helm", &kubeconfig(), &["template", "capstan", chart, "--set", "server.replicas=2"], None);
    assert!(!o.status.success() && text(&o).contains("postgres"), "{}", text(&o));
}

#[test]
fn controller_serves_metrics_and_health() {
    let env = Env::new("kc-metrics");
    // Find its port from the log? It listens on 127.0.0.1:0: start one with a known port.
    let port = capstan_e2e::free_port();
    let log = std::fs::File::create(std::env::temp_dir().join(format!("{}-metrics.log", env.ns))).unwrap();
    let mut c = Command::new(capstan_bin())
        .arg("controller")
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(["--watch-namespace", &env.ns, "--leader-election-namespace", CHART_NS])
        .args(["--leader-election-lease", &format!("metrics-{}", env.ns)])
        .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let http = reqwest::blocking::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let body = wait_for(
        Duration::from_secs(30),
        "the controller's /metrics with a pass",
        || {
            let ready = http.get(format!("{url}/readyz")).send().ok()?.status().is_success();
            let m = http.get(format!("{url}/metrics")).send().ok()?.text().ok()?;
            (ready && m.contains("capstan_controller_passes_total")).then_some(m)
        },
        String::new,
    );
    assert!(body.contains("capstan_controller_leader"), "{body}");
    assert_eq!(http.get(format!("{url}/healthz")).send().unwrap().status().as_u16(), 200);
    let _ = c.kill();
    let _ = c.wait();
}

fn node_json(name: &str) -> Value {
    get_json(&["node", name]).expect("the node exists")
}

fn node_condition(node: &Value, type_: &str) -> Option<Value> {
    node["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_).cloned()
}

#[test]
fn the_agent_marks_its_node_and_the_scheduler_avoids_its_unhealthy_gpus() {
    let capstan = Capstan::start();
    let env = Env::new("kc-agent");
    let node = "gpu-node-3";
    let data = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(std::env::temp_dir().join(format!("{}-agent.log", env.ns))).unwrap();
    let _agent = Kill(
        Command::new(capstan_bin())
            .args(["agent", "--server", capstan.url(), "--simulate-gpus", "8xNVIDIA-H100-80GB-HBM3"])
            .args(["--node-name", node, "--push-interval", "1s", "--kubernetes", "--kubeconfig"])
            .arg(agent_kubeconfig())
            .arg("--data-dir")
            .arg(data.path())
            .env_remove("KUBECONFIG")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn capstan agent"),
    );
    let agent_log =
        || std::fs::read_to_string(std::env::temp_dir().join(format!("{}-agent.log", env.ns))).unwrap_or_default();
    // GPU Feature Discovery's labels and a healthy condition, written as the agent's ServiceAccount.
    let n = wait_for(
        Duration::from_secs(60),
        "the agent's labels and condition on the node",
        || {
            let n = node_json(node);
            let ok = n["metadata"]["labels"]["capstan.dev/gpu.simulated"] == "true"
                && node_condition(&n, "CapstanGPUUnhealthy").is_some_and(|c| c["status"] == "False");
            ok.then_some(n)
        },
        agent_log,
    );
    assert_eq!(n["metadata"]["labels"]["nvidia.com/gpu.count"], "8");
    assert_eq!(n["metadata"]["labels"]["nvidia.com/gpu.product"], "NVIDIA-H100-80GB-HBM3");

    // A critical XID on GPU 2: annotation, condition and taint.
    let http = reqwest::blocking::Client::new();
    let faults = format!("{}/api/v1/nodes/{node}/gpus/2/faults", capstan.url());
    wait_for(
        Duration::from_secs(30),
        "the server to know the agent's node",
        || http.post(&faults).json(&serde_json::json!({"xid": 79})).send().ok().filter(|r| r.status().is_success()),
        agent_log,
    );
    // The agent writes the annotation, then the taint, then the condition: wait for all three.
    let n = wait_for(
        Duration::from_secs(60),
        "GPU 2 marked unhealthy on the node",
        || {
            let n = node_json(node);
            let marked = n["metadata"]["annotations"]["capstan.dev/unhealthy-gpus"] == "2"
                && node_condition(&n, "CapstanGPUUnhealthy").is_some_and(|c| c["status"] == "True")
                && n["spec"]["taints"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t["key"] == "capstan.dev/gpu-unhealthy"));
            marked.then_some(n)
        },
        agent_log,
    );
    let cond = node_condition(&n, "CapstanGPUUnhealthy").expect("the condition");
    assert_eq!(cond["status"], "True", "{cond}");
    assert!(cond["message"].as_str().unwrap().contains("GPU 2"), "{cond}");
    let taints = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
    assert!(
        taints.iter().any(|t| t["key"] == "capstan.dev/gpu-unhealthy" && t["effect"] == "PreferNoSchedule"),
        "{taints:?}"
    );

    // Four whole nodes are asked for; one has a bad GPU: the gang waits, nothing is created.
    env.apply(&job_yaml("whole-cluster", 4, 8, "", ""));
    let job = wait_for(
        Duration::from_secs(60),
        "whole-cluster to wait",
        || env.job("whole-cluster").filter(|j| j["status"]["phase"] == "Pending" && j["status"]["message"].is_string()),
        || env.describe("whole-cluster"),
    );
    assert!(job["status"]["message"].as_str().unwrap().contains("healthy"), "{job}");
    assert!(env.pods("whole-cluster").is_empty());

    // Cleared: the annotation empties, the taint goes, the gang runs.
    let r = http.delete(format!("{}/api/v1/nodes/{node}/gpus/2/health", capstan.url())).send().unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap_or_default());
    wait_for(
        Duration::from_secs(60),
        "the node to be clear again",
        || {
            let n = node_json(node);
            let clear = n["metadata"]["annotations"]["capstan.dev/unhealthy-gpus"] == ""
                && !n["spec"]["taints"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t["key"] == "capstan.dev/gpu-unhealthy"));
            clear.then_some(())
        },
        agent_log,
    );
    env.wait_pods_running("whole-cluster", 4);
}

#[test]
fn a_model_deployment_becomes_deployments_and_services_and_turns_ready() {
    let env = Env::new("kc-serve");
    env.apply(
        "apiVersion: capstan.dev/v1alpha1\nkind: ModelDeployment\nmetadata:\n  name: iris\nspec:\n  model: {uri: \"s3://models/iris/1/model.onnx\"}\n  minReplicas: 2\n  resources: {cpu: 500m}\n  canary:\n    model: {uri: \"s3://models/iris/2/model.onnx\"}\n    canaryPercent: 20\n",
    );
    let describe = || {
        let o = kubectl(&["get", "mdep,deploy,svc,pods", "-n", &env.ns, "-o", "wide"]);
        format!("{}\n{}", text(&o), env.log())
    };
    let md = wait_for(
        Duration::from_secs(90),
        "the deployment to be serving with its canary",
        || {
            get_json(&["modeldeployment", "iris", "-n", &env.ns])
                .filter(|m| m["status"]["phase"] == "Canary" && m["status"]["readyReplicas"] == 3)
        },
        describe,
    );
    let deps = get_json(&["deployments", "-n", &env.ns]).unwrap();
    let deps = deps["items"].as_array().unwrap();
    assert_eq!(deps.len(), 2, "one Deployment per version");
    for d in deps {
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["args"][0], "serve", "the builtin runtime: {c}");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/v2/health/ready");
        assert_eq!(d["metadata"]["ownerReferences"][0]["kind"], "ModelDeployment");
    }
    let replicas: Vec<i64> = deps.iter().map(|d| d["spec"]["replicas"].as_i64().unwrap()).collect();
    assert!(replicas.contains(&2) && replicas.contains(&1), "stable 2, canary 1: {replicas:?}");
    let front = get_json(&["service", "iris", "-n", &env.ns]).expect("the front Service");
    assert_eq!(front["spec"]["selector"]["capstan.dev/model-deployment"], "iris");
    let traffic: Vec<i64> =
        md["status"]["traffic"].as_array().unwrap().iter().map(|t| t["percent"].as_i64().unwrap()).collect();
    assert_eq!(traffic, [80, 20]);
    assert_eq!(md["status"]["url"], format!("http://iris.{}.svc/v2/models/iris", env.ns).as_str());
    let table = kubectl_ok(&["get", "mdep", "-n", &env.ns], None);
    assert!(table.contains("Canary"), "{table}");

    // The canary goes: its Deployment is removed, the stable one takes all the traffic.
    kubectl_ok(
        &["patch", "mdep", "iris", "-n", &env.ns, "--type=json", "-p", r#"[{"op":"remove","path":"/spec/canary"}]"#],
        None,
    );
    wait_for(
        Duration::from_secs(60),
        "one version left, Ready",
        || {
            let m = get_json(&["modeldeployment", "iris", "-n", &env.ns])?;
            let n = get_json(&["deployments", "-n", &env.ns])?["items"].as_array()?.len();
            (m["status"]["phase"] == "Ready" && n == 1).then_some(())
        },
        describe,
    );
}

#[test]
fn a_pipeline_run_trains_evaluates_registers_and_deploys_on_the_cluster() {
    let capstan = Capstan::start();
    let env = Env::with_tracking("kc-pipe", Some(capstan.url()));
    let model = format!("iris-{}", env.ns);
    env.apply(&format!(
        "apiVersion: capstan.dev/v1alpha1\nkind: ModelDeployment\nmetadata:\n  name: iris\nspec:\n  model: {{uri: \"s3://models/iris/0/model.onnx\"}}\n---\napiVersion: capstan.dev/v1alpha1\nkind: Pipeline\nmetadata:\n  name: iris\nspec:\n  parameters:\n    - {{name: threshold, default: \"0.9\"}}\n  steps:\n    - name: train\n      train:\n        template: {{image: \"trainer:1\", command: [python, train.py]}}\n    - name: evaluate\n      dependsOn: [train]\n      evaluate:\n        template: {{image: \"trainer:1\", command: [python, evaluate.py]}}\n    - name: register\n      dependsOn: [evaluate]\n      when: \"steps.evaluate.metrics.accuracy > double(params.threshold)\"\n      register: {{model: {model}, fromStep: train, alias: champion}}\n    - name: deploy\n      dependsOn: [register]\n      deploy: {{deployment: iris, fromStep: register}}\n"
    ));
    // The run's annotations reach the step jobs' pods: kwok ends each after 6 s with 0.
    env.apply(
        "apiVersion: capstan.dev/v1alpha1\nkind: PipelineRun\nmetadata:\n  name: iris-run-1\n  annotations:\n    kwok.capstan.dev/exit-code: \"0\"\n    kwok.capstan.dev/run-duration: \"6s\"\nspec:\n  pipelineRef: iris\n  commit: {sha: 0123456789abcdef0123456789abcdef01234567, branch: main, author: Ada, message: better features}\n",
    );
    let describe = || {
        let o = kubectl(&["get", "plr,tj,mdep,deploy,pods", "-n", &env.ns, "-o", "wide"]);
        let r = kubectl(&["get", "plr", "iris-run-1", "-n", &env.ns, "-o", "yaml"]);
        format!("{}\n{}\n{}", text(&o), text(&r), env.log())
    };
    // The evaluation logs its accuracy to its tracking run while it runs, as train code would.
    let eval_run = wait_for(
        Duration::from_secs(90),
        "the evaluate step's job to have a tracking run",
        || {
            let list = get_json(&["trainingjobs", "-n", &env.ns, "-l", "capstan.dev/pipeline-step=evaluate"])?;
            list["items"].as_array()?.first()?["status"]["trackingRunId"].as_str().map(str::to_string)
        },
        describe,
    );
    let (code, body) = capstan.post(
        "/api/2.0/mlflow/runs/log-metric",
        "application/json",
        serde_json::json!({"run_id": eval_run, "key": "accuracy", "value": 0.97, "timestamp": 1, "step": 0})
            .to_string()
            .into_bytes(),
    );
    assert_eq!(code, 200, "{body}");
    let run = wait_for(
        Duration::from_secs(120),
        "the pipeline run to succeed",
        || get_json(&["pipelinerun", "iris-run-1", "-n", &env.ns]).filter(|r| r["status"]["phase"] == "Succeeded"),
        describe,
    );
    let steps = run["status"]["steps"].as_array().unwrap();
    let register = steps.iter().find(|s| s["name"] == "register").unwrap();
    assert_eq!(register["modelVersion"]["version"], 1, "{run}");
    // The registry has the version, with the commit, and the alias on it.
    let (code, body) = capstan.get(&format!("/api/2.0/mlflow/registered-models/alias?name={model}&alias=champion"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["model_version"]["version"], "1");
    let tags = body["model_version"]["tags"].as_array().cloned().unwrap_or_default();
    assert!(tags.iter().any(|t| t["key"] == "capstan.dev/commit"), "{body}");
    // The deployment now serves that version: its spec points at it and a Deployment runs it.
    let md = get_json(&["modeldeployment", "iris", "-n", &env.ns]).unwrap();
    assert_eq!(md["spec"]["model"]["registeredModel"], model.as_str(), "{md}");
    assert_eq!(md["spec"]["model"]["version"], 1, "{md}");
    wait_for(
        Duration::from_secs(60),
        "the Deployment of version 1",
        || get_json(&["deployment", "iris-v1", "-n", &env.ns]),
        describe,
    );
}
