//! Git-triggered pipelines on Kubernetes, against the real control plane of tests/cluster/
//! (etcd, kube-apiserver 1.34, kwok nodes):
//!
//! - `capstan server --kubernetes`: GitHub's own push payload (npm @octokit/webhooks-examples,
//!   `CAPSTAN_WEBHOOK_EXAMPLES`), signed by Python's `hmac` with the value of a Kubernetes
//!   Secret the Pipeline object names, creates exactly one PipelineRun object with the commit;
//!   the same delivery again creates none; a wrong, foreign or missing signature gets 401 and
//!   creates none; malformed JSON gets 400; `capstan pipeline run` creates a PipelineRun
//!   object; `capstan secret create` is refused with the kubectl command to use instead; and
//!   `capstan controller` reconciles the webhook's run into a TrainingJob.
//! - `capstan controller` polls a real git repository (a local bare one) of a poll trigger:
//!   the first poll records the heads in the Pipeline's status, a `git push` starts exactly one
//!   PipelineRun for the new commit, later polls none.
//!
//! The server and the controller run with the permissions of the Helm chart's ServiceAccounts
//! only (`helm template` of the chart's RBAC, applied; kubeconfigs that impersonate
//! `capstan-server` and `capstan-controller`), so passing proves the chart's RBAC sufficient.
//!
//! Behind the `cluster` feature (scripts/test.sh turns it on); fails, never skips, without
//! the control plane:
//!
//!     eval "$(tests/cluster/up.sh /tmp/capstan-cluster)"
//!     CAPSTAN_TEST_KUBECONFIG=$KUBECONFIG cargo test -p capstan-e2e --features cluster --test kube_pipelines
#![cfg(feature = "cluster")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;
use std::time::Duration;

use capstan_e2e::capstan_bin;
use capstan_e2e::kube::{
    apply_docs, can_i, chart_docs, get_json, install_crds, kubectl, kubectl_ok, text, wait_for, write_impersonating,
    ChartDocs, KubeEnv, CONTROLLER_SA, SERVER_SA,
};
use capstan_e2e::webhooks::{git_as, github_examples as examples, python_hmac_sha256 as python_sign};
use serde_json::Value;

const SECRET: &str = "It's a Secret to Everybody";

static SETUP: Once = Once::new();

fn impersonating(sa: &str) -> PathBuf {
    let short = sa.rsplit(':').next().unwrap();
    std::env::temp_dir().join(format!("capstan-kubeconfig-pipelines-{short}-{}", std::process::id()))
}

/// Install the CRDs and the chart's RBAC for the server and the controller; write kubeconfigs
/// that impersonate their ServiceAccounts.
fn setup() {
    SETUP.call_once(|| {
        install_crds(&["pipelines.capstan.dev", "pipelineruns.capstan.dev", "trainingjobs.capstan.dev"]);
        // The ServiceAccounts and their RBAC only: the Deployments would need a real image.
        let docs = chart_docs(&["templates/server.yaml", "templates/controller.yaml"], ChartDocs::RbacOnly);
        assert!(docs.iter().any(|d| d.contains("capstan-server-pipelines")), "the chart has the server's RBAC");
        apply_docs(&docs);
        for sa in [SERVER_SA, CONTROLLER_SA] {
            write_impersonating(&impersonating(sa), sa);
        }
        // The server's permissions are what webhooks need and nothing more.
        let can = |verb: &str, res: &str| can_i(&impersonating(SERVER_SA), verb, res, None);
        assert!(can("list", "pipelines.capstan.dev"), "the server lists Pipelines");
        assert!(can("create", "pipelineruns.capstan.dev"), "the server creates PipelineRuns");
        assert!(can("get", "secrets"), "the server reads webhook Secrets");
        assert!(!can("list", "secrets"), "the server must not list Secrets");
        assert!(!can("create", "secrets"), "the server must not write Secrets");
        assert!(!can("delete", "pipelineruns.capstan.dev"), "the server must not delete PipelineRuns");
        assert!(!can("create", "trainingjobs.capstan.dev"), "the server must not create TrainingJobs");
        assert!(!can("create", "pods"), "the server must not create pods");
    });
}

/// A namespace of the test, deleted at the end, with the processes it started.
fn new_env(prefix: &str) -> KubeEnv {
    setup();
    KubeEnv::new(prefix, "capstan-kp-")
}

/// What this suite reads of its namespace.
trait Describe {
    /// The PipelineRuns of the namespace.
    fn runs(&self) -> Vec<Value>;
    /// The objects of the namespace and the processes' logs (tails), for failure messages.
    fn describe(&self) -> String;
}

impl Describe for KubeEnv {
    fn runs(&self) -> Vec<Value> {
        get_json(&["pipelineruns", "-n", &self.ns])
            .and_then(|v| v["items"].as_array().cloned())
            .expect("kubectl get pipelineruns")
    }

    fn describe(&self) -> String {
        let o = kubectl(&["get", "pipelines,pipelineruns,trainingjobs", "-n", &self.ns, "-o", "yaml"]);
        format!(
            "{}\nserver log:\n{}\ncontroller log:\n{}",
            text(&o),
            tail(&self.log("server")),
            tail(&self.log("controller"))
        )
    }
}

fn tail(s: &str) -> String {
    capstan_e2e::kube::tail(s, 40)
}

/// POST a GitHub webhook: (status, body).
fn github_hook(url: &str, event: &str, delivery: &str, signature: Option<String>, body: Vec<u8>) -> (u16, Value) {
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let mut rb = http
        .post(format!("{url}/api/v1/webhooks/github"))
        .header("content-type", "application/json")
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", delivery)
        .body(body);
    if let Some(s) = signature {
        rb = rb.header("X-Hub-Signature-256", s);
    }
    let r = rb.send().unwrap_or_else(|e| panic!("POST webhook: {e}"));
    let status = r.status().as_u16();
    let bytes = r.bytes().unwrap_or_default();
    let v =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

fn cli(url: &str, args: &[&str]) -> Output {
    Command::new(capstan_bin())
        .args(["--server", url])
        .args(args)
        .env_remove("CAPSTAN_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run capstan")
}

fn pipeline_yaml(name: &str, trigger: &str) -> String {
    format!(
        "apiVersion: capstan.dev/v1alpha1\nkind: Pipeline\nmetadata:\n  name: {name}\nspec:\n  triggers:\n    - git:\n{trigger}  steps:\n    - name: train\n      train:\n        template: {{image: \"trainer:1\", command: [python, train.py]}}\n"
    )
}

#[test]
fn a_signed_github_push_creates_one_pipelinerun_on_the_cluster_and_replays_and_bad_signatures_none() {
    let mut env = new_env("kp-hook");
    kubectl_ok(
        &["create", "secret", "generic", "hook", "-n", &env.ns, &format!("--from-literal=secret={SECRET}")],
        None,
    );
    env.apply(&pipeline_yaml(
        "hello",
        "        repo: https://github.com/Codertocat/Hello-World\n        branches: [master, main]\n        provider: github\n        secretRef: {name: hook}\n",
    ));
    let url = env.start_server(&impersonating(SERVER_SA));

    // A push to master: GitHub's payload, signed with the Secret's value.
    let push = examples("push")
        .into_iter()
        .find(|e| e["ref"] == "refs/heads/master" && e["deleted"] == false)
        .expect("a branch push example");
    let body = serde_json::to_vec(&push).unwrap();
    let sig = python_sign(SECRET, &body);
    let (code, resp) = github_hook(&url, "push", "kp-delivery-1", Some(sig.clone()), body.clone());
    assert_eq!(code, 201, "{resp}\n{}", env.describe());
    assert_eq!(resp["runs"].as_array().map(Vec::len), Some(1), "{resp}");
    assert!(!resp.to_string().contains("Everybody"), "the secret is never echoed: {resp}");
    let runs = env.runs();
    assert_eq!(runs.len(), 1, "one PipelineRun object: {runs:?}");
    let run = &runs[0];
    let run_name = run["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(resp["runs"][0]["name"], run_name.as_str(), "{resp}");
    assert_eq!(run["spec"]["pipelineRef"], "hello");
    assert_eq!(run["spec"]["commit"]["sha"], push["head_commit"]["id"], "{run}");
    assert_eq!(run["spec"]["commit"]["branch"], "master", "{run}");
    assert_eq!(run["spec"]["commit"]["message"], push["head_commit"]["message"], "{run}");
    assert!(
        run["spec"]["commit"]["author"]
            .as_str()
            .unwrap()
            .contains(push["head_commit"]["author"]["name"].as_str().unwrap()),
        "{run}"
    );
    assert_eq!(run["spec"]["trigger"]["source"], "webhook", "{run}");
    assert_eq!(run["spec"]["trigger"]["provider"], "github", "{run}");
    assert_eq!(run["spec"]["trigger"]["deliveryId"], "kp-delivery-1", "{run}");
    assert_eq!(run["metadata"]["labels"]["capstan.dev/pipeline"], "hello", "{run}");

    // The same delivery again (a replay): no new object.
    let (code, resp) = github_hook(&url, "push", "kp-delivery-1", Some(sig.clone()), body.clone());
    assert_eq!(code, 200, "{resp}");
    assert_eq!(resp["duplicate"], true, "{resp}");
    assert_eq!(env.runs().len(), 1, "a replay creates nothing");

    // A wrong signature, one by another secret, a malformed one, none: 401, nothing created.
    let foreign = python_sign("not the secret", &body);
    for (delivery, s) in [("kp-bad-1", Some(foreign)), ("kp-bad-2", Some("sha256=00".to_string())), ("kp-bad-3", None)]
    {
        let (code, resp) = github_hook(&url, "push", delivery, s, body.clone());
        assert_eq!(code, 401, "{delivery}: {resp}");
        assert!(
            resp["error"].as_str().is_some_and(|e| e.contains("X-Hub-Signature-256") || e.contains("signature")),
            "{resp}"
        );
    }
    // Signed by the right secret but over another body (tampered payload).
    let mut tampered = push.clone();
    tampered["head_commit"]["id"] = Value::String("f".repeat(40));
    let (code, resp) = github_hook(&url, "push", "kp-bad-4", Some(sig.clone()), serde_json::to_vec(&tampered).unwrap());
    assert_eq!(code, 401, "{resp}");
    assert_eq!(env.runs().len(), 1, "bad signatures create nothing");

    // Bad input, signed: malformed JSON is a 400 naming the position; ping is answered.
    let bad = b"{\"ref\": ".to_vec();
    let (code, resp) = github_hook(&url, "push", "kp-json", Some(python_sign(SECRET, &bad)), bad);
    assert_eq!(code, 400, "{resp}");
    assert!(resp["error"].as_str().unwrap_or_default().contains("malformed JSON at line 1"), "{resp}");
    let ping = br#"{"zen": "Keep it logically awesome."}"#.to_vec();
    let (code, resp) = github_hook(&url, "ping", "kp-ping", Some(python_sign(SECRET, &ping)), ping);
    assert_eq!((code, resp["message"].as_str()), (200, Some("pong")), "{resp}");
    assert_eq!(env.runs().len(), 1);

    // A manual run through the server's API is a PipelineRun object too.
    let o = cli(&url, &["pipeline", "run", "hello", "-n", &env.ns]);
    assert!(o.status.success(), "capstan pipeline run:\n{}", text(&o));
    let runs = env.runs();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.iter().any(|r| r["spec"]["trigger"]["source"] == "manual"), "{runs:?}");
    let o = cli(&url, &["pipeline", "run", "nope", "-n", &env.ns]);
    assert!(!o.status.success() && text(&o).contains("not found"), "{}", text(&o));
    // Secrets are Kubernetes Secrets here: `capstan secret create` says how to make one.
    let o = cli(&url, &["secret", "create", "other", "-n", &env.ns, "--from-literal", "secret=x"]);
    assert!(!o.status.success() && text(&o).contains("kubectl create secret generic"), "{}", text(&o));

    // The controller runs the webhook's run: its first step becomes a TrainingJob.
    env.start_controller(&impersonating(CONTROLLER_SA), &[]);
    let selector = format!("capstan.dev/pipeline-run={run_name}");
    let job = wait_for(
        Duration::from_secs(90),
        "the controller to create the run's TrainingJob",
        || {
            let list = get_json(&["trainingjobs", "-n", &env.ns, "-l", &selector])?;
            list["items"].as_array()?.first().cloned()
        },
        || env.describe(),
    );
    assert_eq!(job["metadata"]["labels"]["capstan.dev/pipeline-step"], "train", "{job}");
    assert_eq!(job["metadata"]["ownerReferences"][0]["name"], run_name.as_str(), "{job}");
}

fn git(dir: &Path, args: &[&str]) -> String {
    git_as("Ada", dir, args)
}

fn commit_and_push(work: &Path, content: &str, message: &str) -> String {
    std::fs::write(work.join("train.py"), content).unwrap();
    git(work, &["add", "train.py"]);
    git(work, &["commit", "-q", "-m", message]);
    git(work, &["push", "-q", "origin", "HEAD:main"]);
    git(work, &["rev-parse", "HEAD"])
}

#[test]
fn a_poll_trigger_on_the_cluster_starts_one_run_per_pushed_commit() {
    let mut env = new_env("kp-poll");
    let bare = env.dir().join("repo.git");
    let work = env.dir().join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(env.dir(), &["init", "-q", "--bare", bare.to_str().unwrap()]);
    git(&work, &["init", "-q"]);
    git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
    let first = commit_and_push(&work, "print(1)\n", "first");
    env.apply(&pipeline_yaml(
        "polled",
        &format!("        repo: {}\n        branches: [main]\n        pollIntervalSeconds: 1\n", bare.display()),
    ));
    env.start_controller(&impersonating(CONTROLLER_SA), &[]);

    // The first poll only records the heads.
    let heads = |env: &KubeEnv| -> Option<(String, String)> {
        let p = get_json(&["pipeline", "polled", "-n", &env.ns])?;
        let poll = &p["status"]["polls"][0];
        Some((poll["heads"]["main"].as_str()?.to_string(), poll["lastPollTime"].as_str()?.to_string()))
    };
    wait_for(
        Duration::from_secs(60),
        "the first poll to record main's head",
        || heads(&env).filter(|(sha, _)| *sha == first),
        || env.describe(),
    );
    assert!(env.runs().is_empty(), "the first poll starts nothing: {:?}", env.runs());

    // A push: one run for the new commit, with its author and message from the repository.
    let second = commit_and_push(&work, "print(2)\n", "tune the learning rate");
    let run = wait_for(
        Duration::from_secs(60),
        "a PipelineRun for the pushed commit",
        || env.runs().into_iter().find(|r| r["spec"]["commit"]["sha"] == second.as_str()),
        || env.describe(),
    );
    assert_eq!(run["spec"]["trigger"]["source"], "poll", "{run}");
    assert_eq!(run["spec"]["commit"]["branch"], "main", "{run}");
    assert_eq!(run["spec"]["commit"]["message"], "tune the learning rate", "{run}");
    assert_eq!(run["spec"]["commit"]["author"], "Ada <ada@example.com>", "{run}");
    assert_eq!(run["metadata"]["labels"]["capstan.dev/trigger"], "poll", "{run}");

    // Later polls (two more, seen through lastPollTime) start nothing more.
    let mut seen = heads(&env).map(|h| h.1).unwrap_or_default();
    for _ in 0..2 {
        let next = wait_for(
            Duration::from_secs(60),
            "another poll",
            || heads(&env).filter(|(sha, t)| *sha == second && *t != seen).map(|h| h.1),
            || env.describe(),
        );
        seen = next;
    }
    assert_eq!(env.runs().len(), 1, "one run per pushed commit: {:?}", env.runs());

    // And the controller runs it.
    let selector = format!("capstan.dev/pipeline-run={}", run["metadata"]["name"].as_str().unwrap());
    wait_for(
        Duration::from_secs(90),
        "the run's TrainingJob",
        || get_json(&["trainingjobs", "-n", &env.ns, "-l", &selector])?["items"].as_array()?.first().cloned(),
        || env.describe(),
    );
}
