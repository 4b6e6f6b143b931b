//! End-to-end tests of `capstan up` (server + controller + agent in one process), driven
//! through the real binary's CLI and HTTP API.
//!
//! Needs `cargo build -p capstan` first, `busybox` on the host (process replicas run
//! `busybox nc`), and for the container tests a Podman Docker-API service:
//! `eval "$(bash scripts/podman-setup.sh /tmp/capstan-podman)"` (the container tests fail,
//! never skip, without `CAPSTAN_DOCKER_SOCKET`).
//!
//!     cargo test -p capstan-e2e -- --test-threads=2
//!
//! `CAPSTAN_E2E_KEEP=1` keeps the data directory and log of a failed test.

use std::time::Duration;

use capstan_e2e::*;
use serde_json::Value;

/// The example manifest with another name, optionally as host processes.
fn hello_distributed(name: &str, process: bool) -> String {
    let y = workspace_file("examples/hello-distributed.yaml");
    assert!(y.contains("\n  name: hello-distributed\n"), "examples/hello-distributed.yaml changed shape:\n{y}");
    let mut y = y.replace("\n  name: hello-distributed\n", &format!("\n  name: {name}\n"));
    if process {
        assert!(y.contains("\nspec:\n"));
        y = y.replacen("\nspec:\n", "\nspec:\n  runtime: process\n", 1);
    }
    y
}

#[track_caller]
fn assert_phase(j: &Value, want: &str) {
    assert_eq!(phase(j), want, "job is not {want}:\n{}", serde_json::to_string_pretty(j).unwrap());
}

/// The Failed (or Succeeded) condition, which must be True.
#[track_caller]
fn true_condition<'a>(j: &'a Value, type_: &str) -> &'a Value {
    let c = condition(j, type_)
        .unwrap_or_else(|| panic!("no {type_} condition:\n{}", serde_json::to_string_pretty(j).unwrap()));
    assert_eq!(c["status"], "True", "{type_} condition is not True: {c}");
    c
}

fn uid(j: &Value) -> String {
    j["metadata"]["uid"].as_str().expect("metadata.uid").to_string()
}

/// Rank 0 received rank 1's greeting and rank 1 rank 0's.
#[track_caller]
fn assert_rendezvous_logs(capstan: &Capstan, name: &str) {
    let log0 = capstan.logs(name, 0, None);
    let log1 = capstan.logs(name, 1, None);
    assert!(log0.contains("received: hello from rank 1"), "replica 0 log lacks rank 1's greeting:\n{log0}");
    assert!(log1.contains("received: hello from rank 0"), "replica 1 log lacks rank 0's greeting:\n{log1}");
    assert!(log0.contains("rank 0 of 2;"), "replica 0 log lacks its rendezvous line:\n{log0}");
    assert!(log1.contains("rank 1 of 2;"), "replica 1 log lacks its rendezvous line:\n{log1}");
}

/// The job's tracking run exists and FINISHED.
#[track_caller]
fn assert_tracking_run_finished(capstan: &Capstan, j: &Value, name: &str) {
    let run_id = j["status"]["trackingRunId"]
        .as_str()
        .unwrap_or_else(|| panic!("no status.trackingRunId:\n{}", serde_json::to_string_pretty(j).unwrap()));
    assert!(
        run_id.len() == 32 && run_id.chars().all(|c| c.is_ascii_hexdigit()),
        "trackingRunId {run_id:?} is not 32 hex digits"
    );
    let (status, body) = capstan.get(&format!("/api/2.0/mlflow/runs/get?run_id={run_id}"));
    assert_eq!(status, 200, "runs/get {run_id}: {body}");
    assert_eq!(body["run"]["info"]["status"], "FINISHED", "tracking run is not FINISHED: {body}");
    let tags = body["run"]["data"]["tags"].as_array().cloned().unwrap_or_default();
    assert!(
        tags.iter().any(|t| t["key"] == "capstan.dev/job-name" && t["value"] == name),
        "tracking run lacks the tag capstan.dev/job-name={name}: {body}"
    );
}

// 1 ---------------------------------------------------------------------------------------

#[test]
fn rendezvous_process() {
    let capstan = Capstan::start();
    let name = unique_name("hello-proc");
    capstan.apply(&hello_distributed(&name, true));
    let j = capstan.wait_finished(&name);
    assert_phase(&j, "Succeeded");
    assert_eq!(j["status"]["restarts"], 0, "{j}");
    assert_eq!(j["status"]["exitCode"], 0, "{j}");
    true_condition(&j, "Succeeded");
    let reps = j["status"]["replicaStatuses"].as_array().cloned().unwrap_or_default();
    assert_eq!(reps.len(), 2, "replicaStatuses: {j}");
    for r in &reps {
        assert_eq!(r["state"], "Succeeded", "replica: {r}");
        assert_eq!(r["exitCode"], 0, "replica: {r}");
    }
    assert_rendezvous_logs(&capstan, &name);
    assert_tracking_run_finished(&capstan, &j, &name);
    assert!(
        job_procs(&name).is_empty(),
        "processes of the finished job remain:\n{}",
        describe_procs(&job_procs(&name))
    );
}

// 2 ---------------------------------------------------------------------------------------

#[test]
fn rendezvous_container() {
    let capstan = Capstan::start_with_containers();
    let name = unique_name("hello-ctr");
    capstan.apply(&hello_distributed(&name, false));
    let j = capstan.wait_finished(&name);
    assert_phase(&j, "Succeeded");
    assert_eq!(j["status"]["restarts"], 0, "{j}");
    assert_rendezvous_logs(&capstan, &name);
    assert_tracking_run_finished(&capstan, &j, &name);
    let uid = uid(&j);
    // It really ran in containers (finished ones are kept by the default cleanPodPolicy)...
    let all = all_containers_of(&uid);
    assert!(!all.is_empty(), "no container was ever labelled capstan.dev/job-uid={uid}: did it run as containers?");
    // ...and none runs any more.
    let running = running_containers_of(&uid);
    assert!(running.is_empty(), "containers of the finished job still run: {running:?}");
}

// 3 ---------------------------------------------------------------------------------------

#[test]
fn failing_job_backoff() {
    let capstan = Capstan::start();
    let name = unique_name("backoff");
    capstan.apply(&process_job(&name, 2, &["/bin/sh", "-c", "echo attempt; exit 3"], "backoffLimit: 2"));
    let j = capstan.wait_finished(&name);
    assert_phase(&j, "Failed");
    let st = &j["status"];
    assert_eq!(st["restarts"], 2, "restarts: {j}");
    assert_eq!(st["attempt"], 3, "attempt: {j}");
    assert_eq!(st["exitCode"], 3, "exitCode: {j}");
    let c = true_condition(&j, "Failed");
    assert_eq!(c["reason"], "BackoffLimitExceeded", "{c}");
    let msg = c["message"].as_str().unwrap_or("");
    assert!(msg.contains("exited with code 3"), "Failed message does not say why: {msg:?}");

    let d = capstan.cli(&["describe", "tj", &name]).ok();
    assert!(d.stdout.contains("BackoffLimitExceeded"), "describe lacks the reason:\n{}", d.stdout);
    assert!(d.stdout.contains("Failed"), "describe lacks the phase:\n{}", d.stdout);

    for attempt in 1..=3 {
        for replica in 0..2 {
            let log = capstan.logs(&name, replica, Some(attempt));
            assert!(log.contains("attempt"), "attempt {attempt} replica {replica}: log lacks its output: {log:?}");
        }
    }
}

// 4 ---------------------------------------------------------------------------------------

#[test]
fn exit_code_policy() {
    let capstan = Capstan::start();
    let permanent = unique_name("exit-perm");
    let retryable = unique_name("exit-retry");
    capstan.apply(&process_job(
        &permanent,
        2,
        &["/bin/sh", "-c", "if [ \"$RANK\" = 1 ]; then exit 3; fi; sleep 600"],
        "restartPolicy: ExitCode\nbackoffLimit: 3",
    ));
    capstan.apply(&process_job(
        &retryable,
        1,
        &["/bin/sh", "-c", "exit 130"],
        "restartPolicy: ExitCode\nbackoffLimit: 1",
    ));

    let j = capstan.wait_finished(&permanent);
    assert_phase(&j, "Failed");
    assert_eq!(j["status"]["restarts"], 0, "an exit code 1-127 must not restart under ExitCode: {j}");
    assert_eq!(j["status"]["attempt"], 1, "{j}");
    assert_eq!(j["status"]["exitCode"], 3, "{j}");
    let c = true_condition(&j, "Failed");
    assert_eq!(c["reason"], "PermanentExitCode", "{c}");
    // The other replica (sleeping) was stopped.
    assert!(
        job_procs(&permanent).is_empty(),
        "processes of the failed job remain:\n{}",
        describe_procs(&job_procs(&permanent))
    );

    let j = capstan.wait_finished(&retryable);
    assert_phase(&j, "Failed");
    assert_eq!(j["status"]["restarts"], 1, "exit 130 is retryable: one gang restart under backoffLimit 1: {j}");
    assert_eq!(j["status"]["attempt"], 2, "{j}");
    assert_eq!(j["status"]["exitCode"], 130, "{j}");
    let c = true_condition(&j, "Failed");
    assert_eq!(c["reason"], "BackoffLimitExceeded", "{c}");
}

// 5 ---------------------------------------------------------------------------------------

#[test]
fn active_deadline() {
    let capstan = Capstan::start();
    let name = unique_name("deadline");
    capstan.apply(&process_job(&name, 2, &["sleep", "600"], "activeDeadlineSeconds: 2"));
    // While it runs its processes are visible (so that "none remain" below means something).
    capstan.wait_job(&name, JOB_TIMEOUT, "Running or finished", |j| matches!(phase(j), "Running" | "Failed"));
    let j = capstan.wait_finished(&name);
    assert_phase(&j, "Failed");
    let c = true_condition(&j, "Failed");
    assert_eq!(c["reason"], "DeadlineExceeded", "{c}");
    assert_eq!(j["status"]["restarts"], 0, "{j}");
    let left = job_procs(&name);
    assert!(left.is_empty(), "processes of the job remain after DeadlineExceeded:\n{}", describe_procs(&left));
    // And the agent's records name no live process of it.
    let dir = capstan.data_dir().join("agent/processes");
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let rec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap_or(Value::Null);
        if rec["job_name"] == name.as_str() || rec["jobName"] == name.as_str() {
            if let Some(pid) = rec["pid"].as_u64() {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let live = stat.rsplit_once(')').map(|(_, r)| !r.trim_start().starts_with(['Z', 'X'])).unwrap_or(false);
                let ours = proc_env(pid as u32).iter().any(|(k, v)| k == "CAPSTAN_JOB_NAME" && *v == name);
                assert!(!(live && ours), "record {} names live pid {pid}", path.display());
            }
        }
    }
}

// 6 ---------------------------------------------------------------------------------------

#[test]
fn delete_running_job() {
    let capstan = Capstan::start();
    let name = unique_name("del-proc");
    capstan.apply(&process_job(&name, 2, &["/bin/sh", "-c", "sleep 1000 & sleep 1000"], ""));
    capstan.wait_phase(&name, "Running");
    let running = job_procs(&name);
    assert!(running.len() >= 2, "expected the replicas' processes, found:\n{}", describe_procs(&running));
    let out = capstan.cli_timeout(&["delete", "tj", &name, "--wait"], Duration::from_secs(150));
    assert_eq!(out.code, 0, "delete --wait failed:\n{}\n{}", out.stdout, out.stderr);
    let left = job_procs(&name);
    assert!(left.is_empty(), "processes of the deleted job remain:\n{}", describe_procs(&left));
    let (status, body) = capstan.get(&Capstan::job_path(&name));
    assert_eq!(status, 404, "GET after delete: {body}");
    let out = capstan.cli(&["get", "tj", &name]);
    assert_ne!(out.code, 0, "capstan get of a deleted job succeeded: {}", out.stdout);
}

#[test]
fn delete_running_container_job() {
    let capstan = Capstan::start_with_containers();
    let name = unique_name("del-ctr");
    let yaml = format!(
        "apiVersion: capstan.dev/v1alpha1\nkind: TrainingJob\nmetadata:\n  name: {name}\nspec:\n  image: localhost/capstan-busybox:1\n  replicas: 2\n  command: [\"/bin/sh\", \"-c\", \"sleep 1000 & sleep 1000\"]\n"
    );
    capstan.apply(&yaml);
    let j = capstan.wait_phase(&name, "Running");
    let uid = uid(&j);
    let running = running_containers_of(&uid);
    assert_eq!(running.len(), 2, "expected 2 running containers labelled with uid {uid}: {running:?}");
    let out = capstan.cli_timeout(&["delete", "tj", &name, "--wait"], Duration::from_secs(150));
    assert_eq!(out.code, 0, "delete --wait failed:\n{}\n{}", out.stdout, out.stderr);
    let running = running_containers_of(&uid);
    assert!(running.is_empty(), "containers of the deleted job still run: {running:?}");
    let (status, body) = capstan.get(&Capstan::job_path(&name));
    assert_eq!(status, 404, "GET after delete: {body}");
}

// 7 ---------------------------------------------------------------------------------------

#[test]
fn restart_keeps_history() {
    let mut capstan = Capstan::start();
    let name = unique_name("history");
    capstan.apply(&process_job(&name, 1, &["/bin/sh", "-c", "echo done"], ""));
    let before = capstan.wait_finished(&name);
    assert_phase(&before, "Succeeded");

    let code = capstan.stop();
    assert_eq!(code, Some(0), "capstan up did not exit 0 on SIGTERM; log:\n{}", capstan.log_tail(40));
    capstan.restart();

    let after = capstan
        .job(&name)
        .unwrap_or_else(|| panic!("job {name} is gone after a restart; log:\n{}", capstan.log_tail(40)));
    assert_phase(&after, "Succeeded");
    assert_eq!(uid(&after), uid(&before), "the job's uid changed across a restart");
    // A few controller passes later it has not run again.
    std::thread::sleep(Duration::from_secs(2));
    let later = capstan.job(&name).expect("job");
    assert_phase(&later, "Succeeded");
    assert_eq!(later["status"]["attempt"], 1, "the finished job ran again after a restart: {later}");
    assert_eq!(later["status"]["restarts"], 0, "{later}");

    let out = capstan.cli(&["get", "tj"]).ok();
    let row = out.stdout.lines().find(|l| l.split_whitespace().next() == Some(name.as_str()));
    let row = row.unwrap_or_else(|| panic!("capstan get tj does not list {name}:\n{}", out.stdout));
    assert!(row.split_whitespace().any(|c| c == "Succeeded"), "row is not Succeeded: {row}");
    assert_eq!(capstan.logs(&name, 0, None).trim(), "done", "the log did not survive the restart");
    assert_tracking_run_finished(&capstan, &later, &name);
}

// 8 ---------------------------------------------------------------------------------------

#[test]
fn kill9_recovery() {
    let mut capstan = Capstan::start();
    let name = unique_name("adopt");
    capstan.apply(&process_job(&name, 2, &["sleep", "8"], ""));
    capstan.wait_phase(&name, "Running");
    capstan.kill9();
    let alive = job_procs(&name);
    assert!(!alive.is_empty(), "the replicas died with capstan up (they must outlive it)");
    capstan.restart();
    let j = capstan.wait_finished(&name);
    assert_phase(&j, "Succeeded");
    assert_eq!(j["status"]["restarts"], 0, "adopted replicas were restarted: {j}");
    assert_eq!(j["status"]["attempt"], 1, "{j}");
    for r in j["status"]["replicaStatuses"].as_array().into_iter().flatten() {
        assert_eq!(r["exitCode"], 0, "replica exit code not read back: {r}");
    }
}

#[test]
fn kill9_recovery_replica_killed_while_down() {
    let mut capstan = Capstan::start();
    let name = unique_name("adopt-lost");
    // Attempt 1 sleeps until stopped; once the flag exists (created while capstan is down,
    // after replica 1 was killed) a new attempt exits 0 at once: deterministic, no race with
    // a sleep running out.
    let flag = capstan.scratch().join(format!("{name}.flag"));
    let script = format!("if [ -e '{}' ]; then echo second; exit 0; fi; echo first; sleep 600", flag.display());
    capstan.apply(&process_job(&name, 2, &["/bin/sh", "-c", &script], ""));
    capstan.wait_phase(&name, "Running");
    capstan.kill9();

    let victims = procs_with_env(&[("CAPSTAN_JOB_NAME", &name), ("CAPSTAN_REPLICA_INDEX", "1")]);
    assert!(!victims.is_empty(), "replica 1's processes not found");
    for pid in &victims {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), nix::sys::signal::Signal::SIGKILL);
    }
    wait_until(
        Duration::from_secs(10),
        "replica 1's processes to die",
        || procs_with_env(&[("CAPSTAN_JOB_NAME", &name), ("CAPSTAN_REPLICA_INDEX", "1")]).is_empty(),
        || describe_procs(&procs_with_env(&[("CAPSTAN_JOB_NAME", &name), ("CAPSTAN_REPLICA_INDEX", "1")])),
    );
    assert!(
        !procs_with_env(&[("CAPSTAN_JOB_NAME", &name), ("CAPSTAN_REPLICA_INDEX", "0")]).is_empty(),
        "replica 0 should still run"
    );
    std::fs::write(&flag, b"").unwrap();

    capstan.restart();
    let j = capstan.wait_finished(&name);
    assert_phase(&j, "Succeeded");
    assert_eq!(j["status"]["restarts"], 1, "a replica killed while capstan was down must cost one gang restart: {j}");
    assert_eq!(j["status"]["attempt"], 2, "{j}");
    for r in 0..2 {
        let first = capstan.logs(&name, r, Some(1));
        assert!(first.contains("first"), "attempt 1 replica {r} log: {first:?}");
        let second = capstan.logs(&name, r, Some(2));
        assert!(second.contains("second"), "attempt 2 replica {r} log: {second:?}");
    }
    let left = job_procs(&name);
    assert!(left.is_empty(), "processes of the finished job remain:\n{}", describe_procs(&left));
}

// 9 ---------------------------------------------------------------------------------------

fn names(capstan: &Capstan) -> (Vec<String>, Vec<String>) {
    let list = |path: &str| -> Vec<String> {
        let (status, body) = capstan.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        let mut v: Vec<String> = body["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                format!(
                    "{}/{}",
                    i["metadata"]["uid"].as_str().unwrap_or(""),
                    i["metadata"]["name"].as_str().unwrap_or("")
                )
            })
            .collect();
        v.sort();
        v
    };
    (list("/apis/capstan.dev/v1alpha1/trainingjobs"), list("/apis/capstan.dev/v1alpha1/queues"))
}

#[test]
fn bad_manifests_cli_and_server() {
    let capstan = Capstan::start();
    // Something valid exists, so that "unchanged" is not trivially an empty list.
    let keep = unique_name("keep");
    capstan.apply(&process_job(&keep, 1, &["true"], ""));
    let before = names(&capstan);

    let job = |name: &str, extra: &str| {
        format!(
            "apiVersion: capstan.dev/v1alpha1\nkind: TrainingJob\nmetadata:\n  name: {name}\nspec:\n  runtime: process\n  command: [\"true\"]\n{extra}"
        )
    };
    // (case, bytes, substrings of which the error must contain one)
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        ("unknown field", job("bad-unknown", "  replicaz: 2\n").into_bytes(), vec!["spec.replicaz"]),
        ("wrong type", job("bad-type", "  replicas: \"two\"\n").into_bytes(), vec!["spec.replicas"]),
        ("zero replicas", job("bad-zero", "  replicas: 0\n").into_bytes(), vec!["spec.replicas"]),
        (
            "reserved env",
            job("bad-env", "  env:\n    - name: MASTER_ADDR\n      value: x\n").into_bytes(),
            vec!["spec.env[0].name", "spec.env"],
        ),
        (
            "malformed yaml",
            b"apiVersion: capstan.dev/v1alpha1\nkind: TrainingJob\nmetadata:\n  name: bad-yaml\nspec:\n  command: [\"true\", \"x\"\n  replicas: 1\n".to_vec(),
            vec!["line"],
        ),
        ("4 MiB of random bytes", pseudo_random_bytes(0x5eed_cafe, 4 << 20), vec!["line"]),
        (
            "queue unknown field",
            b"apiVersion: capstan.dev/v1alpha1\nkind: Queue\nmetadata:\n  name: bad-queue\nspec:\n  cohortz: lab\n".to_vec(),
            vec!["spec.cohortz"],
        ),
    ];

    let mut failures = Vec::new();
    for (i, (case, bytes, want)) in cases.iter().enumerate() {
        let file = capstan.write_file(&format!("bad-{i}.yaml"), bytes);
        let out = capstan.cli(&["apply", "-f", file.to_str().unwrap()]);
        let names_it = |s: &str| want.iter().any(|w| s.contains(w)) || (want == &vec!["line"] && has_line_ref(s));
        if out.code != 1 {
            failures.push(format!("[{case}] CLI: exit code {} (want 1); stderr: {}", out.code, out.stderr));
        }
        if !names_it(&out.stderr) {
            failures.push(format!("[{case}] CLI: stderr names none of {want:?}: {}", out.stderr));
        }
        if out.stderr.contains("panicked") || out.stdout.contains("panicked") {
            failures.push(format!("[{case}] CLI panicked: {}", out.stderr));
        }
        if out.stderr.len() > 64 * 1024 {
            failures.push(format!("[{case}] CLI: stderr is {} bytes long", out.stderr.len()));
        }

        let (status, body) = capstan.post("/apis/capstan.dev/v1alpha1/apply", "application/yaml", bytes.clone());
        if status != 400 {
            failures.push(format!("[{case}] server: HTTP {status} (want 400): {body}"));
        }
        match body.get("error").and_then(Value::as_str) {
            Some(e) if names_it(e) => {}
            Some(e) => failures.push(format!("[{case}] server: error names none of {want:?}: {e}")),
            None => failures.push(format!("[{case}] server: body is not JSON with an \"error\": {body}")),
        }
    }
    let after = names(&capstan);
    assert_eq!(before, after, "a refused manifest created or changed something");
    assert!(failures.is_empty(), "{} problem(s):\n{}", failures.len(), failures.join("\n"));
    // The server still serves.
    assert!(capstan.job(&keep).is_some());
}

/// "line 7", or "file:7:".
fn has_line_ref(s: &str) -> bool {
    if s.contains("line ") {
        return true;
    }
    let b = s.as_bytes();
    (0..b.len()).any(|i| {
        b[i] == b':' && {
            let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            digits > 0 && b.get(i + 1 + digits) == Some(&b':')
        }
    })
}

// 10 --------------------------------------------------------------------------------------

#[test]
fn cli_get_table() {
    let capstan = Capstan::start();
    let name = unique_name("table");
    capstan.apply(&process_job(&name, 2, &["true"], ""));
    capstan.wait_phase(&name, "Succeeded");

    let out = capstan.cli(&["get", "trainingjobs"]).ok();
    let mut lines = out.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert!(
        header.len() >= 5 && header[..5] == ["NAME", "QUEUE", "PHASE", "REPLICAS", "GPUS"],
        "header is not NAME QUEUE PHASE REPLICAS GPUS ...:\n{}",
        out.stdout
    );
    let row: Vec<&str> = lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&name.as_str()))
        .unwrap_or_else(|| panic!("no row for {name}:\n{}", out.stdout));
    assert_eq!(&row[1..5], ["default", "Succeeded", "2", "0"], "row: {row:?}\n{}", out.stdout);

    let out = capstan.cli(&["get", "trainingjobs", "-o", "json"]).ok();
    let v: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("-o json does not parse ({e}):\n{}", out.stdout));
    assert!(
        v["items"].as_array().into_iter().flatten().any(|i| i["metadata"]["name"] == name.as_str()),
        "-o json lacks {name}: {v}"
    );
    let out = capstan.cli(&["get", "tj", &name, "-o", "json"]).ok();
    let v: Value = serde_json::from_str(&out.stdout).expect("get NAME -o json parses");
    assert_eq!(v["metadata"]["name"], name.as_str());
    assert_eq!(v["kind"], "TrainingJob");

    let out = capstan.cli(&["get", "tj", &name, "-o", "yaml"]).ok();
    assert!(out.stdout.lines().any(|l| l == "kind: TrainingJob"), "-o yaml lacks `kind: TrainingJob`:\n{}", out.stdout);
    let out = capstan.cli(&["get", "trainingjobs", "-o", "yaml"]).ok();
    assert!(out.stdout.contains("kind: TrainingJob"), "list -o yaml:\n{}", out.stdout);
    assert!(out.stdout.contains(&format!("name: {name}")), "list -o yaml lacks the job:\n{}", out.stdout);
}

// Beyond the list -------------------------------------------------------------------------

/// Two `capstan up` on one machine share the container engine (say, a developer's instance
/// and the test suite's): neither may stop or remove the other's containers as "replicas of
/// a job that no longer exists".
#[test]
fn two_instances_share_an_engine() {
    let a = Capstan::start_with_containers();
    let b = Capstan::start_with_containers();
    let name = unique_name("shared-engine");
    let yaml = format!(
        "apiVersion: capstan.dev/v1alpha1\nkind: TrainingJob\nmetadata:\n  name: {name}\nspec:\n  image: localhost/capstan-busybox:1\n  replicas: 2\n  command: [\"/bin/sh\", \"-c\", \"trap 'exit 0' TERM; sleep 1000 & wait\"]\n"
    );
    b.apply(&yaml);
    let j = b.wait_phase(&name, "Running");
    let uid = uid(&j);
    assert_eq!(running_containers_of(&uid).len(), 2, "B's containers are not running");
    // A knows nothing of B's job: give its controller a few passes (one a second).
    assert!(a.job(&name).is_none());
    std::thread::sleep(Duration::from_secs(4));
    let running = running_containers_of(&uid);
    assert_eq!(
        running.len(),
        2,
        "another capstan up on the same engine stopped B's containers; A's log:\n{}",
        a.log_tail(20)
    );
    let j = b.job(&name).expect("job");
    assert_phase(&j, "Running");
    assert_eq!(j["status"]["restarts"], 0, "{j}");
    b.cli_timeout(&["delete", "tj", &name, "--wait"], Duration::from_secs(150)).ok();
    assert!(running_containers_of(&uid).is_empty());
}
