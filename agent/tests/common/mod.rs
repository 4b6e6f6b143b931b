//! Helpers shared by the agent's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capstan_agent::{Agent, AgentConfig, Observation, ReplicaHandle, ReplicaSpec, Runtime};

/// The image scripts/podman-setup.sh imports.
pub const IMAGE: &str = "localhost/capstan-busybox:1";

/// A unique job UID for a test.
pub fn uid(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{test}-{}-{nanos:x}", std::process::id())
}

/// A replica spec with `argv`, logging to `dir/<job>.log`.
pub fn spec(runtime: Runtime, dir: &Path, job_uid: &str, argv: &[&str]) -> ReplicaSpec {
    ReplicaSpec {
        namespace: "default".to_string(),
        job_name: "agent-test".to_string(),
        job_uid: job_uid.to_string(),
        index: 0,
        attempt: 0,
        runtime,
        image: (runtime == Runtime::Container).then(|| IMAGE.to_string()),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        working_dir: None,
        gpus: Vec::new(),
        cpu: None,
        memory_bytes: None,
        log_path: dir.join("logs").join(format!("{job_uid}.log")),
        mounts: Vec::new(),
    }
}

/// The Podman (or Docker) socket of the container tests. Never skipped silently.
pub fn docker_socket() -> String {
    match std::env::var("CAPSTAN_DOCKER_SOCKET") {
        Ok(s) if !s.is_empty() => s,
        _ => panic!(
            "CAPSTAN_DOCKER_SOCKET is not set: the container runtime tests need a real engine. \
             Run `eval \"$(scripts/podman-setup.sh /tmp/capstan-podman)\"` from the repository \
             root first (it starts Podman's Docker-API service and imports {IMAGE})."
        ),
    }
}

/// An agent on `state_dir`, with the test engine when `containers`.
pub async fn agent(state_dir: &Path, containers: bool) -> Agent {
    let config = AgentConfig {
        node_name: "test-node".to_string(),
        docker_socket: Some(if containers {
            docker_socket()
        } else {
            state_dir.join("no-engine.sock").display().to_string()
        }),
        state_dir: state_dir.to_path_buf(),
        simulate_gpus: None,
        telemetry: Default::default(),
    };
    let agent = Agent::new(config).await.expect("agent starts");
    if containers {
        assert!(
            agent.has_container_engine(),
            "no container engine answers at CAPSTAN_DOCKER_SOCKET={}; rerun scripts/podman-setup.sh",
            docker_socket()
        );
    }
    agent
}

/// Observe until the replica has exited (panics after `timeout`).
pub async fn wait_exit(agent: &Agent, handle: &ReplicaHandle, timeout: Duration) -> (i32, String) {
    let deadline = Instant::now() + timeout;
    loop {
        match agent.observe(handle).await {
            Observation::Exited { code, reason } => return (code, reason),
            Observation::Running => {}
            Observation::Missing => panic!("replica {handle:?} went missing"),
        }
        assert!(Instant::now() < deadline, "replica {handle:?} still running after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Content of a log file ("" when absent).
pub fn read_log(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Wait until `path` contains `needle` (panics after `timeout`).
pub async fn wait_log(path: &PathBuf, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let log = read_log(path);
        if log.contains(needle) {
            return log;
        }
        assert!(Instant::now() < deadline, "{} lacks {needle:?} after {timeout:?}: {log:?}", path.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
