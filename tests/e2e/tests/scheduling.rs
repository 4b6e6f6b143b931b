//! End-to-end tests of the GPU scheduler inside `capstan up`: queues, priorities,
//! preemption and queue status, on the local agent's simulated GPUs (process replicas).
//!
//!     cargo build -p capstan && cargo test -p capstan-e2e --test scheduling

use std::time::Duration;

use capstan_e2e::*;
use serde_json::Value;

const QUEUES: &str = "\
apiVersion: capstan.dev/v1alpha1
kind: Queue
metadata:
  name: team-a
spec:
  cohort: lab
  quotas:
    - product: '*'
      nominal: 8
---
apiVersion: capstan.dev/v1alpha1
kind: Queue
metadata:
  name: team-b
spec:
  cohort: lab
  quotas:
    - product: '*'
      nominal: 0
";

/// A job on `gpus` GPUs in `queue` at `priority` running `script` as a host process.
fn gpu_job(name: &str, queue: &str, priority: i32, gpus: u32, script: &str) -> String {
    let script = serde_json::to_string(script).unwrap();
    format!(
        "apiVersion: capstan.dev/v1alpha1\nkind: TrainingJob\nmetadata:\n  name: {name}\nspec:\n  runtime: process\n  \
         queue: {queue}\n  priority: {priority}\n  replicas: 1\n  gpusPerReplica: {gpus}\n  command: [\"/bin/sh\", \"-c\", {script}]\n"
    )
}

fn pretty(j: &Value) -> String {
    serde_json::to_string_pretty(j).unwrap()
}

/// A low-priority job borrowing team-a's GPUs through the cohort is preempted when team-a
/// needs them: it gets SIGTERM, its status says Preempted and why, it requeues without
/// counting a restart, and completes once the GPUs are free again.
#[test]
fn reclaim_preempts_the_borrower_which_requeues_and_completes() {
    let c = Capstan::start_with_gpus("8");
    c.apply(QUEUES).ok();
    let marker = c.scratch().join("low-was-terminated");
    // First attempt: run until SIGTERM, note it, exit 143. Later attempts: finish at once.
    let low_script = format!(
        "echo \"attempt on GPUs $CUDA_VISIBLE_DEVICES\"; \
         if [ -e {m} ]; then echo resumed; exit 0; fi; \
         trap 'echo got SIGTERM; touch {m}; exit 143' TERM; \
         sleep 300 & wait",
        m = marker.display()
    );
    c.apply(&gpu_job("low", "team-b", 0, 8, &low_script)).ok();
    let low = c.wait_phase("low", "Running");
    let gpus: Vec<u64> =
        low["status"]["replicaStatuses"][0]["gpus"].as_array().unwrap().iter().map(|g| g.as_u64().unwrap()).collect();
    assert_eq!(gpus.len(), 8, "low holds all 8 GPUs by borrowing:\n{}", pretty(&low));

    // team-a reclaims its quota.
    c.apply(&gpu_job("high", "team-a", 100, 8, "echo high runs; sleep 2; echo high done")).ok();

    // The borrower is stopped and requeued, with the reason in its status.
    let preempted = c.wait_job("low", Duration::from_secs(60), "low preempted and requeued", |j| {
        condition(j, "Preempted").is_some_and(|p| p["status"] == "True") && phase(j) == "Pending"
    });
    let cond = condition(&preempted, "Preempted").unwrap();
    assert_eq!(cond["reason"], "Preempted", "{cond}");
    let why = cond["message"].as_str().unwrap_or_default();
    assert!(
        why.contains("team-a") || why.contains("high") || why.contains("reclaim"),
        "reason names the claimant: {why}"
    );
    assert_eq!(preempted["status"]["restarts"], 0, "preemption does not count:\n{}", pretty(&preempted));
    assert!(marker.exists(), "the preempted replica got SIGTERM (its trap ran)");

    // high runs and finishes; then low is admitted again and completes.
    let high = c.wait_finished("high");
    assert_eq!(phase(&high), "Succeeded", "{}", pretty(&high));
    let low = c.wait_finished("low");
    assert_eq!(phase(&low), "Succeeded", "{}", pretty(&low));
    assert_eq!(low["status"]["restarts"], 0, "{}", pretty(&low));
    assert_eq!(low["status"]["uncountedRestarts"], 1, "{}", pretty(&low));
    assert!(low["status"]["attempt"].as_u64().unwrap() >= 2, "{}", pretty(&low));
    assert!(c.logs("low", 0, Some(1)).contains("got SIGTERM"), "attempt 1 log shows the SIGTERM");
    assert!(c.logs("low", 0, None).contains("resumed"));

    let described = c.cli(&["describe", "tj", "low"]).ok();
    assert!(described.stdout.contains("Preempted"), "describe shows the preemption event:\n{}", described.stdout);
}

/// A higher-priority job in the same queue preempts a lower one; jobs that cannot fit wait
/// with a reason and a queue position, and the Queue status counts usage.
#[test]
fn priority_within_a_queue_and_pending_reasons() {
    let c = Capstan::start_with_gpus("4");
    c.apply(&gpu_job("small", "default", 0, 4, "trap 'exit 143' TERM; sleep 300 & wait")).ok();
    c.wait_phase("small", "Running");
    // Too big for this node: pending with a reason naming the numbers.
    c.apply(&gpu_job("huge", "default", 0, 16, "true")).ok();
    let huge = c.wait_job("huge", Duration::from_secs(30), "huge pending with a reason", |j| {
        phase(j) == "Pending" && j["status"]["message"].as_str().is_some_and(|m| m.contains("16"))
    });
    assert!(huge["status"]["queuePosition"].as_u64().is_some(), "{}", pretty(&huge));
    // Higher priority in the same queue takes the GPUs.
    c.apply(&gpu_job("urgent", "default", 50, 4, "echo urgent; sleep 1")).ok();
    let small = c.wait_job("small", Duration::from_secs(60), "small preempted", |j| {
        condition(j, "Preempted").is_some_and(|p| p["status"] == "True")
    });
    assert_eq!(small["status"]["restarts"], 0);
    let urgent = c.wait_finished("urgent");
    assert_eq!(phase(&urgent), "Succeeded", "{}", pretty(&urgent));
    c.wait_phase("small", "Running");
    let out = c.cli(&["get", "tj", "-o", "wide"]).ok();
    assert!(out.stdout.contains("huge") && out.stdout.contains("Pending"), "{}", out.stdout);
}

/// Queue status reports GPUs in use, pending and admitted jobs.
#[test]
fn queue_status_counts_usage() {
    let c = Capstan::start_with_gpus("8");
    c.apply(QUEUES).ok();
    c.apply(&gpu_job("a1", "team-a", 0, 4, "trap 'exit 143' TERM; sleep 300 & wait")).ok();
    c.apply(&gpu_job("a2", "team-a", 0, 8, "true")).ok();
    c.wait_phase("a1", "Running");
    let (code, q) = (0..300)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(200));
            c.get("/apis/capstan.dev/v1alpha1/queues/team-a")
        })
        .find(|(_, q)| q["status"]["admitted"] == 1 && q["status"]["pending"] == 1)
        .unwrap_or_else(|| c.get("/apis/capstan.dev/v1alpha1/queues/team-a"));
    assert_eq!(code, 200);
    assert_eq!(q["status"]["admitted"], 1, "{}", pretty(&q));
    assert_eq!(q["status"]["pending"], 1, "{}", pretty(&q));
    let usage: u64 = q["status"]["usage"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(usage, 4, "{}", pretty(&q));
    let table = c.cli(&["get", "queues"]).ok();
    assert!(table.stdout.contains("team-a") && table.stdout.contains("COHORT"), "{}", table.stdout);
}
