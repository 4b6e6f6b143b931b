//! The web UI of `capstan server --kubernetes`, against the real control plane of
//! tests/cluster/ (etcd, kube-apiserver 1.34, kwok nodes): a Queue and a TrainingJob applied
//! with kubectl and run by `capstan controller` on kwok GPU nodes show on the server's
//! server-rendered pages (`/jobs`, `/jobs/{ns}/{name}`: phase, queue, nodes, GPUs, an event
//! the controller recorded), a ModelDeployment and a Pipeline made in the cluster show on
//! `/deployments` and `/pipelines`, the resource API reads the same objects (same uid as
//! kubectl's), and apply/delete through the server are refused with the kubectl command
//! (nothing lands in the server's store). The server and the controller run with the Helm
//! chart's RBAC only (kubeconfigs impersonating their ServiceAccounts), so passing proves the
//! chart lets the server read what the UI shows.
//!
//! Logs: a replica's log on a cluster is its pod's log (`pods/log`). kwok has no containers and
//! the test nodes publish no kubelet endpoint, so the API server cannot produce one here; the
//! test asserts that the log route asks the cluster (the API server's refusal comes back as a
//! 503 naming the Kubernetes API, not the store's "not found"). The reader that turns a pod
//! log stream into the response is unit-tested in `cli/src/kube_resources.rs`.
//!
//! Behind the `cluster` feature (scripts/test.sh turns it on); fails, never skips, without
//! the control plane:
//!
//!     eval "$(tests/cluster/up.sh /tmp/capstan-cluster)"
//!     CAPSTAN_TEST_KUBECONFIG=$KUBECONFIG cargo test -p capstan-e2e --features cluster --test kube_ui
#![cfg(feature = "cluster")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use capstan_e2e::{capstan_bin, free_port, unique_name, workspace_root};
use serde_json::Value;

const CHART_NS: &str = "capstan-system";
const SERVER_SA: &str = "system:serviceaccount:capstan-system:capstan-server";
const CONTROLLER_SA: &str = "system:serviceaccount:capstan-system:capstan-controller";

fn kubeconfig() -> PathBuf {
    let k = std::env::var("CAPSTAN_TEST_KUBECONFIG").unwrap_or_else(|_| {
        panic!("CAPSTAN_TEST_KUBECONFIG is not set: start the test control plane with `eval \"$(tests/cluster/up.sh DIR)\"` and export CAPSTAN_TEST_KUBECONFIG=$KUBECONFIG (scripts/test.sh does this)")
    });
    PathBuf::from(k)
}

fn tool(name: &str) -> PathBuf {
    let bin = kubeconfig().parent().unwrap().join("bin").join(name);
    assert!(bin.exists(), "{} is missing: tests/cluster/up.sh writes it", bin.display());
    bin
}

fn run_tool(name: &str, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(tool(name));
    cmd.env("KUBECONFIG", kubeconfig).args(args);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn kubectl(args: &[&str]) -> Output {
    run_tool("kubectl", &kubeconfig(), args, None)
}

fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> String {
    let o = run_tool("kubectl", &kubeconfig(), args, stdin);
    assert!(o.status.success(), "kubectl {args:?} failed:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn get_json(args: &[&str]) -> Option<Value> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    let o = kubectl(&a);
    if !o.status.success() {
        return None;
    }
    serde_json::from_slice(&o.stdout).ok()
}

/// Poll `f` every 200 ms until it gives Some, or panic after `timeout` with `what` and the
/// last state `describe` shows. (A guard against hanging, not a timing assertion.)
fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>, describe: impl Fn() -> String) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out waiting for {what}\n{}", describe());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

static SETUP: Once = Once::new();

fn impersonating(sa: &str) -> PathBuf {
    let short = sa.rsplit(':').next().unwrap();
    std::env::temp_dir().join(format!("capstan-kubeconfig-ui-{short}-{}", std::process::id()))
}

/// Install the CRDs and the chart's RBAC for the server and the controller; write kubeconfigs
/// that impersonate their ServiceAccounts.
fn setup() {
    SETUP.call_once(|| {
        let crds = workspace_root().join("helm/capstan/crds");
        kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", crds.to_str().unwrap()], None);
        for crd in [
            "trainingjobs.capstan.dev",
            "queues.capstan.dev",
            "modeldeployments.capstan.dev",
            "pipelines.capstan.dev",
            "pipelineruns.capstan.dev",
        ] {
            kubectl_ok(&["wait", "--for", "condition=established", "--timeout=60s", &format!("crd/{crd}")], None);
        }
        let _ = kubectl(&["create", "namespace", CHART_NS]);
        let chart = workspace_root().join("helm/capstan");
        let o = run_tool(
            "helm",
            &kubeconfig(),
            &[
                "template",
                "capstan",
                chart.to_str().unwrap(),
                "--namespace",
                CHART_NS,
                "--show-only",
                "templates/server.yaml",
                "--show-only",
                "templates/controller.yaml",
            ],
            None,
        );
        assert!(o.status.success(), "helm template failed:\n{}", text(&o));
        // The ServiceAccounts and their RBAC only: the Deployments would need a real image.
        let rbac = ["kind: ServiceAccount", "kind: ClusterRole", "kind: Role", "kind: RoleBinding"];
        let docs: Vec<&str> = std::str::from_utf8(&o.stdout)
            .unwrap()
            .split("\n---")
            .filter(|d| d.lines().any(|l| rbac.iter().any(|k| l.starts_with(k))))
            .collect();
        assert!(docs.iter().any(|d| d.contains("capstan-server-ui")), "the chart has the server's UI RBAC");
        kubectl_ok(&["apply", "-f", "-"], Some(&docs.join("\n---\n")));
        let kc = std::fs::read_to_string(kubeconfig()).unwrap();
        assert!(kc.contains("    token: "), "unexpected kubeconfig layout:\n{kc}");
        for sa in [SERVER_SA, CONTROLLER_SA] {
            std::fs::write(impersonating(sa), kc.replace("    token: ", &format!("    as: {sa}\n    token: ")))
                .unwrap();
        }
        // The server reads what the pages show, and writes none of it.
        let can_sub = |verb: &str, res: &str, sub: &str| {
            let mut args = vec!["auth", "can-i", verb, res, "-A"];
            let sub = format!("--subresource={sub}");
            if sub.len() > "--subresource=".len() {
                args.push(&sub);
            }
            let o = run_tool("kubectl", &impersonating(SERVER_SA), &args, None);
            String::from_utf8_lossy(&o.stdout).trim() == "yes"
        };
        let can = |verb: &str, res: &str| can_sub(verb, res, "");
        for res in ["trainingjobs", "queues", "modeldeployments", "pipelines", "pipelineruns"] {
            assert!(can("list", &format!("{res}.capstan.dev")), "the server lists {res}");
        }
        assert!(can("list", "events.events.k8s.io"), "the server lists events");
        assert!(can_sub("get", "pods", "log"), "the server reads pods' logs");
        assert!(!can("create", "trainingjobs.capstan.dev"), "the server must not create TrainingJobs");
        assert!(!can("delete", "trainingjobs.capstan.dev"), "the server must not delete TrainingJobs");
        assert!(!can("update", "modeldeployments.capstan.dev"), "the server must not change ModelDeployments");
        assert!(!can("delete", "pods"), "the server must not delete pods");
    });
}

/// A namespace (and a Queue) of the test, deleted at the end, with the processes it started.
struct Env {
    ns: String,
    queue: Option<String>,
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Env {
    fn new(prefix: &str) -> Env {
        setup();
        let ns = unique_name(prefix);
        kubectl_ok(&["create", "namespace", &ns], None);
        Env {
            ns,
            queue: None,
            dir: tempfile::Builder::new().prefix("capstan-kui-").tempdir().unwrap(),
            children: Vec::new(),
        }
    }

    fn apply(&self, yaml: &str) {
        kubectl_ok(&["apply", "-n", &self.ns, "-f", "-"], Some(yaml));
    }

    fn log_path(&self, what: &str) -> PathBuf {
        self.dir.path().join(format!("{what}.log"))
    }

    fn log(&self, what: &str) -> String {
        std::fs::read_to_string(self.log_path(what)).unwrap_or_default()
    }

    /// `capstan server --kubernetes` as the chart's server ServiceAccount; its URL.
    fn start_server(&mut self) -> String {
        let data = self.dir.path().join("server-data");
        for _try in 0..5 {
            let port = free_port();
            let log = std::fs::File::create(self.log_path("server")).unwrap();
            let mut child = Command::new(capstan_bin())
                .args(["server", "--kubernetes", "--kubeconfig"])
                .arg(impersonating(SERVER_SA))
                .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
                .arg(&data)
                .env_remove("KUBECONFIG")
                .env_remove("CAPSTAN_API_TOKEN")
                .env_remove("CAPSTAN_DATABASE_URL")
                .env_remove("CAPSTAN_ARTIFACTS_DESTINATION")
                .env_remove("CAPSTAN_LISTEN")
                .env_remove("CAPSTAN_DATA_DIR")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn capstan server");
            let url = format!("http://127.0.0.1:{port}");
            let http = reqwest::blocking::Client::new();
            let start = Instant::now();
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let log = self.log("server");
                    if log.contains("Address already in use") {
                        break;
                    }
                    panic!("capstan server --kubernetes exited ({status}):\n{log}");
                }
                if http.get(format!("{url}/healthz")).send().is_ok_and(|r| r.status().as_u16() == 200) {
                    self.children.push(child);
                    return url;
                }
                if start.elapsed() > Duration::from_secs(60) {
                    let _ = child.kill();
                    panic!("capstan server --kubernetes did not become healthy:\n{}", self.log("server"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("capstan server could not bind a port in 5 tries:\n{}", self.log("server"));
    }

    /// `capstan controller` for this namespace as the chart's controller ServiceAccount.
    fn start_controller(&mut self) {
        let log = std::fs::File::create(self.log_path("controller")).unwrap();
        let child = Command::new(capstan_bin())
            .arg("controller")
            .arg("--kubeconfig")
            .arg(impersonating(CONTROLLER_SA))
            .args(["--watch-namespace", &self.ns])
            .args(["--leader-election-namespace", CHART_NS])
            .args(["--leader-election-lease", &format!("lease-{}", self.ns)])
            .args(["--identity", &format!("{}-0", self.ns)])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn capstan controller");
        self.children.push(child);
    }

    fn describe(&self) -> String {
        let o = kubectl(&["get", "trainingjobs,modeldeployments,pipelines,pods", "-n", &self.ns, "-o", "yaml"]);
        format!(
            "{}\nserver log:\n{}\ncontroller log:\n{}",
            tail(&text(&o)),
            tail(&self.log("server")),
            tail(&self.log("controller"))
        )
    }
}

fn tail(s: &str) -> String {
    s.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
}

impl Drop for Env {
    fn drop(&mut self) {
        // Delete the namespace while the controller runs (it removes its finalizers).
        let _ = kubectl(&["delete", "namespace", &self.ns, "--wait=true", "--timeout=90s"]);
        if let Some(q) = &self.queue {
            let _ = kubectl(&["delete", "queue", q, "--wait=false"]);
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// GET `path` of the server: status and body.
fn get(url: &str, path: &str) -> (u16, String) {
    let r = reqwest::blocking::Client::new()
        .get(format!("{url}{path}"))
        .timeout(Duration::from_secs(30))
        .send()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status().as_u16();
    (status, r.text().unwrap_or_default())
}

/// A server-rendered page's text with Leptos' hydration markers (`<!>`, `<!--...-->`) removed,
/// so adjacent text reads as it shows.
fn page(url: &str, path: &str) -> String {
    let (status, body) = get(url, path);
    assert_eq!(status, 200, "GET {path}:\n{body}");
    let mut out = String::with_capacity(body.len());
    let mut rest = body.as_str();
    while let Some(i) = rest.find("<!") {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if after.starts_with("<!DOCTYPE") || after.starts_with("<!doctype") {
            out.push_str("<!");
            rest = &after[2..];
        } else if let Some(stripped) = after.strip_prefix("<!--") {
            rest = stripped.find("-->").map(|j| &stripped[j + 3..]).unwrap_or("");
        } else {
            rest = after.find('>').map(|j| &after[j + 1..]).unwrap_or("");
        }
    }
    out.push_str(rest);
    out
}

/// The `<tr>` of the table with id `table` whose text contains `needle`.
fn row_of<'a>(html: &'a str, table: &str, needle: &str) -> Option<&'a str> {
    let start = html.find(&format!("id=\"{table}\""))?;
    let t = &html[start..];
    let t = &t[..t.find("</table>")?];
    t.split("<tr").find(|r| r.contains(needle))
}

#[test]
fn the_ui_shows_the_clusters_jobs_queues_deployments_and_pipelines() {
    let mut env = Env::new("kui");
    let queue = format!("{}-q", env.ns);
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: capstan.dev/v1alpha1\nkind: Queue\nmetadata:\n  name: {queue}\nspec:\n  quotas:\n    - product: \"*\"\n      nominal: 6\n"
        )),
    );
    env.queue = Some(queue.clone());
    env.apply(&format!(
        "apiVersion: capstan.dev/v1alpha1\nkind: TrainingJob\nmetadata:\n  name: train\nspec:\n  image: trainer:1\n  replicas: 2\n  gpusPerReplica: 1\n  queue: {queue}\n  command: [\"python\", \"train.py\"]\n"
    ));
    env.apply(
        "apiVersion: capstan.dev/v1alpha1\nkind: ModelDeployment\nmetadata:\n  name: iris\nspec:\n  model: {registeredModel: iris, alias: champion}\n  minReplicas: 1\n",
    );
    env.apply(
        "apiVersion: capstan.dev/v1alpha1\nkind: Pipeline\nmetadata:\n  name: nightly\nspec:\n  steps:\n    - name: train\n      train:\n        template: {image: \"trainer:1\", command: [python, train.py]}\n",
    );
    env.start_controller();
    let url = env.start_server();
    let ns = env.ns.clone();

    // The controller runs the gang on kwok GPU nodes and records events about it.
    let job = wait_for(
        Duration::from_secs(90),
        "the job Running on kwok nodes",
        || {
            let j = get_json(&["trainingjob", "train", "-n", &ns])?;
            let placed = j["status"]["replicaStatuses"]
                .as_array()
                .is_some_and(|r| r.len() == 2 && r.iter().all(|x| x["node"].as_str().is_some_and(|n| !n.is_empty())));
            (j["status"]["phase"] == "Running" && placed).then_some(j)
        },
        || env.describe(),
    );
    let uid = job["metadata"]["uid"].as_str().unwrap().to_string();
    let event = wait_for(
        Duration::from_secs(60),
        "an event about the job",
        || {
            let evs = get_json(&["events.events.k8s.io", "-n", &ns])?;
            evs["items"].as_array()?.iter().find(|e| e["regarding"]["uid"] == uid.as_str()).cloned()
        },
        || env.describe(),
    );
    let reason = event["reason"].as_str().unwrap().to_string();

    // /jobs: the job with its phase and queue, and the queue with its quota.
    let html = page(&url, "/jobs");
    let row = row_of(&html, "jobs", "train").unwrap_or_else(|| panic!("/jobs lists the job:\n{html}"));
    assert!(row.contains("Running"), "phase on /jobs: {row}");
    assert!(row.contains(&queue), "queue on /jobs: {row}");
    assert!(row.contains(&format!("/jobs/{ns}/train")), "link to the job page: {row}");
    let qrow = row_of(&html, "queues", &queue).unwrap_or_else(|| panic!("/jobs lists the queue:\n{html}"));
    assert!(qrow.contains("/ 6"), "the queue's quota (nominal 6): {qrow}");

    // /jobs/{ns}/train: each replica's node and GPUs as the cluster has them, and the event.
    let html = page(&url, &format!("/jobs/{ns}/train"));
    assert!(html.contains("Running"), "phase on the job page:\n{html}");
    for r in job["status"]["replicaStatuses"].as_array().unwrap() {
        let node = r["node"].as_str().unwrap();
        let gpus: Vec<String> = r["gpus"].as_array().unwrap().iter().map(|g| g.as_u64().unwrap().to_string()).collect();
        assert_eq!(gpus.len(), 1, "one GPU per replica: {r}");
        let index = format!("<td class=\"num\">{}</td>", r["index"].as_u64().unwrap());
        let row = row_of(&html, "replicas", &index).unwrap_or_else(|| panic!("replica {r} shown:\n{html}"));
        assert!(row.contains(&format!("<td>{node}</td>")), "its node {node}: {row}");
        assert!(row.contains(&format!("<td>{}</td>", gpus.join(","))), "its GPUs {gpus:?}: {row}");
    }
    let erow = row_of(&html, "events", &reason).unwrap_or_else(|| panic!("event {reason} shown:\n{html}"));
    let note = event["note"].as_str().unwrap_or_default();
    let escaped = note.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    assert!(erow.contains(&escaped), "the event's note {note:?}: {erow}");

    // The server function the hydrated page refreshes from (over HTTP) reads the cluster too.
    let r = reqwest::blocking::Client::new()
        .post(format!("{url}/ui/fn/job"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("namespace={ns}&name=train"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let detail: Value = r.json().unwrap();
    assert_eq!(detail["job"]["phase"], "Running", "{detail}");
    assert_eq!(detail["job"]["queue"], queue.as_str(), "{detail}");
    assert_eq!(detail["replicas"].as_array().map(Vec::len), Some(2), "{detail}");
    assert!(detail["events"].as_array().unwrap().iter().any(|e| e["reason"] == reason.as_str()), "{detail}");

    // /deployments and /pipelines: the objects made with kubectl.
    let html = page(&url, "/deployments");
    assert!(html.contains(&format!("/deployments/{ns}/iris")), "/deployments lists iris:\n{html}");
    let html = page(&url, &format!("/deployments/{ns}/iris"));
    assert!(html.contains("iris@champion"), "the deployment's model:\n{html}");
    let html = page(&url, "/pipelines");
    assert!(html.contains(&format!("/pipelines/{ns}/nightly")), "/pipelines lists nightly:\n{html}");
    let html = page(&url, &format!("/pipelines/{ns}/nightly"));
    assert!(html.contains("trainer:1"), "the pipeline's train step:\n{html}");

    // A missing object is a 404 page, not an empty one.
    let (status, _) = get(&url, &format!("/jobs/{ns}/absent"));
    assert_eq!(status, 404);

    // The resource API reads the same objects.
    let (status, body) = get(&url, &format!("/apis/capstan.dev/v1alpha1/namespaces/{ns}/trainingjobs/train"));
    assert_eq!(status, 200, "{body}");
    let obj: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(obj["metadata"]["uid"], uid.as_str(), "the cluster's object: {obj}");
    assert_eq!(obj["status"]["phase"], "Running");
    let (status, body) = get(&url, &format!("/apis/capstan.dev/v1alpha1/namespaces/{ns}/trainingjobs/train/events"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&reason), "events through the API: {body}");
    let (status, body) = get(&url, "/apis/capstan.dev/v1alpha1/queues");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&queue), "queues through the API: {body}");

    // Writes through the server are refused with the kubectl command; the cluster keeps the job.
    let http = reqwest::blocking::Client::new();
    let r = http
        .post(format!("{url}/apis/capstan.dev/v1alpha1/apply"))
        .header("content-type", "application/yaml")
        .body(format!(
            "apiVersion: capstan.dev/v1alpha1\nkind: TrainingJob\nmetadata:\n  name: other\n  namespace: {ns}\nspec:\n  image: trainer:1\n  command: [python]\n"
        ))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().unwrap().contains("kubectl apply"));
    let r = http.delete(format!("{url}/apis/capstan.dev/v1alpha1/namespaces/{ns}/trainingjobs/train")).send().unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().unwrap().contains("kubectl delete"));
    let still = get_json(&["trainingjob", "train", "-n", &ns]).expect("the job is still in the cluster");
    assert!(still["metadata"]["deletionTimestamp"].is_null(), "{still}");
    assert!(get_json(&["trainingjob", "other", "-n", &ns]).is_none(), "no job made by the refused apply");
    let (status, body) = get(&url, &format!("/apis/capstan.dev/v1alpha1/namespaces/{ns}/trainingjobs/other"));
    assert_eq!(status, 404, "nothing landed in the server's store either: {body}");

    // The log route asks the cluster for the replica's pod log. kwok nodes have no kubelet
    // endpoint, so the API server cannot serve it: the refusal comes back as a 503 naming the
    // Kubernetes API (the store would have answered 404 "not found").
    let (status, body) =
        get(&url, &format!("/apis/capstan.dev/v1alpha1/namespaces/{ns}/trainingjobs/train/log?replica=0"));
    assert_eq!(status, 503, "the log route reads the cluster: {body}");
    assert!(body.contains("Kubernetes API"), "{body}");
    let (status, body) =
        get(&url, &format!("/apis/capstan.dev/v1alpha1/namespaces/{ns}/trainingjobs/train/log?replica=5"));
    assert_eq!(status, 400, "a replica the job does not have: {body}");
}
