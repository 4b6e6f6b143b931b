//! The process runtime against real processes.

mod common;

use std::time::{Duration, Instant};

use capstan_agent::{AgentError, Observation, ReplicaHandle, Runtime};
use common::{agent, read_log, spec, uid, wait_exit, wait_log};

const T: Duration = Duration::from_secs(20);

/// Live (not zombie) processes whose process group is `pgid`.
fn group(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
            let rest = &stat[stat.rfind(')').unwrap() + 1..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            f[0] != "Z" && f[0] != "X" && f[2] == pgid.to_string()
        })
        .collect()
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().next().unwrap().to_string();
        state != "Z" && state != "X"
    })
}

#[tokio::test]
async fn exit_code_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), false).await;
    assert!(!agent.has_container_engine());
    let s = spec(Runtime::Process, dir.path(), &uid("exit"), &["sh", "-c", "echo hello; echo oops >&2; exit 3"]);
    let handle = agent.start(&s).await.unwrap();
    assert_eq!(handle.runtime, Runtime::Process);
    let (code, reason) = wait_exit(&agent, &handle, T).await;
    assert_eq!((code, reason.as_str()), (3, "Error"));
    let log = read_log(&s.log_path);
    assert!(log.contains("hello\n") && log.contains("oops\n"), "{log:?}");

    // Zero is Completed, and a second start appends to the same log.
    let mut s2 = s.clone();
    s2.attempt = 1;
    s2.argv = vec!["echo".into(), "second".into()];
    let h2 = agent.start(&s2).await.unwrap();
    assert_eq!(wait_exit(&agent, &h2, T).await, (0, "Completed".to_string()));
    let log = read_log(&s.log_path);
    assert!(log.starts_with("hello\n") && log.ends_with("second\n"), "{log:?}");

    // cleanup forgets them.
    assert_eq!(agent.list().await.unwrap().len(), 2);
    agent.cleanup(&handle).await.unwrap();
    agent.cleanup(&h2).await.unwrap();
    assert!(agent.list().await.unwrap().is_empty());
    assert_eq!(agent.observe(&handle).await, Observation::Missing);
}

#[tokio::test]
async fn env_and_working_dir() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), false).await;
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut s = spec(
        Runtime::Process,
        dir.path(),
        &uid("env"),
        &["sh", "-c", "echo \"var=$CAPSTAN_TEST_VAR rank=$RANK home=${HOME:+set}\"; pwd"],
    );
    s.env = vec![("CAPSTAN_TEST_VAR".into(), "hello world".into()), ("RANK".into(), "3".into())];
    s.working_dir = Some(work.display().to_string());
    let handle = agent.start(&s).await.unwrap();
    assert_eq!(wait_exit(&agent, &handle, T).await.0, 0);
    let log = read_log(&s.log_path);
    // The agent's own environment is kept too (HOME).
    let home = if std::env::var_os("HOME").is_some() { "set" } else { "" };
    assert!(log.contains(&format!("var=hello world rank=3 home={home}\n")), "{log:?}");
    assert!(log.contains(&format!("{}\n", work.display())), "{log:?}");
}

#[tokio::test]
async fn a_replica_sees_only_its_gpus() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), false).await;
    let show = ["sh", "-c", "echo \"visible=[$CUDA_VISIBLE_DEVICES] order=$CUDA_DEVICE_ORDER\""];
    let mut s = spec(Runtime::Process, dir.path(), &uid("gpus"), &show);
    s.gpus = vec![1, 3];
    let handle = agent.start(&s).await.unwrap();
    assert_eq!(wait_exit(&agent, &handle, T).await.0, 0);
    let log = read_log(&s.log_path);
    assert!(log.contains("visible=[1,3] order=PCI_BUS_ID\n"), "{log:?}");
    // No GPUs: none visible (an empty list), not all of the node's.
    let s = spec(Runtime::Process, dir.path(), &uid("nogpus"), &show);
    let handle = agent.start(&s).await.unwrap();
    assert_eq!(wait_exit(&agent, &handle, T).await.0, 0);
    assert!(read_log(&s.log_path).contains("visible=[] order=PCI_BUS_ID\n"));
    // The job's own setting wins.
    let mut s = spec(Runtime::Process, dir.path(), &uid("own"), &show);
    s.gpus = vec![0];
    s.env = vec![("CUDA_VISIBLE_DEVICES".into(), "GPU-abc".into())];
    let handle = agent.start(&s).await.unwrap();
    assert_eq!(wait_exit(&agent, &handle, T).await.0, 0);
    assert!(read_log(&s.log_path).contains("visible=[GPU-abc]"));
}

#[tokio::test]
async fn spawn_errors() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), false).await;
    let s = spec(Runtime::Process, dir.path(), &uid("nope"), &["capstan-no-such-program"]);
    match agent.start(&s).await {
        Err(AgentError::Spawn { program, .. }) => assert_eq!(program, "capstan-no-such-program"),
        other => panic!("{other:?}"),
    }
    let s = spec(Runtime::Process, dir.path(), &uid("empty"), &[]);
    assert!(matches!(agent.start(&s).await, Err(AgentError::Invalid(_))));
    // No engine: container replicas fail with NoEngine.
    let s = spec(Runtime::Container, dir.path(), &uid("noengine"), &["true"]);
    assert!(matches!(agent.start(&s).await, Err(AgentError::NoEngine { .. })));
    let unknown = ReplicaHandle { runtime: Runtime::Process, id: "999999999".into() };
    assert_eq!(agent.observe(&unknown).await, Observation::Missing);
    agent.stop(&unknown, Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn stop_kills_the_whole_tree() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), false).await;
    let s = spec(Runtime::Process, dir.path(), &uid("tree"), &["sh", "-c", "sleep 1000 & sleep 1000"]);
    let handle = agent.start(&s).await.unwrap();
    let pgid: u32 = handle.id.parse().unwrap();
    // wrapper, sh, and two sleeps
    let deadline = Instant::now() + T;
    let mut members = group(pgid);
    while members.len() < 4 {
        assert!(Instant::now() < deadline, "tree did not start: {members:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        members = group(pgid);
    }
    assert_eq!(agent.observe(&handle).await, Observation::Running);
    let started = Instant::now();
    agent.stop(&handle, Duration::from_secs(5)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "SIGTERM should have been enough");
    assert!(group(pgid).is_empty(), "left behind: {:?}", group(pgid));
    for pid in &members {
        assert!(!alive(*pid), "process {pid} of the tree survived");
    }
    let (code, reason) = wait_exit(&agent, &handle, T).await;
    assert_eq!(code, 143, "{reason}");
    assert_eq!(reason, "Killed by signal 15 (SIGTERM)");
    // Stopping again is fine.
    agent.stop(&handle, Duration::from_secs(1)).await.unwrap();
    agent.cleanup(&handle).await.unwrap();
}

#[tokio::test]
async fn stop_escalates_to_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), false).await;
    // The program ignores SIGTERM (and so does its child).
    let s = spec(
        Runtime::Process,
        dir.path(),
        &uid("stubborn"),
        &["sh", "-c", "trap '' TERM; echo ready; sleep 1000 & sleep 1000"],
    );
    let handle = agent.start(&s).await.unwrap();
    wait_log(&s.log_path, "ready", T).await;
    let pgid: u32 = handle.id.parse().unwrap();
    let grace = Duration::from_millis(700);
    let started = Instant::now();
    agent.stop(&handle, grace).await.unwrap();
    let took = started.elapsed();
    assert!(took >= grace && took < grace + Duration::from_secs(5), "{took:?}");
    assert!(group(pgid).is_empty(), "left behind: {:?}", group(pgid));
    let (code, _) = wait_exit(&agent, &handle, T).await;
    assert_eq!(code, 137);
}

/// A second agent on the same state_dir adopts a replica that the first one started, as
/// after an agent restart: the first agent's runtime is gone, so it is not the parent.
#[test]
fn adopt_after_agent_restart() {
    let dir = tempfile::tempdir().unwrap();
    let job = uid("adopt");
    let s = spec(Runtime::Process, dir.path(), &job, &["sh", "-c", "echo started; sleep 2; echo done; exit 5"]);
    let mut s_killed = spec(Runtime::Process, dir.path(), &job, &["sleep", "1000"]);
    s_killed.index = 1;

    let first = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (handle, killed) = first.block_on(async {
        let agent = agent(dir.path(), false).await;
        (agent.start(&s).await.unwrap(), agent.start(&s_killed).await.unwrap())
    });
    drop(first);

    let second = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    second.block_on(async {
        let agent = agent(dir.path(), false).await;
        let found = agent.list().await.unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        let me = found.iter().find(|f| f.index == 0).unwrap();
        assert_eq!((me.job_uid.as_str(), me.attempt), (job.as_str(), 0));
        assert_eq!(me.handle, handle);
        assert_eq!(agent.observe(&handle).await, Observation::Running);
        let (code, reason) = wait_exit(&agent, &handle, T).await;
        assert_eq!((code, reason.as_str()), (5, "Error"));
        assert_eq!(read_log(&s.log_path), "started\ndone\n");

        // Killed together with its wrapper while no agent watched: no exit status.
        assert_eq!(agent.observe(&killed).await, Observation::Running);
        let pgid: i32 = killed.id.parse().unwrap();
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL).unwrap();
        let (code, reason) = wait_exit(&agent, &killed, T).await;
        assert_eq!((code, reason.as_str()), (137, "Killed"));

        for f in &found {
            agent.cleanup(&f.handle).await.unwrap();
        }
        assert!(agent.list().await.unwrap().is_empty());
    });
}

#[tokio::test]
async fn start_twice_returns_the_running_replica() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), false).await;
    let s = spec(Runtime::Process, dir.path(), &uid("twice"), &["sleep", "1000"]);
    let a = agent.start(&s).await.unwrap();
    let b = agent.start(&s).await.unwrap();
    assert_eq!(a, b);
    agent.stop(&a, Duration::from_secs(2)).await.unwrap();
    agent.cleanup(&a).await.unwrap();
}

#[tokio::test]
async fn simulated_gpus() {
    let dir = tempfile::tempdir().unwrap();
    let config = capstan_agent::AgentConfig {
        node_name: "gpu-node".into(),
        docker_socket: Some(dir.path().join("none.sock").display().to_string()),
        state_dir: dir.path().to_path_buf(),
        simulate_gpus: Some("4xA100-40GB".into()),
        telemetry: Default::default(),
    };
    let agent = capstan_agent::Agent::new(config.clone()).await.unwrap();
    assert_eq!(agent.node_name(), "gpu-node");
    let gpus = agent.gpus();
    assert_eq!(gpus.len(), 4);
    assert_eq!(gpus[2].uuid, "GPU-sim-gpu-node-2");
    assert_eq!((gpus[2].product.as_str(), gpus[2].memory_mib), ("NVIDIA-A100-40GB", 40960));
    let bad = capstan_agent::AgentConfig { simulate_gpus: Some("4x".into()), ..config };
    assert!(matches!(capstan_agent::Agent::new(bad).await, Err(AgentError::Invalid(_))));
}
