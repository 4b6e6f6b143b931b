//! Git-triggered pipelines end to end through the real `capstan up`:
//!
//! - GitHub's own webhook payloads (npm @octokit/webhooks-examples, path in
//!   `CAPSTAN_WEBHOOK_EXAMPLES`: `eval "$(scripts/webhook-examples-setup.sh)"`), signed with the
//!   pipeline's secret by Python's `hmac` (an implementation independent of the server's):
//!   a push starts exactly one run, the same delivery again none, a wrong or missing signature
//!   gets 401 and none, ping is answered, a tag delete is ignored;
//! - bad input: malformed JSON, an unknown event, a 30 MB body, a Pipeline with a cycle or an
//!   invalid `when`: clear 4xx or apply errors, no run;
//! - a real `git push` to a local bare repository picked up by the poll trigger;
//! - the full flow: push -> train a scikit-learn model (process runtime, mlflow client) ->
//!   evaluate -> gate -> register -> alias moved; and a push whose evaluation fails the gate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use capstan_e2e::webhooks::{git_as, github_examples as examples, python_hmac_sha256 as python_sign};
use capstan_e2e::*;
use serde_json::{json, Value};

const SECRET: &str = "It's a Secret to Everybody";
const RUNS: &str = "/apis/capstan.dev/v1alpha1/namespaces/default/pipelineruns";

/// POST a webhook with headers: (status, body).
fn hook(cap: &Capstan, provider: &str, headers: &[(&str, String)], body: Vec<u8>) -> (u16, Value) {
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let mut rb = http
        .post(format!("{}/api/v1/webhooks/{provider}", cap.url()))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        rb = rb.header(*k, v);
    }
    match rb.send() {
        Ok(r) => {
            let status = r.status().as_u16();
            let bytes = r.bytes().unwrap_or_default();
            let v = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            (status, v)
        }
        Err(e) => panic!("POST webhook: {e}"),
    }
}

fn github_headers(event: &str, delivery: &str, signature: Option<String>) -> Vec<(&'static str, String)> {
    let mut h = vec![("X-GitHub-Event", event.to_string()), ("X-GitHub-Delivery", delivery.to_string())];
    if let Some(s) = signature {
        h.push(("X-Hub-Signature-256", s));
    }
    h
}

fn runs(cap: &Capstan) -> Vec<Value> {
    let (code, body) = cap.get(RUNS);
    assert_eq!(code, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

fn hello_world_pipeline(name: &str) -> String {
    format!(
        r#"apiVersion: capstan.dev/v1alpha1
kind: Pipeline
metadata:
  name: {name}
spec:
  triggers:
    - git:
        repo: https://github.com/Codertocat/Hello-World
        branches: [master, main]
        provider: github
        secretRef: {{name: hook}}
  steps:
    - name: hello
      container:
        template:
          runtime: process
          command: [sh, -c, "echo built $CAPSTAN_COMMIT_SHA"]
"#
    )
}

#[test]
fn github_webhooks_start_one_run_per_delivery_and_refuse_bad_signatures() {
    let cap = Capstan::start();
    let out = cap.cli(&["secret", "create", "hook", "--from-literal", &format!("secret={SECRET}")]).ok();
    assert!(out.stdout.contains("secret/hook created"), "{}", out.stdout);
    // Secrets are never echoed: not by the CLI, not by the API.
    let listed = cap.cli(&["get", "secrets"]).ok();
    assert!(listed.stdout.contains("hook") && listed.stdout.contains("secret"), "{}", listed.stdout);
    assert!(!listed.stdout.contains("Everybody"), "secret value shown: {}", listed.stdout);
    let (_, api) = cap.get("/api/v1/secrets");
    assert!(!api.to_string().contains("Everybody"), "secret value in the API: {api}");
    let dup = cap.cli(&["secret", "create", "hook", "--from-literal", "secret=x"]);
    assert_ne!(dup.code, 0);
    assert!(dup.stderr.contains("already exists"), "{}", dup.stderr);

    cap.apply(&hello_world_pipeline("hello"));

    // A push to master: real payload, signed with the pipeline's secret.
    let push = examples("push")
        .into_iter()
        .find(|e| e["ref"] == "refs/heads/master" && e["deleted"] == false)
        .expect("a branch push example");
    let body = serde_json::to_vec(&push).unwrap();
    let sig = python_sign(SECRET, &body);
    let (code, resp) = hook(&cap, "github", &github_headers("push", "d-push-1", Some(sig.clone())), body.clone());
    assert_eq!(code, 201, "{resp}");
    let created = resp["runs"].as_array().unwrap();
    assert_eq!(created.len(), 1, "{resp}");
    let all = runs(&cap);
    assert_eq!(all.len(), 1, "{all:?}");
    let run = &all[0];
    assert_eq!(run["spec"]["commit"]["sha"], push["head_commit"]["id"]);
    assert_eq!(run["spec"]["commit"]["branch"], "master");
    assert_eq!(run["spec"]["commit"]["message"], push["head_commit"]["message"]);
    assert_eq!(run["spec"]["trigger"]["deliveryId"], "d-push-1");

    // The same delivery again (a replay): no run.
    let (code, resp) = hook(&cap, "github", &github_headers("push", "d-push-1", Some(sig.clone())), body.clone());
    assert_eq!(code, 200, "{resp}");
    assert_eq!(resp["duplicate"], true, "{resp}");
    assert_eq!(runs(&cap).len(), 1);

    // A wrong signature, a missing one, one made with another secret: 401, no run.
    let wrong = python_sign("not the secret", &body);
    for (delivery, sig) in [("d-bad-1", Some(wrong)), ("d-bad-2", None), ("d-bad-3", Some("sha256=00".into()))] {
        let (code, resp) = hook(&cap, "github", &github_headers("push", delivery, sig), body.clone());
        assert_eq!(code, 401, "{delivery}: {resp}");
        assert!(resp["error"].as_str().is_some_and(|e| !e.is_empty()), "{resp}");
    }
    // A signature over another body (tampered payload).
    let mut tampered = push.clone();
    tampered["head_commit"]["message"] = json!("evil");
    let (code, _) = hook(
        &cap,
        "github",
        &github_headers("push", "d-bad-4", Some(sig.clone())),
        serde_json::to_vec(&tampered).unwrap(),
    );
    assert_eq!(code, 401);
    assert_eq!(runs(&cap).len(), 1);

    // Ping: answered.
    let ping = examples("ping").into_iter().next().expect("a ping example");
    let body = serde_json::to_vec(&ping).unwrap();
    let (code, resp) = hook(&cap, "github", &github_headers("ping", "d-ping", Some(python_sign(SECRET, &body))), body);
    assert_eq!(code, 200, "{resp}");
    assert_eq!(resp["message"], "pong");

    // A tag delete: ignored, no run.
    let del = examples("push")
        .into_iter()
        .find(|e| e["ref"].as_str().is_some_and(|r| r.starts_with("refs/tags/")) && e["deleted"] == true)
        .expect("a tag delete example");
    let body = serde_json::to_vec(&del).unwrap();
    let (code, resp) =
        hook(&cap, "github", &github_headers("push", "d-tagdel", Some(python_sign(SECRET, &body))), body);
    assert_eq!(code, 202, "{resp}");
    assert!(resp["ignored"].as_str().unwrap_or("").contains("tag simple-tag was deleted"), "{resp}");
    // A branch delete, made from the push example the way GitHub sends one.
    let mut bdel = push.clone();
    bdel["deleted"] = json!(true);
    bdel["after"] = json!("0000000000000000000000000000000000000000");
    bdel["head_commit"] = Value::Null;
    let body = serde_json::to_vec(&bdel).unwrap();
    let (code, resp) = hook(&cap, "github", &github_headers("push", "d-bdel", Some(python_sign(SECRET, &body))), body);
    assert_eq!(code, 202, "{resp}");
    assert!(resp["ignored"].as_str().unwrap_or("").contains("branch master was deleted"), "{resp}");

    // Bad input: malformed JSON (signed, so it gets past authentication), an unknown event,
    // a 30 MB body. Clear 4xx, no run.
    let bad = b"{\"ref\": \"refs/heads/master\", ".to_vec();
    let (code, resp) = hook(&cap, "github", &github_headers("push", "d-json", Some(python_sign(SECRET, &bad))), bad);
    assert_eq!(code, 400, "{resp}");
    assert!(resp["error"].as_str().unwrap().contains("malformed JSON at line 1, column"), "{resp}");
    let body = b"{\"action\": \"opened\"}".to_vec();
    let (code, resp) =
        hook(&cap, "github", &github_headers("issues", "d-issue", Some(python_sign(SECRET, &body))), body);
    assert_eq!(code, 400, "{resp}");
    assert!(resp["error"].as_str().unwrap().contains("unsupported GitHub event \"issues\""), "{resp}");
    let huge = vec![b' '; 30 * 1024 * 1024];
    let (code, resp) = hook(&cap, "github", &github_headers("push", "d-huge", None), huge);
    assert_eq!(code, 413, "{resp}");
    assert_eq!(runs(&cap).len(), 1, "bad input started a run");

    // Manual runs: an undeclared parameter is refused; a plain run starts.
    let refused = cap.cli(&["pipeline", "run", "hello", "--param", "nope=1"]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("parameter \"nope\" is not declared"), "{}", refused.stderr);
    let manual = cap.cli(&["pipeline", "run", "hello"]).ok();
    assert!(manual.stdout.starts_with("pipelinerun/hello-"), "{}", manual.stdout);
    let listed = cap.cli(&["get", "pipelineruns"]).ok();
    assert_eq!(listed.stdout.lines().filter(|l| l.contains(" hello ")).count(), 2, "{}", listed.stdout);
    assert_eq!(runs(&cap).len(), 2);

    // The run itself runs: its one step's job succeeds and the run records it.
    let name = created[0]["name"].as_str().unwrap().to_string();
    let run = wait_run(&cap, &name, Duration::from_secs(90));
    assert_eq!(run["status"]["phase"], "Succeeded", "{run:#}");
    let step = &run["status"]["steps"][0];
    assert_eq!(step["phase"], "Succeeded", "{run:#}");
    let job = step["jobName"].as_str().unwrap();
    let log = cap.logs(job, 0, None);
    assert!(log.contains(&format!("built {}", push["head_commit"]["id"].as_str().unwrap())), "{log}");
}

#[test]
fn pipelines_with_a_cycle_or_a_bad_when_are_refused_at_apply() {
    let cap = Capstan::start();
    let cyclic = r#"apiVersion: capstan.dev/v1alpha1
kind: Pipeline
metadata: {name: cyclic}
spec:
  steps:
    - name: a
      dependsOn: [b]
      container: {template: {runtime: process, command: ["true"]}}
    - name: b
      dependsOn: [a]
      container: {template: {runtime: process, command: ["true"]}}
"#;
    let file = cap.write_file("cyclic.yaml", cyclic.as_bytes());
    let out = cap.cli(&["apply", "-f", file.to_str().unwrap()]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("spec.steps[0].dependsOn: step \"a\" is in a dependency cycle: a -> b -> a"),
        "{}",
        out.stderr
    );
    // The server refuses it too (a client that skips local validation).
    let (code, body) = cap.post("/apis/capstan.dev/v1alpha1/apply", "application/yaml", cyclic.as_bytes().to_vec());
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("dependency cycle"), "{body}");

    let bad_when = cyclic
        .replace("      dependsOn: [b]\n", "")
        .replace("dependsOn: [a]\n", "dependsOn: [a]\n      when: \"steps.a.metrics.acc >< 0.9\"\n");
    let (code, body) = cap.post("/apis/capstan.dev/v1alpha1/apply", "application/yaml", bad_when.into_bytes());
    assert_eq!(code, 400, "{body}");
    let err = body["error"].as_str().unwrap();
    assert!(err.contains("line 10: spec.steps[1].when: step \"b\": invalid when expression: line 1, column"), "{err}");
    let (_, pls) = cap.get("/apis/capstan.dev/v1alpha1/namespaces/default/pipelines");
    assert_eq!(pls["items"].as_array().unwrap().len(), 0, "{pls}");
    assert!(runs(&cap).is_empty());
}

/// Polls a run until it finished.
fn wait_run(cap: &Capstan, name: &str, timeout: Duration) -> Value {
    let path = format!("{RUNS}/{name}");
    wait_until(
        timeout,
        &format!("pipeline run {name} to finish"),
        || {
            let (code, body) = cap.get(&path);
            code == 200 && matches!(body["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
        },
        || format!("{:#}\n--- capstan log tail\n{}", cap.get(&path).1, cap.log_tail(60)),
    );
    cap.get(&path).1
}

fn git(dir: &Path, args: &[&str]) -> String {
    git_as("Ada Lovelace", dir, args)
}

/// A bare repository and a clone of it with one commit on main.
fn repo(root: &Path) -> (PathBuf, PathBuf) {
    let bare = root.join("models.git");
    let work = root.join("work");
    git(root, &["init", "--bare", "-b", "main", bare.to_str().unwrap()]);
    git(root, &["clone", bare.to_str().unwrap(), work.to_str().unwrap()]);
    (bare, work)
}

fn commit_and_push(work: &Path, file: &str, content: &str, message: &str) -> String {
    std::fs::write(work.join(file), content).unwrap();
    git(work, &["add", file]);
    git(work, &["commit", "-m", message]);
    git(work, &["push", "origin", "HEAD:main"]);
    git(work, &["rev-parse", "HEAD"])
}

#[test]
fn a_real_git_push_is_picked_up_by_the_poll_trigger() {
    let cap = Capstan::start();
    let root = tempfile::tempdir().unwrap();
    let (bare, work) = repo(root.path());
    let first = commit_and_push(&work, "README.md", "v1\n", "first");
    cap.apply(&format!(
        r#"apiVersion: capstan.dev/v1alpha1
kind: Pipeline
metadata: {{name: polled}}
spec:
  triggers:
    - git: {{repo: "{}", branches: [main], pollIntervalSeconds: 1}}
  steps:
    - name: hello
      container: {{template: {{runtime: process, command: ["true"]}}}}
"#,
        bare.display()
    ));
    // The first poll records the heads: the commit that was there before starts nothing.
    wait_until(
        Duration::from_secs(30),
        "the first poll",
        || {
            let (_, p) = cap.get("/apis/capstan.dev/v1alpha1/namespaces/default/pipelines/polled");
            p["status"]["polls"][0]["heads"]["main"] == first.as_str()
        },
        || cap.get("/apis/capstan.dev/v1alpha1/namespaces/default/pipelines/polled").1.to_string(),
    );
    assert!(runs(&cap).is_empty(), "the existing head started a run");

    let second = commit_and_push(&work, "train.py", "print('v2')\n", "tune the learning rate");
    wait_until(
        Duration::from_secs(30),
        "the poll trigger to start a run for the pushed commit",
        || !runs(&cap).is_empty(),
        || cap.log_tail(40),
    );
    std::thread::sleep(Duration::from_secs(3));
    let all = runs(&cap);
    assert_eq!(all.len(), 1, "one push, one run: {all:#?}");
    let c = &all[0]["spec"]["commit"];
    assert_eq!(c["sha"], second.as_str());
    assert_eq!(c["branch"], "main");
    assert_eq!(c["author"], "Ada Lovelace <ada@example.com>");
    assert_eq!(c["message"], "tune the learning rate");
    assert_eq!(all[0]["spec"]["trigger"]["source"], "poll");
}

/// POST the generic webhook for a pushed commit, signed with the pipeline's secret.
fn generic_push(cap: &Capstan, repo: &Path, sha: &str, delivery: &str) -> Value {
    let body = serde_json::to_vec(&json!({"repo": repo.to_str().unwrap(), "branch": "main", "sha": sha})).unwrap();
    let headers =
        vec![("X-Capstan-Signature-256", python_sign(SECRET, &body)), ("X-Capstan-Delivery", delivery.to_string())];
    let (code, resp) = hook(cap, "generic", &headers, body);
    assert_eq!(code, 201, "{resp}");
    assert_eq!(resp["runs"].as_array().map(Vec::len), Some(1), "{resp}");
    resp["runs"][0]["name"].as_str().unwrap().to_string().into()
}

fn step<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["status"]["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name}: {run:#}"))
}

#[test]
fn push_trains_evaluates_gates_and_registers_and_a_bad_push_is_stopped_at_the_gate() {
    let cap = Capstan::start();
    cap.cli(&["secret", "create", "hook", "--from-literal", &format!("secret={SECRET}")]).ok();
    let root = tempfile::tempdir().unwrap();
    let (bare, work) = repo(root.path());
    let model = unique_name("iris");
    let train = workspace_file_path("tests/e2e/pipelines/train.py");
    let evaluate = workspace_file_path("tests/e2e/pipelines/evaluate.py");
    cap.apply(&format!(
        r#"apiVersion: capstan.dev/v1alpha1
kind: Pipeline
metadata: {{name: iris}}
spec:
  triggers:
    - git: {{repo: "{repo}", branches: [main], provider: generic, secretRef: {{name: hook}}}}
  parameters:
    - {{name: threshold, default: "0.9"}}
  steps:
    - name: train
      train:
        template: {{runtime: process, command: [python3, "{train}"]}}
    - name: evaluate
      dependsOn: [train]
      evaluate:
        template: {{runtime: process, command: [python3, "{evaluate}"]}}
    - name: register
      dependsOn: [evaluate]
      when: "steps.evaluate.metrics.accuracy > double(params.threshold) && params.branch == 'main'"
      register: {{model: {model}, fromStep: train, alias: champion}}
    - name: deploy
      dependsOn: [register]
      deploy: {{deployment: iris-serving, fromStep: register}}
---
apiVersion: capstan.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: iris-serving}}
spec:
  model: {{registeredModel: {model}, alias: champion}}
"#,
        repo = bare.display(),
        train = train.display(),
        evaluate = evaluate.display(),
    ));

    // 1. A good commit: the gate passes, a version is registered, the alias moves to it.
    let good = commit_and_push(&work, "params.json", "{\"max_iter\": 300}\n", "train with 300 iterations");
    let name = generic_push(&cap, &bare, &good, "push-good");
    let run = wait_run(&cap, name.as_str().unwrap(), Duration::from_secs(300));
    assert_eq!(run["status"]["phase"], "Succeeded", "{run:#}\n{}", cap.log_tail(80));
    assert_eq!(run["spec"]["commit"]["sha"], good.as_str());
    let train_run = step(&run, "train")["runId"].as_str().expect("train run id").to_string();
    let eval = step(&run, "evaluate");
    let accuracy = eval["metrics"]["accuracy"].as_f64().expect("evaluate logged accuracy");
    assert!(accuracy > 0.9, "{run:#}");
    let reg = step(&run, "register");
    assert_eq!(reg["phase"], "Succeeded", "{run:#}");
    assert_eq!(reg["modelVersion"]["name"], model.as_str());
    assert_eq!(reg["modelVersion"]["version"], 1);
    assert_eq!(reg["alias"], "champion");
    // The registry agrees (MLflow REST API): the alias points to version 1, made from the train
    // step's run, tagged with the commit.
    let (code, mv) = cap.get(&format!("/api/2.0/mlflow/registered-models/alias?name={model}&alias=champion"));
    assert_eq!(code, 200, "{mv}");
    assert_eq!(mv["model_version"]["version"], "1", "{mv}");
    assert_eq!(mv["model_version"]["run_id"], train_run.as_str(), "{mv}");
    let tags = mv["model_version"]["tags"].as_array().cloned().unwrap_or_default();
    assert!(tags.iter().any(|t| t["key"] == "capstan.dev/commit" && t["value"] == good.as_str()), "{mv}");
    // Deployed: the ModelDeployment now names version 1, and it serves it.
    let dep = step(&run, "deploy");
    assert_eq!(dep["phase"], "Succeeded", "{run:#}");
    assert_eq!(dep["deployment"], "iris-serving");
    let (_, md) = cap.get("/apis/capstan.dev/v1alpha1/namespaces/default/modeldeployments/iris-serving");
    assert_eq!(md["spec"]["model"]["version"], 1, "{md}");
    assert_serves(&cap, "iris-serving", "1");

    // 2. A bad commit (labels scrambled): evaluation fails the gate; nothing is registered and
    // the run says why.
    let bad = commit_and_push(&work, "params.json", "{\"max_iter\": 300, \"label_noise\": 1.0}\n", "scramble labels");
    let name = generic_push(&cap, &bare, &bad, "push-bad");
    let run = wait_run(&cap, name.as_str().unwrap(), Duration::from_secs(300));
    assert_eq!(run["status"]["phase"], "Succeeded", "{run:#}");
    let accuracy = step(&run, "evaluate")["metrics"]["accuracy"].as_f64().unwrap();
    assert!(accuracy <= 0.9, "scrambled labels still gave {accuracy}");
    let reg = step(&run, "register");
    assert_eq!(reg["phase"], "Skipped", "{run:#}");
    assert_eq!(reg["reason"], "WhenFalse");
    let why = reg["message"].as_str().unwrap();
    assert!(why.contains(&format!("steps.evaluate.metrics.accuracy = {accuracy}")), "{why}");
    assert!(run["status"]["message"].as_str().unwrap().contains("register"), "{run:#}");
    let (_, versions) = cap.get(&format!("/api/2.0/mlflow/model-versions/search?filter=name%3D%27{model}%27"));
    assert_eq!(versions["model_versions"].as_array().map(Vec::len), Some(1), "{versions}");
    let (_, mv) = cap.get(&format!("/api/2.0/mlflow/registered-models/alias?name={model}&alias=champion"));
    assert_eq!(mv["model_version"]["version"], "1", "the alias moved: {mv}");
    assert_eq!(step(&run, "deploy")["reason"], "DependencySkipped", "{run:#}");
    // The CLI shows the chain and why the gate stopped it.
    let out = cap.cli(&["describe", "pipelinerun", name.as_str().unwrap()]).ok();
    assert!(out.stdout.contains(&format!("Commit:       {bad} on main")), "{}", out.stdout);
    assert!(out.stdout.contains("Why skipped or failed:"), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("steps.evaluate.metrics.accuracy = {accuracy}")), "{}", out.stdout);
    let (_, md) = cap.get("/apis/capstan.dev/v1alpha1/namespaces/default/modeldeployments/iris-serving");
    assert_eq!(md["spec"]["model"]["version"], 1, "{md}");
    assert_serves(&cap, "iris-serving", "1");
}

/// The deployment answers an Open Inference Protocol request with `version` and a setosa label.
fn assert_serves(cap: &Capstan, deployment: &str, version: &str) {
    let req = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]});
    let path = format!("/v2/models/{deployment}/infer");
    let ok = |(code, body): &(u16, Value)| *code == 200 && body["model_version"] == version;
    wait_until(
        Duration::from_secs(180),
        &format!("{deployment} to serve version {version}"),
        || ok(&cap.post(&path, "application/json", serde_json::to_vec(&req).unwrap())),
        || {
            let (code, body) = cap.post(&path, "application/json", serde_json::to_vec(&req).unwrap());
            let md = cap.get(&format!("/apis/capstan.dev/v1alpha1/namespaces/default/modeldeployments/{deployment}")).1;
            format!("last answer {code}: {body}\n{md:#}\n{}", cap.log_tail(40))
        },
    );
    let (_, body) = cap.post(&path, "application/json", serde_json::to_vec(&req).unwrap());
    let label = body["outputs"].as_array().and_then(|o| o.iter().find(|o| o["name"] == "label")).cloned();
    assert_eq!(label.map(|l| l["data"][0].clone()), Some(json!(0)), "a setosa flower: {body}");
}

fn workspace_file_path(rel: &str) -> PathBuf {
    let p = workspace_root().join(rel);
    assert!(p.exists(), "{} is missing", p.display());
    p
}

#[test]
fn gitlab_pushes_need_the_token_and_start_one_run() {
    let cap = Capstan::start();
    cap.cli(&["secret", "create", "gl", "--from-literal", "token=gl-s3cret"]).ok();
    cap.apply(
        r#"apiVersion: capstan.dev/v1alpha1
kind: Pipeline
metadata: {name: gl}
spec:
  triggers:
    - git: {repo: "https://gitlab.example.com/acme/iris.git", provider: gitlab, secretRef: {name: gl, key: token}}
  steps:
    - name: hello
      container: {template: {runtime: process, command: ["true"]}}
"#,
    );
    let sha = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7";
    let body = serde_json::to_vec(&json!({
        "object_kind": "push", "ref": "refs/heads/main", "before": "0".repeat(40), "after": sha, "checkout_sha": sha,
        "user_name": "Ada", "project": {"git_http_url": "https://gitlab.example.com/acme/iris.git",
            "git_ssh_url": "git@gitlab.example.com:acme/iris.git"},
        "commits": [{"id": sha, "message": "tune\n", "author": {"name": "Ada", "email": "ada@example.com"},
            "added": [], "modified": ["train.py"], "removed": []}],
    }))
    .unwrap();
    let with = |token: Option<&str>, uuid: &str| {
        let mut h = vec![("X-Gitlab-Event", "Push Hook".to_string()), ("X-Gitlab-Event-UUID", uuid.to_string())];
        if let Some(t) = token {
            h.push(("X-Gitlab-Token", t.to_string()));
        }
        h
    };
    for (token, uuid) in [(Some("wrong"), "u1"), (None, "u2"), (Some("gl-s3cre"), "u3")] {
        let (code, resp) = hook(&cap, "gitlab", &with(token, uuid), body.clone());
        assert_eq!(code, 401, "{token:?}: {resp}");
    }
    assert!(runs(&cap).is_empty());
    let (code, resp) = hook(&cap, "gitlab", &with(Some("gl-s3cret"), "u4"), body.clone());
    assert_eq!(code, 201, "{resp}");
    let (code, resp) = hook(&cap, "gitlab", &with(Some("gl-s3cret"), "u4"), body.clone());
    assert_eq!((code, resp["duplicate"].clone()), (200, json!(true)), "{resp}");
    let all = runs(&cap);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["spec"]["commit"]["sha"], sha);
    assert_eq!(all[0]["spec"]["commit"]["author"], "Ada <ada@example.com>");
    let (code, resp) = hook(
        &cap,
        "gitlab",
        &[("X-Gitlab-Event", "Issue Hook".into()), ("X-Gitlab-Token", "gl-s3cret".into())],
        b"{}".to_vec(),
    );
    assert_eq!(code, 400, "{resp}");
    assert!(resp["error"].as_str().unwrap().contains("unsupported GitLab event \"Issue Hook\""), "{resp}");
}
