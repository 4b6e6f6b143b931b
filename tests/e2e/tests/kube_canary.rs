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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use capstan_e2e::kube::{
    build_onnx_classifier, get_json, kubectl_ok, model_deployment_env, point_pods_at, serve_model, wait_for_every,
    Kill, KubeEnv,
};
use serde_json::{json, Value};

/// [`wait_for_every`] polling every 300 ms.
fn wait_for<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>, describe: impl Fn() -> String) -> T {
    wait_for_every(Duration::from_millis(300), timeout, what, f, describe)
}

/// A namespace and a controller watching it; both go on drop.
fn new_env() -> KubeEnv {
    model_deployment_env("canary", "kc-canary")
}

/// What this suite reads of its namespace.
trait Mdep {
    /// The ModelDeployments, Deployments and pods, and the controller's log (tail).
    fn describe(&self) -> String;
    /// The ModelDeployment `iris`.
    fn mdep(&self) -> Option<Value>;
}

impl Mdep for KubeEnv {
    fn describe(&self) -> String {
        self.describe_wide("mdep,deploy,pods")
    }

    fn mdep(&self) -> Option<Value> {
        get_json(&["modeldeployment", "iris", "-n", &self.ns])
    }
}

/// Plays the kubelet for the deployment's pods: the stable version's pods get podIP
/// 127.0.0.1, the canary's (`iris-2` in their version label) 127.0.0.2, where the real
/// servers listen, and Ready.
fn point_pods_at_servers(ns: &str) {
    point_pods_at(ns, |p| {
        let version = p["metadata"]["labels"]["capstan.dev/model-version"].as_str().unwrap_or_default();
        if version.contains("iris-2") {
            "127.0.0.2"
        } else {
            "127.0.0.1"
        }
    });
}

/// The model file and a ready `capstan serve` of it on `ip:port`.
fn serve(dir: &std::path::Path, ip: &str, port: u16) -> Kill {
    let model = dir.join("model.onnx");
    if !model.exists() {
        build_onnx_classifier(&model);
    }
    let log = dir.join(format!("serve-{ip}.log"));
    serve_model(&model, ip, port, &log, &format!("capstan serve on {ip}:{port} to be ready"), None)
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
fn start_canary(env: &KubeEnv, port: u16, canary_bad: bool, extra: &str) -> (Load, Load) {
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
    let env = new_env();
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
    let env = new_env();
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
