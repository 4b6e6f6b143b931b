//! Autoscaling bounds of ModelDeployments on Kubernetes, against the real control plane of
//! tests/cluster/ (kube-apiserver 1.34, kube-controller-manager, kwok nodes).
//!
//! kwok's pods serve no HTTP, so the controller can read no load from them: what this suite
//! shows is the bounds: minReplicas replicas are created, a missing load holds the count,
//! raising minReplicas scales up, lowering maxReplicas scales down, and the status says
//! `replicas` / `desiredReplicas`. Scaling on a real load is shown by `capstan up`
//! (tests/serving.rs, `model_deployment_autoscales_on_concurrency_and_back`) and, for the
//! Kubernetes side's scrape and decision, by unit tests (`capstan_serving::autoscale`,
//! `capstan_controller::k8s::serving`).
//!
//! The controller runs with the Helm chart's ServiceAccount permissions (impersonated), as
//! in tests/kube_controller.rs. Behind the `cluster` feature; fails, never skips, without
//! the control plane:
//!
//!     eval "$(tests/cluster/up.sh /tmp/capstan-cluster)"
//!     CAPSTAN_TEST_KUBECONFIG=$KUBECONFIG cargo test -p capstan-e2e --features cluster --test kube_autoscale
#![cfg(feature = "cluster")]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use capstan_e2e::{capstan_bin, unique_name, workspace_root};
use serde_json::Value;

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
    let imp = std::env::temp_dir().join(format!("capstan-kubeconfig-autoscale-{}", std::process::id()));
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
        let ns = unique_name("kc-scale");
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

    /// spec.replicas of the one Deployment of the deployment `iris`, and its pods (not
    /// terminating). Readiness is left out: on a loaded machine kwok's node heartbeats can
    /// lapse, and the node lifecycle controller then marks the pods not ready for a while.
    fn deployment(&self) -> Option<(i64, i64)> {
        let l = get_json(&["deployments", "-n", &self.ns, "-l", "capstan.dev/model-deployment=iris"])?;
        let items = l["items"].as_array()?;
        if items.len() != 1 {
            return None;
        }
        let pods = get_json(&["pods", "-n", &self.ns, "-l", "capstan.dev/model-deployment=iris"])?;
        let live = pods["items"].as_array()?.iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).count();
        Some((items[0]["spec"]["replicas"].as_i64().unwrap_or(-1), live as i64))
    }

    fn mdep(&self) -> Option<Value> {
        get_json(&["modeldeployment", "iris", "-n", &self.ns])
    }

    fn wait_replicas(&self, want: i64, what: &str) -> Value {
        wait_for(
            Duration::from_secs(90),
            what,
            || {
                let m = self.mdep()?;
                let v = &m["status"]["versions"][0];
                (self.deployment()? == (want, want) && v["replicas"] == want && m["status"]["replicas"] == want)
                    .then_some(m)
            },
            || self.describe(),
        )
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = kubectl_with(&kubeconfig(), &["delete", "namespace", &self.ns, "--wait=true", "--timeout=90s"], None);
        let _ = self.controller.kill();
        let _ = self.controller.wait();
    }
}

#[test]
fn autoscaling_keeps_each_version_within_its_bounds() {
    let env = Env::new();
    let manifest = |min: u32, max: u32| {
        format!(
            "apiVersion: capstan.dev/v1alpha1\nkind: ModelDeployment\nmetadata:\n  name: iris\nspec:\n  model: {{uri: \"s3://models/iris/1/model.onnx\"}}\n  minReplicas: {min}\n  maxReplicas: {max}\n  resources: {{cpu: 100m}}\n  autoscaling: {{metric: concurrency, target: 1, scaleDownStabilizationSeconds: 1}}\n"
        )
    };
    let apply = |yaml: String| kubectl_ok(&["apply", "-n", &env.ns, "-f", "-"], Some(&yaml));

    // minReplicas created; no load readable from kwok's pods: the count holds there.
    apply(manifest(2, 4));
    let m = env.wait_replicas(2, "2 replicas (minReplicas)");
    assert_eq!(m["status"]["versions"][0]["desiredReplicas"], 2, "{}", m["status"]);
    assert_eq!(m["status"]["desiredReplicas"], 2, "{}", m["status"]);
    // Several passes later (the controller passes at least every 5 s), still 2.
    let deadline = Instant::now() + Duration::from_secs(12);
    while Instant::now() < deadline {
        assert_eq!(env.deployment().map(|d| d.0), Some(2), "{}", env.describe());
        std::thread::sleep(Duration::from_millis(500));
    }

    // A higher floor scales up, with an event saying why.
    apply(manifest(3, 4));
    env.wait_replicas(3, "3 replicas (minReplicas raised)");
    // A lower ceiling scales down, never above it.
    apply(manifest(1, 1));
    let m = env.wait_replicas(1, "1 replica (maxReplicas lowered)");
    let cond = m["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Scaled").cloned())
        .unwrap_or_else(|| panic!("no Scaled condition: {}", m["status"]));
    assert_eq!(cond["reason"], "ScaledDown", "{cond}");
    assert!(cond["message"].as_str().unwrap().contains("3 -> 1 replicas"), "{cond}");
    let events = get_json(&["events.events.k8s.io", "-n", &env.ns]).unwrap();
    let reasons: Vec<&str> = events["items"].as_array().unwrap().iter().filter_map(|e| e["reason"].as_str()).collect();
    assert!(reasons.contains(&"ScaledUp") && reasons.contains(&"ScaledDown"), "{reasons:?}");
}

/// A real `capstan serve` on 127.0.0.1, killed on drop.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Plays the kubelet for the deployment's pods: each live pod gets podIP 127.0.0.1 (where the
/// real server listens) and Ready (kwok's own Ready can be withdrawn by the node lifecycle
/// controller when its heartbeats lapse on a loaded machine).
fn point_pods_at_localhost(ns: &str) {
    let Some(pods) = get_json(&["pods", "-n", ns, "-l", "capstan.dev/model-deployment=iris"]) else { return };
    for p in pods["items"].as_array().cloned().unwrap_or_default() {
        let ready = p["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        if !p["metadata"]["deletionTimestamp"].is_null()
            || p["status"]["phase"] != "Running"
            || (p["status"]["podIP"] == "127.0.0.1" && ready)
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
        if p["status"]["podIP"] != "127.0.0.1" {
            status("merge", r#"{"status":{"podIP":"127.0.0.1","podIPs":[{"ip":"127.0.0.1"}]}}"#);
        }
        if !ready {
            status("strategic", r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#);
        }
    }
}

#[test]
fn replicas_follow_the_request_rate_scraped_from_the_pods() {
    // The model, and a real server for it where the pods will say they are.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.onnx");
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
    let port = capstan_e2e::free_port();
    let serve_log = dir.path().join("serve.log");
    let f = std::fs::File::create(&serve_log).unwrap();
    let _serve = Serve(
        Command::new(capstan_bin())
            .args(["serve", "--model", model.to_str().unwrap(), "--name", "iris"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn capstan serve"),
    );
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    wait_for(
        Duration::from_secs(60),
        "capstan serve to be ready",
        || {
            http.get(format!("http://127.0.0.1:{port}/v2/health/ready"))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        },
        || std::fs::read_to_string(&serve_log).unwrap_or_default(),
    );

    // An image runtime on that port (kwok runs no image); 5 requests per second per replica.
    let env = Env::new();
    kubectl_ok(
        &["apply", "-n", &env.ns, "-f", "-"],
        Some(&format!(
            "apiVersion: capstan.dev/v1alpha1\nkind: ModelDeployment\nmetadata:\n  name: iris\nspec:\n  model: {{uri: \"s3://models/iris/1/model.onnx\"}}\n  runtime: {{type: image, image: \"capstan:0.1.0\", port: {port}}}\n  minReplicas: 1\n  maxReplicas: 3\n  resources: {{cpu: 100m}}\n  autoscaling: {{metric: rps, target: 5, scaleDownStabilizationSeconds: 2}}\n"
        )),
    );
    let describe = || env.describe();
    wait_for(
        Duration::from_secs(90),
        "one replica, read",
        || {
            point_pods_at_localhost(&env.ns);
            (env.deployment()? == (1, 1)).then_some(())
        },
        describe,
    );

    // Requests straight at the server the pods stand for: far above 5 per second.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, http) = (stop.clone(), http.clone());
            std::thread::spawn(move || {
                let body = serde_json::json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0.1, 0.2, 0.3, 0.4]}]});
                let mut ok = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = http.post(format!("http://127.0.0.1:{port}/v2/models/iris/infer")).json(&body).send();
                    if r.is_ok_and(|r| r.status().is_success()) {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let m = wait_for(
        Duration::from_secs(90),
        "3 replicas (maxReplicas) from the scraped request rate",
        || {
            point_pods_at_localhost(&env.ns);
            let m = env.mdep()?;
            (env.deployment()?.0 == 3 && m["status"]["versions"][0]["replicas"] == 3).then_some(m)
        },
        describe,
    );
    assert_eq!(m["status"]["versions"][0]["desiredReplicas"], 3, "{}", m["status"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered: u64 = load.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(answered > 0, "the server answered nothing");
    let up = get_json(&["events.events.k8s.io", "-n", &env.ns]).unwrap()["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["reason"] == "ScaledUp")
        .cloned()
        .unwrap_or_else(|| panic!("no ScaledUp event\n{}", env.describe()));
    let note = up["note"].as_str().unwrap();
    eprintln!("ScaledUp: {note}");
    assert!(note.contains("rps") && note.contains("target 5"), "{note}");
    // Stays within maxReplicas under the load, and returns to minReplicas without it.
    assert!(env.deployment().is_some_and(|d| d.0 <= 3));
    wait_for(
        Duration::from_secs(90),
        "back to 1 replica once the requests stop",
        || {
            point_pods_at_localhost(&env.ns);
            let m = env.mdep()?;
            (env.deployment()?.0 == 1 && m["status"]["versions"][0]["replicas"] == 1).then_some(())
        },
        describe,
    );
}
