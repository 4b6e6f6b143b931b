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
const SECRET: &str = "It's a Secret to Everybody";

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
    std::env::temp_dir().join(format!("capstan-kubeconfig-pipelines-{short}-{}", std::process::id()))
}

/// Install the CRDs and the chart's RBAC for the server and the controller; write kubeconfigs
/// that impersonate their ServiceAccounts.
fn setup() {
    SETUP.call_once(|| {
        let crds = workspace_root().join("helm/capstan/crds");
        kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", crds.to_str().unwrap()], None);
        for crd in ["pipelines.capstan.dev", "pipelineruns.capstan.dev", "trainingjobs.capstan.dev"] {
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
        assert!(docs.iter().any(|d| d.contains("capstan-server-pipelines")), "the chart has the server's RBAC");
        kubectl_ok(&["apply", "-f", "-"], Some(&docs.join("\n---\n")));
        let kc = std::fs::read_to_string(kubeconfig()).unwrap();
        assert!(kc.contains("    token: "), "unexpected kubeconfig layout:\n{kc}");
        for sa in [SERVER_SA, CONTROLLER_SA] {
            std::fs::write(impersonating(sa), kc.replace("    token: ", &format!("    as: {sa}\n    token: ")))
                .unwrap();
        }
        // The server's permissions are what webhooks need and nothing more.
        let can = |verb: &str, res: &str| {
            let o = run_tool("kubectl", &impersonating(SERVER_SA), &["auth", "can-i", verb, res, "-A"], None);
            String::from_utf8_lossy(&o.stdout).trim() == "yes"
        };
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
struct Env {
    ns: String,
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Env {
    fn new(prefix: &str) -> Env {
        setup();
        let ns = unique_name(prefix);
        kubectl_ok(&["create", "namespace", &ns], None);
        Env { ns, dir: tempfile::Builder::new().prefix("capstan-kp-").tempdir().unwrap(), children: Vec::new() }
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
    s.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
}

impl Drop for Env {
    fn drop(&mut self) {
        // Delete the namespace while the controller runs (it removes its finalizers).
        let _ = kubectl(&["delete", "namespace", &self.ns, "--wait=true", "--timeout=90s"]);
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// GitHub's examples of one event, from the npm package.
fn examples(event: &str) -> Vec<Value> {
    let dir = std::env::var("CAPSTAN_WEBHOOK_EXAMPLES").unwrap_or_else(|_| {
        panic!(
            "CAPSTAN_WEBHOOK_EXAMPLES is not set: run `eval \"$(scripts/webhook-examples-setup.sh)\"` (installs npm \
             @octokit/webhooks-examples into the cache)"
        )
    });
    let path = Path::new(&dir).join("index.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let all: Vec<Value> = serde_json::from_str(&text).expect("index.json is JSON");
    let entry = all.iter().find(|e| e["name"] == event).unwrap_or_else(|| panic!("no {event} examples"));
    entry["examples"].as_array().expect("examples").clone()
}

/// `sha256=<hex>` by Python's hmac module (an implementation independent of the server's).
fn python_sign(secret: &str, body: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, body).unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            "import hmac, hashlib, sys; print('sha256=' + hmac.new(sys.argv[1].encode(), open(sys.argv[2], 'rb').read(), hashlib.sha256).hexdigest())",
            secret,
            file.to_str().unwrap(),
        ])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "python3 hmac failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
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
    let mut env = Env::new("kp-hook");
    kubectl_ok(
        &["create", "secret", "generic", "hook", "-n", &env.ns, &format!("--from-literal=secret={SECRET}")],
        None,
    );
    env.apply(&pipeline_yaml(
        "hello",
        "        repo: https://github.com/Codertocat/Hello-World\n        branches: [master, main]\n        provider: github\n        secretRef: {name: hook}\n",
    ));
    let url = env.start_server();

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
    env.start_controller();
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
    let o = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=Ada", "-c", "user.email=ada@example.com", "-c", "init.defaultBranch=main"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(o.status.success(), "git {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
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
    let mut env = Env::new("kp-poll");
    let bare = env.dir.path().join("repo.git");
    let work = env.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(env.dir.path(), &["init", "-q", "--bare", bare.to_str().unwrap()]);
    git(&work, &["init", "-q"]);
    git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
    let first = commit_and_push(&work, "print(1)\n", "first");
    env.apply(&pipeline_yaml(
        "polled",
        &format!("        repo: {}\n        branches: [main]\n        pollIntervalSeconds: 1\n", bare.display()),
    ));
    env.start_controller();

    // The first poll only records the heads.
    let heads = |env: &Env| -> Option<(String, String)> {
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
