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

use std::time::{Duration, Instant};

use capstan_e2e::kube::{
    build_onnx_classifier, get_json, kubectl_ok, model_deployment_env, point_pods_at, serve_model, wait_for_every,
    KubeEnv,
};
use serde_json::Value;

/// [`wait_for_every`] polling every 300 ms.
fn wait_for<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>, describe: impl Fn() -> String) -> T {
    wait_for_every(Duration::from_millis(300), timeout, what, f, describe)
}

/// A namespace and a controller watching it; both go on drop.
fn new_env() -> KubeEnv {
    model_deployment_env("autoscale", "kc-scale")
}

/// What this suite reads of its namespace.
trait Mdep {
    /// The ModelDeployments, Deployments and pods, and the controller's log (tail).
    fn describe(&self) -> String;
    /// spec.replicas of the one Deployment of the deployment `iris`, and its pods (not
    /// terminating). Readiness is left out: on a loaded machine kwok's node heartbeats can
    /// lapse, and the node lifecycle controller then marks the pods not ready for a while.
    fn deployment(&self) -> Option<(i64, i64)>;
    /// The ModelDeployment `iris`.
    fn mdep(&self) -> Option<Value>;
    /// Waits until `iris` has `want` replicas, in its Deployment and its status.
    fn wait_replicas(&self, want: i64, what: &str) -> Value;
}

impl Mdep for KubeEnv {
    fn describe(&self) -> String {
        self.describe_wide("mdep,deploy,pods")
    }

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

#[test]
fn autoscaling_keeps_each_version_within_its_bounds() {
    let env = new_env();
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

/// Plays the kubelet for the deployment's pods: each live pod gets podIP 127.0.0.1 (where the
/// real server listens) and Ready (kwok's own Ready can be withdrawn by the node lifecycle
/// controller when its heartbeats lapse on a loaded machine).
fn point_pods_at_localhost(ns: &str) {
    point_pods_at(ns, |_| "127.0.0.1");
}

#[test]
fn replicas_follow_the_request_rate_scraped_from_the_pods() {
    // The model, and a real server for it where the pods will say they are.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.onnx");
    build_onnx_classifier(&model);
    let port = capstan_e2e::free_port();
    let serve_log = dir.path().join("serve.log");
    let _serve =
        serve_model(&model, "127.0.0.1", port, &serve_log, "capstan serve to be ready", Some(Duration::from_secs(10)));
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();

    // An image runtime on that port (kwok runs no image); 5 requests per second per replica.
    let env = new_env();
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
