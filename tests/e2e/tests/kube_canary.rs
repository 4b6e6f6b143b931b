//! Metric-gated canaries of ModelDeployments on Kubernetes, against the real control plane
//! of tests/cluster/ (kube-apiserver 1.34, kube-controller-manager, kwok nodes).
//!
//! kwok's pods run nothing, so each version's pods are pointed at a real `capstan serve`
//! (status.podIP patched, as a kubelet would report it): the stable version's at one on
//! 127.0.0.1, the canary's at another on 127.0.0.2 (same port, the runtime's). The test sends
//! requests straight to both servers, and the controller reads each pod's real `/metrics`
//! (requests by outcome, the latency histogram) and judges the canary as `capstan up` does:
//! a canary answering only errors (the test sends it inputs of the wrong shape: 400s, counted
//! as `client_error`) is rolled back, a healthy one promoted, with the verdict in the status
//! and an event.
//!
//! The controller runs with the Helm chart's ServiceAccount permissions (impersonated), as
//! in tests/kube_controller.rs. Behind the `cluster` feature; fails, never skips, without
//! the control plane:
//!
//!     eval "$(tests/cluster/up.sh /tmp/capstan-cluster)"
//!     CAPSTAN_TEST_KUBECONFIG=$KUBECONFIG cargo test -p capstan-e2e --features cluster --test kube_canary
#![cfg(feature = "cluster")]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_e2e::{capstan_bin, unique_name, workspace_root};
use serde_json::{json, Value};

const CHART_NS: &str = "capstan-system";
const CONTROLLER_SA: &str = "system:serviceaccount:capstan-system:capstan-controller";

fn kubeconfig() -> PathBuf {
    PathBuf::from(
        std::env::var("CAPSTAN_TEST_KUBECONFIG").expect(
            "CAPSTAN_TEST_KUBECONFIG must point at the test control plane: eval \"$(tests/cluster/up.sh DIR)\"",
        ),
    )
}

/// kubectl or helm, next to the kubeconfig (tests/cluster/up.sh writes them there).
fn tool(name: &str) -> PathBuf {
    let bin = kubeconfig().parent().unwrap().join("bin").join(name);
    assert!(bin.exists(), "{} is missing: tests/cluster/up.sh writes it", bin.display());
    bin
}

fn kubectl_with(kc: &PathBuf, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(tool("kubectl"));
    cmd.env("KUBECONFIG", kc).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn kubectl");
    if let Some(s) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> String {
    let o = kubectl_with(&kubeconfig(), args, stdin);
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "kubectl {args:?} failed:\n{out}");
    out
}

fn get_json(args: &[&str]) -> Option<Value> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend(["-o", "json"]);
    let o = kubectl_with(&kubeconfig(), &a, None);
    o.status.success().then(|| serde_json::from_slice(&o.stdout).ok()).flatten()
}

fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>, describe: impl Fn() -> String) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}\n{}", describe());
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The CRDs and the chart's controller RBAC; a kubeconfig impersonating its ServiceAccount.
fn setup() -> PathBuf {
    let crds = workspace_root().join("helm/capstan/crds");
    kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", crds.to_str().unwrap()], None);
    kubectl_ok(&["wait", "--for", "condition=established", "--timeout=60s", "crd/modeldeployments.capstan.dev"], None);
    let _ = kubectl_with(&kubeconfig(), &["create", "namespace", CHART_NS], None);
    let chart = workspace_root().join("helm/capstan");
    let o = Command::new(tool("helm"))
        .args(["template", "capstan", chart.to_str().unwrap(), "--namespace", CHART_NS])
        .args(["--show-only", "templates/controller.yaml"])
        .output()
        .expect("spawn helm");
    assert!(o.status.success(), "helm template failed:\n{}", String::from_utf8_lossy(&o.stderr));
    let docs: Vec<&str> = std::str::from_utf8(&o.stdout)
        .unwrap()
        .split("\n---")
        .filter(|d| !d.contains("kind: Deployment") && !d.contains("kind: DaemonSet"))
        .collect();
    kubectl_ok(&["apply", "-f", "-"], Some(&docs.join("\n---\n")));
    let kc = std::fs::read_to_string(kubeconfig()).unwrap();
    assert!(kc.contains("    token: "), "unexpected kubeconfig layout:\n{kc}");
    let imp = std::env::temp_dir().join(format!("capstan-kubeconfig-canary-{}", std::process::id()));
    std::fs::write(&imp, kc.replace("    token: ", &format!("    as: {CONTROLLER_SA}\n    token: "))).unwrap();
    imp
}

/// A namespace and a controller watching it; both go on drop.
struct Env {
    ns: String,
    controller: Child,
    log: PathBuf,
}

impl Env {
    fn new() -> Env {
        let kc = setup();
        let ns = unique_name("kc-canary");
        kubectl_ok(&["create", "namespace", &ns], None);
        let log = std::env::temp_dir().join(format!("{ns}-controller.log"));
        let f = std::fs::File::create(&log).unwrap();
        let controller = Command::new(capstan_bin())
            .arg("controller")
            .arg("--kubeconfig")
            .arg(&kc)
            .args(["--watch-namespace", &ns])
            .args(["--leader-election-namespace", CHART_NS])
            .args(["--leader-election-lease", &format!("lease-{ns}")])
            .args(["--identity", &format!("{ns}-0")])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env_remove("KUBECONFIG")
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn capstan controller");
        Env { ns, controller, log }
    }

    fn describe(&self) -> String {
        let o = kubectl_with(&kubeconfig(), &["get", "mdep,deploy,pods", "-n", &self.ns, "-o", "wide"], None);
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        format!(
            "{}\ncontroller log (tail):\n{}",
            String::from_utf8_lossy(&o.stdout),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    fn mdep(&self) -> Option<Value> {
        get_json(&["modeldeployment", "iris", "-n", &self.ns])
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = kubectl_with(&kubeconfig(), &["delete", "namespace", &self.ns, "--wait=true", "--timeout=90s"], None);
        let _ = self.controller.kill();
        let _ = self.controller.wait();
    }
}

/// A real `capstan serve` on 127.0.0.1, killed on drop.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Plays the kubelet for the deployment's pods: the stable version's pods get podIP
/// 127.0.0.1, the canary's (`iris-2` in their version label) 127.0.0.2, where the real
/// servers listen, and Ready.
fn point_pods_at_servers(ns: &str) {
    let Some(pods) = get_json(&["pods", "-n", ns, "-l", "capstan.dev/model-deployment=iris"]) else { return };
    for p in pods["items"].as_array().cloned().unwrap_or_default() {
        let version = p["metadata"]["labels"]["capstan.dev/model-version"].as_str().unwrap_or_default();
        let ip = if version.contains("iris-2") { "127.0.0.2" } else { "127.0.0.1" };
        let ready = p["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        if !p["metadata"]["deletionTimestamp"].is_null()
            || p["status"]["phase"] != "Running"
            || (p["status"]["podIP"] == ip && ready)
        {
            continue;
        }
        let name = p["metadata"]["name"].as_str().unwrap();
        let status = |kind: &str, patch: &str| {
            let _ = kubectl_with(
                &kubeconfig(),
                &["patch", "pod", name, "-n", ns, "--subresource=status", &format!("--type={kind}"), "-p", patch],
                None,
            );
        };
        if p["status"]["podIP"] != ip {
            status("merge", &format!(r#"{{"status":{{"podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}]}}}}"#));
        }
        if !ready {
            status("strategic", r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#);
        }
    }
}

/// The model file and a ready `capstan serve` of it on `ip:port`.
fn serve(dir: &std::path::Path, ip: &str, port: u16) -> Serve {
    let model = dir.join("model.onnx");
    if !model.exists() {
        let out = Command::new("python3")
            .arg(workspace_root().join("tests/e2e/python/onnx_models.py"))
            .args(["classifier", model.to_str().unwrap()])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "building the ONNX model needs python3 with onnx (scripts/install-deps.sh): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let log = dir.join(format!("serve-{ip}.log"));
    let f = std::fs::File::create(&log).unwrap();
    let s = Serve(
        Command::new(capstan_bin())
            .args(["serve", "--model", model.to_str().unwrap(), "--name", "iris"])
            .args(["--listen", &format!("{ip}:{port}")])
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn capstan serve"),
    );
    let http = reqwest::blocking::Client::new();
    wait_for(
        Duration::from_secs(60),
        &format!("capstan serve on {ip}:{port} to be ready"),
        || {
            http.get(format!("http://{ip}:{port}/v2/health/ready"))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        },
        || std::fs::read_to_string(&log).unwrap_or_default(),
    );
    s
}

/// Requests sent straight to a server until dropped: well-formed ones, or (`bad`) inputs of
/// the wrong shape, which the server refuses with a 400.
struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl Load {
    fn start(ip: &str, port: u16, bad: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let url = format!("http://{ip}:{port}/v2/models/iris/infer");
        let data: Vec<f32> = if bad { vec![0.1, 0.2, 0.3] } else { vec![0.1, 0.2, 0.3, 0.4] };
        let shape = if bad { [1, 3] } else { [1, 4] };
        let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "data": data}]});
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
            let (mut ok, mut failed) = (0, 0);
            while !s.load(Ordering::Relaxed) {
                match http.post(&url).json(&body).send() {
                    Ok(r) if r.status().is_success() => ok += 1,
                    _ => failed += 1,
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (ok, failed)
        });
        Load { stop, thread: Some(thread) }
    }

    /// Stops; (answered, refused or failed).
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const STABLE: &str = "s3-models-iris-1-model-onnx";
const CANARY: &str = "s3-models-iris-2-model-onnx";

/// Applies `iris` with a canary of 20% judged over 2 s windows on at least 20 requests, waits
/// until both versions' Deployments exist and the canary is Progressing, and starts the
/// requests (`canary_bad`: inputs the canary refuses).
fn start_canary(env: &Env, port: u16, canary_bad: bool, extra: &str) -> (Load, Load) {
    kubectl_ok(
        &["apply", "-n", &env.ns, "-f", "-"],
        Some(&format!(
            "apiVersion: capstan.dev/v1alpha1\nkind: ModelDeployment\nmetadata:\n  name: iris\nspec:\n  model: {{uri: \"s3://models/iris/1/model.onnx\"}}\n  runtime: {{type: image, image: \"capstan:0.1.0\", port: {port}}}\n  minReplicas: 1\n  resources: {{cpu: 100m}}\n  canary: {{model: {{uri: \"s3://models/iris/2/model.onnx\"}}, canaryPercent: 20, windowSeconds: 2, minRequests: 20, maxErrorRate: 0.05{extra}}}\n"
        )),
    );
    wait_for(
        Duration::from_secs(90),
        "both versions served, the canary Progressing",
        || {
            point_pods_at_servers(&env.ns);
            let m = env.mdep()?;
            (m["status"]["canary"]["phase"] == "Progressing" && m["status"]["canary"]["version"] == CANARY)
                .then_some(())
        },
        || env.describe(),
    );
    (Load::start("127.0.0.1", port, false), Load::start("127.0.0.2", port, canary_bad))
}

fn deployments(ns: &str) -> Vec<String> {
    get_json(&["deployments", "-n", ns, "-l", "capstan.dev/model-deployment=iris"])
        .map(|l| {
            l["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["metadata"]["deletionTimestamp"].is_null())
                .map(|d| d["metadata"]["labels"]["capstan.dev/model-version"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn event(ns: &str, reason: &str) -> Option<Value> {
    get_json(&["events.events.k8s.io", "-n", ns])?["items"].as_array()?.iter().find(|e| e["reason"] == reason).cloned()
}

#[test]
fn a_canary_answering_errors_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let port = capstan_e2e::free_port();
    let _stable = serve(dir.path(), "127.0.0.1", port);
    let _canary = serve(dir.path(), "127.0.0.2", port);
    let env = Env::new();
    let (stable_load, canary_load) = start_canary(&env, port, true, "");
    let m = wait_for(
        Duration::from_secs(90),
        "the canary rolled back",
        || {
            point_pods_at_servers(&env.ns);
            let m = env.mdep()?;
            (m["status"]["canary"]["phase"] == "RolledBack").then_some(m)
        },
        || env.describe(),
    );
    let (ok, _) = stable_load.finish();
    let (_, refused) = canary_load.finish();
    assert!(ok > 0 && refused > 0, "stable answered {ok}, canary refused {refused}");
    let c = &m["status"]["canary"];
    assert_eq!(c["verdict"], "Rollback", "{c}");
    assert_eq!(c["trafficPercent"], 0, "{c}");
    let reason = c["reason"].as_str().unwrap();
    eprintln!("rolled back: {reason} (stable answered {ok}, canary refused {refused})");
    assert!(reason.contains("canary error rate 100.0%") && reason.contains("maxErrorRate 5.0%"), "{reason}");
    assert!(c["errors"].as_u64().unwrap() >= 20 && c["errors"] == c["requests"], "{c}");
    assert!(c["stableRequests"].as_u64().unwrap() > 0 && c["stableErrors"] == 0, "{c}");
    assert_eq!(m["status"]["traffic"], json!([{"version": STABLE, "percent": 100}]), "{}", m["status"]);
    let cond = m["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "CanaryRolledBack").cloned();
    assert_eq!(cond.map(|c| c["reason"].clone()), Some(json!("MetricsFailed")), "{}", m["status"]);
    let ev =
        event(&env.ns, "CanaryRolledBack").unwrap_or_else(|| panic!("no CanaryRolledBack event\n{}", env.describe()));
    assert_eq!(ev["type"], "Warning");
    assert!(ev["note"].as_str().unwrap().contains(&format!("version {CANARY} rolled back: canary error rate")), "{ev}");
    // The canary's Deployment goes; the stable version keeps serving.
    wait_for(
        Duration::from_secs(60),
        "only the stable version's Deployment",
        || (deployments(&env.ns) == [STABLE]).then_some(()),
        || env.describe(),
    );
    assert_eq!(env.mdep().unwrap()["status"]["canary"]["phase"], "RolledBack", "the verdict stays");
}

#[test]
fn a_healthy_canary_is_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let port = capstan_e2e::free_port();
    let _stable = serve(dir.path(), "127.0.0.1", port);
    let _canary = serve(dir.path(), "127.0.0.2", port);
    let env = Env::new();
    // Two servers of one model on a shared 2-core machine: sub-millisecond p99s that differ
    // by more than the default 1.5x by chance; the latency gate is the unit tests' subject.
    let (stable_load, canary_load) = start_canary(&env, port, false, ", maxP99LatencyRatio: 20");
    let m = wait_for(
        Duration::from_secs(90),
        "the canary promoted",
        || {
            point_pods_at_servers(&env.ns);
            let m = env.mdep()?;
            (m["status"]["canary"]["phase"] == "Promoted").then_some(m)
        },
        || env.describe(),
    );
    let (ok_s, _) = stable_load.finish();
    let (ok_c, _) = canary_load.finish();
    assert!(ok_s > 0 && ok_c > 0, "answered: stable {ok_s}, canary {ok_c}");
    let c = &m["status"]["canary"];
    assert_eq!(c["verdict"], "Promote", "{c}");
    assert!(c["requests"].as_u64().unwrap() >= 20 && c["errors"] == 0, "{c}");
    assert!(c["p99Ms"].as_f64().is_some(), "{c}");
    let ev = event(&env.ns, "CanaryPromoted").unwrap_or_else(|| panic!("no CanaryPromoted event\n{}", env.describe()));
    assert_eq!(ev["type"], "Normal");
    eprintln!("promoted: {} (stable answered {ok_s}, canary {ok_c})", ev["note"]);
    assert!(ev["note"].as_str().unwrap().starts_with(&format!("version {CANARY} promoted: ")), "{ev}");
    // The canary is the stable version, with all the traffic; the old version's Deployment goes.
    let m = wait_for(
        Duration::from_secs(60),
        "the promoted version alone",
        || {
            point_pods_at_servers(&env.ns);
            let m = env.mdep()?;
            (deployments(&env.ns) == [CANARY] && m["status"]["stableVersion"] == CANARY).then_some(m)
        },
        || env.describe(),
    );
    assert_eq!(m["status"]["traffic"], json!([{"version": CANARY, "percent": 100}]), "{}", m["status"]);
    assert_eq!(m["status"]["canary"]["phase"], "Promoted", "the verdict stays");
}
