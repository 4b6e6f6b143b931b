//! GPU health that acts on Kubernetes, against the real control plane of tests/cluster/
//! (etcd, kube-apiserver 1.34, kwok playing the kubelets of fake 8-GPU nodes).
//!
//! `capstan agent --kubernetes --simulate-gpus 8` runs for the kwok node a TrainingJob's pod
//! landed on, with the permissions of the Helm chart's agent ServiceAccount (impersonated),
//! next to `capstan controller` with the chart's controller ServiceAccount. kwok has no kubelet,
//! hence no pod-resources API: in the first test the agent's simulated device plugin gives the
//! node's pods their GPUs (first free healthy indices in creation order), which is what lets
//! this suite inject an XID into the very GPU a pod got. The second test serves the kubelet's
//! pod-resources API with the kubelet's own server code (`tests/cluster/podresources`, device
//! grants from a file) and checks that the agent attributes and marks by what it answers. No
//! kubelet with a container runtime runs here, so the cgroup fallback (NVML's processes) is
//! unit-tested only, in `capstan_agent::attribution`.
//!
//! Behind the `cluster` feature (scripts/test.sh turns it on); fails, never skips, without
//! the control plane:
//!
//!     eval "$(tests/cluster/up.sh /tmp/capstan-cluster)"
//!     CAPSTAN_TEST_KUBECONFIG=$KUBECONFIG cargo test -p capstan-e2e --features cluster --test kube_gpu_health
#![cfg(feature = "cluster")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use capstan_e2e::kube::{
    apply_docs, can_i, chart_docs, create_namespace, delete_namespace, file_tail, get_json, install_crds, kubeconfig,
    kubectl, kubectl_ok, spawn_controller, text, tool, wait_for, write_impersonating, ChartDocs, Kill, AGENT_SA,
    CONTROLLER_SA,
};
use capstan_e2e::{capstan_bin, Capstan};
use serde_json::Value;

/// The CRDs and the chart's RBAC for the controller and the agent; kubeconfigs that
/// impersonate their ServiceAccounts: (controller's, agent's).
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    install_crds(&["trainingjobs.capstan.dev"]);
    let docs = chart_docs(&["templates/controller.yaml", "templates/agent.yaml"], ChartDocs::WithoutWorkloads);
    apply_docs(&docs);
    let controller = dir.join("kubeconfig-controller");
    let agent = dir.join("kubeconfig-agent");
    write_impersonating(&controller, CONTROLLER_SA);
    write_impersonating(&agent, AGENT_SA);
    let can = |verb: &str, res: &str| can_i(&agent, verb, res, None);
    assert!(can("patch", "pods"), "the chart lets the agent mark pods");
    assert!(!can("delete", "pods"), "the chart must not let the agent delete pods");
    (controller, agent)
}

/// On drop: the node loses what the agent wrote on it (the agent is gone by then), and the
/// test's namespace goes (while its controller still runs, which removes the finalizers).
struct Cleanup {
    ns: String,
    node: Option<String>,
    controller: Option<Kill>,
    agent: Option<Kill>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        drop(self.agent.take());
        if let Some(node) = &self.node {
            let _ = kubectl(&["annotate", "node", node, "capstan.dev/unhealthy-gpus-"]);
            let _ = kubectl(&["taint", "node", node, "capstan.dev/gpu-unhealthy-"]);
        }
        delete_namespace(&self.ns);
        drop(self.controller.take());
    }
}

fn job_yaml(name: &str, replicas: u32, gpus: u32) -> String {
    format!(
        "apiVersion: capstan.dev/v1alpha1\nkind: TrainingJob\nmetadata:\n  name: {name}\nspec:\n  image: trainer:1\n  replicas: {replicas}\n  gpusPerReplica: {gpus}\n  command: [\"python\", \"train.py\"]\n  runPolicy: {{backoffLimit: 0}}\n  checkpoint: {{uri: \"s3://ckpt/{name}\", resume: latest}}\n"
    )
}

/// Every JSON document of a `kubectl get -w -o json` output so far.
fn watched(path: &Path) -> Vec<Value> {
    let t = std::fs::read_to_string(path).unwrap_or_default();
    serde_json::Deserializer::from_str(&t).into_iter::<Value>().map_while(Result::ok).collect()
}

/// `kubectl get -w -o json ARGS` writing to `path`.
fn watch(args: &[&str], path: &Path) -> Kill {
    let out = std::fs::File::create(path).unwrap();
    let mut a = vec!["get", "-w", "-o", "json"];
    a.extend_from_slice(args);
    Kill(
        Command::new(tool("kubectl"))
            .env("KUBECONFIG", kubeconfig())
            .args(&a)
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kubectl get -w"),
    )
}

/// The agent's /metrics at `url` (empty while it does not answer).
fn scrape(http: &reqwest::blocking::Client, url: &str) -> String {
    http.get(url).send().ok().and_then(|r| r.text().ok()).unwrap_or_default()
}

/// The GPUs (index) whose series carry `pod="<pod>"` in the agent's /metrics.
fn gpus_of_pod(metrics: &str, pod: &str) -> Vec<u32> {
    let mut out: Vec<u32> = metrics
        .lines()
        .filter(|l| l.starts_with("DCGM_FI_DEV_GPU_UTIL{") && l.contains(&format!("pod=\"{pod}\"")))
        .filter_map(|l| l.split("gpu=\"").nth(1)?.split('"').next()?.parse().ok())
        .collect();
    out.sort_unstable();
    out
}

/// `capstan agent --kubernetes --simulate-gpus 8` for `node`, as the chart's agent
/// ServiceAccount (kubeconfig `agent_kc`), pushing to `server`, asking the kubelet's
/// pod-resources API at `socket`; logs to `dir/agent.log`. The process and its /metrics URL.
fn spawn_agent(
    server: &str,
    node: &str,
    agent_kc: &Path,
    dir: &Path,
    socket: &Path,
    describe: impl Fn() -> String,
) -> (Kill, String) {
    let agent_log = dir.join("agent.log");
    let alog = std::fs::File::create(&agent_log).unwrap();
    let agent = Kill(
        Command::new(capstan_bin())
            .args(["agent", "--server", server, "--simulate-gpus", "8", "--node-name", node])
            .args(["--push-interval", "1s", "--metrics-listen", "127.0.0.1:0", "--kubernetes", "--kubeconfig"])
            .arg(agent_kc)
            .arg("--data-dir")
            .arg(dir.join("agent-state"))
            .arg("--pod-resources-socket")
            .arg(socket)
            .env_remove("KUBECONFIG")
            .stdout(alog.try_clone().unwrap())
            .stderr(alog)
            .spawn()
            .expect("spawn capstan agent"),
    );
    let metrics_url = wait_for(
        Duration::from_secs(60),
        "the agent's metrics address",
        || {
            let log = std::fs::read_to_string(&agent_log).unwrap_or_default();
            log.lines().find_map(|l| l.strip_prefix("Prometheus metrics at ").map(|u| u.trim().to_string()))
        },
        describe,
    );
    (agent, metrics_url)
}

#[test]
fn an_xid_79_on_a_pods_gpu_evicts_its_gang_to_healthy_gpus_without_counting_and_an_xid_13_does_not() {
    let capstan = Capstan::start();
    let dir = tempfile::tempdir().unwrap();
    let (controller_kc, agent_kc) = setup(dir.path());
    let ns = create_namespace("kc-gpu-health");
    let controller_log = dir.path().join("controller.log");
    let log = std::fs::File::create(&controller_log).unwrap();
    let controller = Kill(spawn_controller(&controller_kc, &ns, "0", &[], log));
    let mut cleanup = Cleanup { ns: ns.clone(), node: None, controller: Some(controller), agent: None };
    let describe = || {
        let d = kubectl(&["describe", "trainingjob", "-n", &ns]);
        let p = kubectl(&["get", "pods", "-n", &ns, "-o", "wide"]);
        format!(
            "{}\n{}\ncontroller log (tail):\n{}\nagent log (tail):\n{}",
            text(&d),
            text(&p),
            file_tail(&controller_log, 30),
            file_tail(&dir.path().join("agent.log"), 30)
        )
    };
    let running_pod = |name: &str| {
        get_json(&["pod", name, "-n", &ns])
            .filter(|p| p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null())
    };

    // One replica of 4 GPUs, backoffLimit 0: a counted restart would fail the job.
    kubectl_ok(&["apply", "-n", &ns, "-f", "-"], Some(&job_yaml("train", 1, 4)));
    let first = wait_for(Duration::from_secs(90), "train-1-0 to run", || running_pod("train-1-0"), describe);
    let node = first["spec"]["nodeName"].as_str().expect("bound to a node").to_string();
    assert!(node.starts_with("gpu-node-"), "{first}");
    cleanup.node = Some(node.clone());

    // The agent of that node, as the chart's agent ServiceAccount. No kubelet socket: the
    // simulated device plugin attributes the GPUs.
    let (agent, metrics_url) =
        spawn_agent(capstan.url(), &node, &agent_kc, dir.path(), &dir.path().join("no-kubelet-here.sock"), describe);
    cleanup.agent = Some(agent);
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let metrics = || scrape(&http, &metrics_url);

    // Attribution: the simulated device plugin gave the pod 4 GPUs; /metrics says which, with
    // the pod's namespace, name, container and job.
    let (gpus, text0) = wait_for(
        Duration::from_secs(60),
        "the pod's GPUs in the agent's /metrics",
        || {
            let m = metrics();
            let g = gpus_of_pod(&m, "train-1-0");
            (g.len() == 4).then_some((g, m))
        },
        describe,
    );
    assert_eq!(gpus, [0, 1, 2, 3], "first free indices: {text0}");
    let line =
        text0.lines().find(|l| l.starts_with("DCGM_FI_DEV_GPU_UTIL{") && l.contains("pod=\"train-1-0\"")).unwrap();
    for want in [
        format!("namespace=\"{ns}\""),
        "container=\"trainer\"".into(),
        "capstan_job=\"train\"".into(),
        "simulated=\"true\"".into(),
    ] {
        assert!(line.contains(&want), "{want} missing in {line}");
    }
    let g = gpus[1];
    let idle = 7;

    // An application XID 13 on the pod's GPU, then a critical XID 79 on an idle GPU: once the
    // node shows the idle GPU unhealthy, the agent has seen both (pods are marked before the
    // node is written), and the pod is not marked.
    let fault = |gpu: u32, xid: u64| {
        let url = format!("{}/api/v1/nodes/{node}/gpus/{gpu}/faults", capstan.url());
        wait_for(
            Duration::from_secs(30),
            "the server to take the fault",
            || http.post(&url).json(&serde_json::json!({ "xid": xid })).send().ok().filter(|r| r.status().is_success()),
            describe,
        );
    };
    fault(g, 13);
    fault(idle, 79);
    wait_for(
        Duration::from_secs(60),
        "the idle GPU's verdict on the node",
        || {
            let n = get_json(&["node", &node])?;
            (n["metadata"]["annotations"]["capstan.dev/unhealthy-gpus"] == idle.to_string().as_str()).then_some(())
        },
        describe,
    );
    let m = metrics();
    assert!(
        m.lines().any(|l| l.starts_with(&format!("DCGM_FI_DEV_XID_ERRORS{{gpu=\"{g}\"")) && l.ends_with(" 13.0")),
        "the agent saw XID 13 on GPU {g}:\n{m}"
    );
    let pod = running_pod("train-1-0").expect("XID 13 leaves the pod running");
    assert!(pod["metadata"]["annotations"]["capstan.dev/gpu-unhealthy"].is_null(), "XID 13 marks nothing: {pod}");
    // A later pass of the controller (it admits another job) left the gang alone.
    kubectl_ok(&["apply", "-n", &ns, "-f", "-"], Some(&job_yaml("probe", 1, 1)));
    wait_for(Duration::from_secs(90), "probe-1-0 to run", || running_pod("probe-1-0"), describe);
    let job = get_json(&["trainingjob", "train", "-n", &ns]).unwrap();
    assert_eq!(job["status"]["phase"], "Running", "{job}");
    assert_eq!(job["status"]["attempt"], 1, "{job}");
    assert!(job["status"]["uncountedRestarts"].as_u64().unwrap_or(0) == 0, "{job}");
    assert!(running_pod("train-1-0").is_some(), "{}", describe());

    // XID 79 on the pod's GPU: the pod is marked, the gang evicted (GpuUnhealthy), requeued and
    // placed again, never on GPU g; the restart does not count (backoffLimit 0 and still running).
    let job_watch = dir.path().join("job-watch.json");
    let pod_watch = dir.path().join("pod-watch.json");
    let _w1 = watch(&["trainingjob", "train", "-n", &ns], &job_watch);
    let _w2 = watch(&["pods", "-n", &ns], &pod_watch);
    // The watches have started once they printed the current objects.
    wait_for(
        Duration::from_secs(30),
        "the watches to start",
        || (!watched(&job_watch).is_empty() && !watched(&pod_watch).is_empty()).then_some(()),
        describe,
    );
    fault(g, 79);
    let second = wait_for(Duration::from_secs(120), "train-2-0 to run", || running_pod("train-2-0"), describe);
    let job = wait_for(
        Duration::from_secs(60),
        "train to run its second attempt",
        || get_json(&["trainingjob", "train", "-n", &ns]).filter(|j| j["status"]["phase"] == "Running"),
        describe,
    );
    assert_eq!(job["status"]["attempt"], 2, "{job}");
    assert_eq!(job["status"]["restarts"].as_u64().unwrap_or(0), 0, "not counted against backoffLimit: {job}");
    assert_eq!(job["status"]["uncountedRestarts"], 1, "{job}");

    // The agent marked the pod, naming the GPU and the XID.
    let marks: Vec<String> = watched(&pod_watch)
        .iter()
        .filter(|p| p["metadata"]["name"] == "train-1-0")
        .filter_map(|p| p["metadata"]["annotations"]["capstan.dev/gpu-unhealthy"].as_str().map(str::to_string))
        .collect();
    assert!(
        marks.iter().any(|m| m.starts_with(&format!("GPU {g} (GPU-sim-{node}-{g}): XidError")) && m.contains("79")),
        "{marks:?}"
    );
    // The job's status said why while it was evicted: the eviction, a Preempted condition
    // with reason GpuUnhealthy, then Pending with that reason.
    let seen = watched(&job_watch);
    let evicting = seen
        .iter()
        .find(|j| j["status"]["eviction"]["reason"] == "GpuUnhealthy")
        .unwrap_or_else(|| panic!("no status with the eviction among {} versions: {seen:?}", seen.len()));
    let msg = evicting["status"]["eviction"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("train-1-0") && msg.contains(&format!("GPU {g}")) && msg.contains("79"), "{msg}");
    let cond = evicting["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Preempted"))
        .cloned()
        .unwrap_or_default();
    assert_eq!((cond["status"].as_str(), cond["reason"].as_str()), (Some("True"), Some("GpuUnhealthy")), "{evicting}");
    assert!(
        seen.iter().any(|j| j["status"]["phase"] == "Pending"
            && j["status"]["message"].as_str().is_some_and(|m| m.contains("requeued"))),
        "requeued: {seen:?}"
    );
    let events =
        kubectl_ok(&["get", "events", "-n", &ns, "--field-selector", "reason=GpuUnhealthy", "-o", "json"], None);
    assert!(events.contains(&format!("GPU {g}")), "a GpuUnhealthy event naming GPU {g}: {events}");

    // Placed again on healthy GPUs: on this node, the agent's device plugin never gives GPU g
    // (nor the idle one it also marked); elsewhere, another node.
    let node2 = second["spec"]["nodeName"].as_str().unwrap().to_string();
    if node2 == node {
        let again = wait_for(
            Duration::from_secs(60),
            "the new pod's GPUs in /metrics",
            || {
                let g2 = gpus_of_pod(&metrics(), "train-2-0");
                (g2.len() == 4).then_some(g2)
            },
            describe,
        );
        assert!(!again.contains(&g) && !again.contains(&idle), "placed on an unhealthy GPU: {again:?}");
        eprintln!("second pod's GPUs on {node}: {again:?}");
        let pod = running_pod("train-2-0").unwrap();
        assert!(pod["metadata"]["annotations"]["capstan.dev/gpu-unhealthy"].is_null(), "{pod}");
    }
    eprintln!("first pod on {node} GPUs {gpus:?} (XID 79 on GPU {g}); second pod on {node2}");
    // A restart from the checkpoint.
    let env = &second["spec"]["containers"][0]["env"];
    assert!(
        env.as_array().is_some_and(|e| e.iter().any(|v| v["name"] == "CAPSTAN_RESUME_FROM")),
        "resumes from its checkpoint: {env}"
    );

    // Cleared again: the node's annotation empties (then the agent goes).
    for gpu in [g, idle] {
        let r = http.delete(format!("{}/api/v1/nodes/{node}/gpus/{gpu}/health", capstan.url())).send().unwrap();
        assert!(r.status().is_success(), "{}", r.text().unwrap_or_default());
    }
    wait_for(
        Duration::from_secs(60),
        "the node to be clear again",
        || {
            let n = get_json(&["node", &node])?;
            (n["metadata"]["annotations"]["capstan.dev/unhealthy-gpus"] == "").then_some(())
        },
        describe,
    );
}

/// Deletes the node on drop.
struct DeleteNode(String);

impl Drop for DeleteNode {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "node", &self.0, "--wait=false"]);
    }
}

/// What a test on a kwok node of its own starts with: a server, a temporary directory, the
/// chart's agent kubeconfig, a namespace and the node `<ns>-node` with 8 GPUs, cordoned so no
/// controller of the other suites places work on it. On drop the namespace goes, then the node.
struct NodeEnv {
    capstan: Capstan,
    dir: tempfile::TempDir,
    agent_kc: PathBuf,
    ns: String,
    node: String,
    _cleanup: Cleanup,
    _node: DeleteNode,
}

impl NodeEnv {
    fn new(prefix: &str) -> NodeEnv {
        let capstan = Capstan::start();
        let dir = tempfile::tempdir().unwrap();
        let (_, agent_kc) = setup(dir.path());
        let ns = create_namespace(prefix);
        let node = format!("{ns}-node");
        let guard = DeleteNode(node.clone());
        kubectl_ok(
            &["apply", "-f", "-"],
            Some(&format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n  annotations: {{kwok.x-k8s.io/node: fake}}\n  labels: {{type: kwok}}\nspec:\n  unschedulable: true\nstatus:\n  capacity: {{cpu: \"64\", memory: 512Gi, pods: \"110\", nvidia.com/gpu: \"8\"}}\n  allocatable: {{cpu: \"64\", memory: 512Gi, pods: \"110\", nvidia.com/gpu: \"8\"}}\n"
            )),
        );
        let cleanup = Cleanup { ns: ns.clone(), node: None, controller: None, agent: None };
        NodeEnv { capstan, dir, agent_kc, ns, node, _cleanup: cleanup, _node: guard }
    }

    /// The namespace's pods and the tails of the logs named (in the temporary directory).
    fn describe(&self, logs: &[&str]) -> String {
        let mut out = text(&kubectl(&["get", "pods", "-n", &self.ns, "-o", "wide"]));
        for log in logs {
            out.push_str(&format!("\n{log} (tail):\n{}", file_tail(&self.dir.path().join(log), 30)));
        }
        out
    }

    /// [`spawn_agent`] for the node, asking the kubelet's pod-resources API at `socket`.
    fn spawn_agent(&self, socket: &Path) -> (Kill, String) {
        spawn_agent(self.capstan.url(), &self.node, &self.agent_kc, self.dir.path(), socket, || {
            self.describe(&["agent.log"])
        })
    }
}

/// Pods bound straight to `node` (no scheduler), each `(name, container, GPUs requested)`.
fn bare_pods_yaml(node: &str, pods: &[(&str, &str, u32)]) -> String {
    pods.iter()
        .map(|(name, container, gpus)| {
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  tolerations: [{{operator: Exists}}]\n  containers:\n  - name: {container}\n    image: trainer:1\n    resources: {{limits: {{nvidia.com/gpu: \"{gpus}\"}}}}\n"
            )
        })
        .collect()
}

/// The kubelet's own pod-resources server (tests/cluster/podresources: the function the kubelet
/// serves its socket with, over device grants from a file, since kwok runs no kubelet) tells the
/// agent which container got which GPU; the agent labels the series by it, not by its simulated
/// device plugin, and an XID 79 on a granted GPU marks exactly the pod the kubelet gave it to.
#[test]
fn the_agent_attributes_gpus_by_the_kubelets_pod_resources_api_and_marks_the_pod_it_names() {
    let env = NodeEnv::new("kc-podres");
    let (ns, node, dir) = (&env.ns, &env.node, &env.dir);
    let describe = || env.describe(&["agent.log", "podresources.log"]);
    kubectl_ok(
        &["apply", "-n", ns, "-f", "-"],
        Some(&bare_pods_yaml(node, &[("podres-a", "main", 2), ("podres-b", "worker", 1)])),
    );
    let uid = |name: &str| {
        wait_for(
            Duration::from_secs(60),
            "the pod to run on the kwok node",
            || {
                get_json(&["pod", name, "-n", ns])
                    .filter(|p| p["status"]["phase"] == "Running")
                    .and_then(|p| p["metadata"]["uid"].as_str().map(str::to_string))
            },
            describe,
        )
    };
    let (uid_a, uid_b) = (uid("podres-a"), uid("podres-b"));

    // What the kubelet's device manager granted: podres-a GPUs 5 and 2 by UUID (NVIDIA's device
    // plugin's default), podres-b GPU 6 by index (DEVICE_ID_STRATEGY=index), a pod the API does
    // not know GPU 0, and CPUs, memory and NUMA topology the agent has no use for. The simulated
    // device plugin would have given podres-a GPUs 0 and 1.
    let grants = serde_json::json!([
        {"namespace": ns, "name": "podres-a", "uid": uid_a, "containers": [
            {"name": "main", "devices": {"nvidia.com/gpu": [format!("GPU-sim-{node}-5"), format!("GPU-sim-{node}-2")],
                                         "example.com/nic": ["nic-0"]},
             "numa": 1, "cpus": [4, 5], "memory_bytes": 1u64 << 30}]},
        {"namespace": ns, "name": "podres-b", "uid": uid_b, "containers": [
            {"name": "worker", "devices": {"nvidia.com/gpu": ["6"]}, "numa": 0, "cpus": [], "memory_bytes": 0}]},
        {"namespace": ns, "name": "ghost", "uid": "00000000-0000-0000-0000-000000000000", "containers": [
            {"name": "main", "devices": {"nvidia.com/gpu": [format!("GPU-sim-{node}-0")]}, "numa": 0, "cpus": [], "memory_bytes": 0}]}
    ]);
    let grants_path = dir.path().join("grants.json");
    std::fs::write(&grants_path, grants.to_string()).unwrap();
    let socket = dir.path().join("kubelet.sock");
    let log = std::fs::File::create(dir.path().join("podresources.log")).unwrap();
    let _kubelet = Kill(
        Command::new(tool("podresources-server"))
            .arg(&socket)
            .arg(&grants_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn podresources-server"),
    );
    wait_for(Duration::from_secs(30), "the pod-resources socket", || socket.exists().then_some(()), describe);

    let (_agent, metrics_url) = env.spawn_agent(&socket);
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let metrics = || scrape(&http, &metrics_url);
    let m = wait_for(
        Duration::from_secs(60),
        "the kubelet's grants in the agent's /metrics",
        || {
            let m = metrics();
            (gpus_of_pod(&m, "podres-a") == [2, 5] && gpus_of_pod(&m, "podres-b") == [6]).then_some(m)
        },
        || format!("{}\n/metrics:\n{}", describe(), metrics()),
    );
    for (gpu, pod, container) in [(2, "podres-a", "main"), (5, "podres-a", "main"), (6, "podres-b", "worker")] {
        let line = m
            .lines()
            .find(|l| l.starts_with(&format!("DCGM_FI_DEV_GPU_UTIL{{gpu=\"{gpu}\"")))
            .unwrap_or_else(|| panic!("no series for GPU {gpu}:\n{m}"));
        for want in [format!("namespace=\"{ns}\""), format!("pod=\"{pod}\""), format!("container=\"{container}\"")] {
            assert!(line.contains(&want), "{want} missing in {line}");
        }
    }
    for gpu in [0, 1] {
        let line = m.lines().find(|l| l.starts_with(&format!("DCGM_FI_DEV_GPU_UTIL{{gpu=\"{gpu}\""))).unwrap();
        assert!(line.contains("pod=\"\""), "GPU {gpu} is nobody's (the pod the kubelet names is unknown): {line}");
    }
    assert!(!m.contains("pod=\"ghost\""), "{m}");

    // XID 79 on GPU 5: the kubelet gave it to podres-a, which the agent marks; podres-b is not.
    let url = format!("{}/api/v1/nodes/{node}/gpus/5/faults", env.capstan.url());
    wait_for(
        Duration::from_secs(30),
        "the server to take the fault",
        || http.post(&url).json(&serde_json::json!({ "xid": 79 })).send().ok().filter(|r| r.status().is_success()),
        describe,
    );
    let mark = wait_for(
        Duration::from_secs(60),
        "podres-a's mark",
        || {
            get_json(&["pod", "podres-a", "-n", ns])?["metadata"]["annotations"]["capstan.dev/gpu-unhealthy"]
                .as_str()
                .map(str::to_string)
        },
        describe,
    );
    assert!(mark.starts_with(&format!("GPU 5 (GPU-sim-{node}-5): XidError")) && mark.contains("79"), "{mark}");
    let b = get_json(&["pod", "podres-b", "-n", ns]).unwrap();
    assert!(b["metadata"]["annotations"]["capstan.dev/gpu-unhealthy"].is_null(), "{b}");
}

/// The simulated device plugin keeps its grants across an agent restart, as a kubelet's device
/// manager checkpoint does: after the first pod goes, a restarted plugin that had forgotten
/// would give the second pod the first free GPUs (0, 1) instead of the ones it has (2, 3).
#[test]
fn a_restarted_agent_keeps_the_simulated_device_plugins_grants() {
    let env = NodeEnv::new("kc-simgrants");
    let (ns, node, dir) = (&env.ns, &env.node, &env.dir);
    let describe = || env.describe(&["agent.log"]);
    let no_socket = dir.path().join("no-kubelet-here.sock");
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let gpus_of = |url: &str, pod: &str, want: &[u32]| {
        wait_for(
            Duration::from_secs(60),
            &format!("{pod} on GPUs {want:?} in the agent's /metrics"),
            || {
                let m = scrape(&http, url);
                (gpus_of_pod(&m, pod) == want).then_some(())
            },
            || {
                let m = scrape(&http, url);
                format!("{}\n/metrics:\n{m}", describe())
            },
        )
    };
    let (agent, url) = env.spawn_agent(&no_socket);
    kubectl_ok(&["apply", "-n", ns, "-f", "-"], Some(&bare_pods_yaml(node, &[("first", "main", 2)])));
    gpus_of(&url, "first", &[0, 1]);
    kubectl_ok(&["apply", "-n", ns, "-f", "-"], Some(&bare_pods_yaml(node, &[("second", "main", 2)])));
    gpus_of(&url, "second", &[2, 3]);
    kubectl_ok(&["delete", "pod", "first", "-n", ns, "--wait=true"], None);
    // The agent saw the first pod go (its GPUs are nobody's) before it stops.
    wait_for(
        Duration::from_secs(60),
        "GPUs 0 and 1 free in /metrics",
        || {
            let m = scrape(&http, &url);
            (gpus_of_pod(&m, "first").is_empty() && gpus_of_pod(&m, "second") == [2, 3]).then_some(())
        },
        describe,
    );
    drop(agent);
    let (_agent, url) = env.spawn_agent(&no_socket);
    gpus_of(&url, "second", &[2, 3]);
    let grants = std::fs::read_to_string(dir.path().join("agent-state").join("sim-grants.json")).unwrap();
    let grants: Value = serde_json::from_str(&grants).unwrap();
    let second_uid = get_json(&["pod", "second", "-n", ns]).unwrap()["metadata"]["uid"].clone();
    assert_eq!(
        grants,
        serde_json::json!([{"pod_uid": second_uid, "container": "main", "gpus": [2, 3]}]),
        "only the running pod's grant is kept"
    );
}
