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

use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use capstan_e2e::kube::{
    apply_docs, can_i, chart_docs, get_json, install_crds, kubectl, kubectl_ok, text, wait_for, write_impersonating,
    ChartDocs, KubeEnv, CONTROLLER_SA, SERVER_SA,
};
use serde_json::Value;

static SETUP: Once = Once::new();

fn impersonating(sa: &str) -> PathBuf {
    let short = sa.rsplit(':').next().unwrap();
    std::env::temp_dir().join(format!("capstan-kubeconfig-ui-{short}-{}", std::process::id()))
}

/// Install the CRDs and the chart's RBAC for the server and the controller; write kubeconfigs
/// that impersonate their ServiceAccounts.
fn setup() {
    SETUP.call_once(|| {
        install_crds(&[
            "trainingjobs.capstan.dev",
            "queues.capstan.dev",
            "modeldeployments.capstan.dev",
            "pipelines.capstan.dev",
            "pipelineruns.capstan.dev",
        ]);
        // The ServiceAccounts and their RBAC only: the Deployments would need a real image.
        let docs = chart_docs(&["templates/server.yaml", "templates/controller.yaml"], ChartDocs::RbacOnly);
        assert!(docs.iter().any(|d| d.contains("capstan-server-ui")), "the chart has the server's UI RBAC");
        apply_docs(&docs);
        for sa in [SERVER_SA, CONTROLLER_SA] {
            write_impersonating(&impersonating(sa), sa);
        }
        // The server reads what the pages show, and writes none of it.
        let can_sub = |verb: &str, res: &str, sub: &str| {
            can_i(&impersonating(SERVER_SA), verb, res, Some(sub).filter(|s| !s.is_empty()))
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
fn new_env(prefix: &str) -> KubeEnv {
    setup();
    KubeEnv::new(prefix, "capstan-kui-")
}

/// What this suite reads of its namespace.
trait Describe {
    /// The objects of the namespace and the processes' logs (tails), for failure messages.
    fn describe(&self) -> String;
}

impl Describe for KubeEnv {
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
    capstan_e2e::kube::tail(s, 60)
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
    let mut env = new_env("kui");
    let queue = format!("{}-q", env.ns);
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: capstan.dev/v1alpha1\nkind: Queue\nmetadata:\n  name: {queue}\nspec:\n  quotas:\n    - product: \"*\"\n      nominal: 6\n"
        )),
    );
    env.delete_on_drop("queue", &queue);
    env.apply(&format!(
        "apiVersion: capstan.dev/v1alpha1\nkind: TrainingJob\nmetadata:\n  name: train\nspec:\n  image: trainer:1\n  replicas: 2\n  gpusPerReplica: 1\n  queue: {queue}\n  command: [\"python\", \"train.py\"]\n"
    ));
    env.apply(
        "apiVersion: capstan.dev/v1alpha1\nkind: ModelDeployment\nmetadata:\n  name: iris\nspec:\n  model: {registeredModel: iris, alias: champion}\n  minReplicas: 1\n",
    );
    env.apply(
        "apiVersion: capstan.dev/v1alpha1\nkind: Pipeline\nmetadata:\n  name: nightly\nspec:\n  steps:\n    - name: train\n      train:\n        template: {image: \"trainer:1\", command: [python, train.py]}\n",
    );
    env.start_controller(&impersonating(CONTROLLER_SA), &[]);
    let url = env.start_server(&impersonating(SERVER_SA));
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
