//! The container runtime against a real engine: Podman's Docker-API service from
//! scripts/podman-setup.sh (CAPSTAN_DOCKER_SOCKET). These tests fail, never skip, without it.

mod common;

use std::time::{Duration, Instant};

use capstan_agent::{Agent, AgentError, Observation, ReplicaHandle, Runtime};
use common::{agent, read_log, spec, uid, wait_exit, wait_log};

const T: Duration = Duration::from_secs(60);

/// What the engine says about container `id`: its HTTP status for /containers/ID/json.
async fn inspect_status(id: &str) -> u16 {
    let socket = common::docker_socket();
    let docker = bollard::Docker::connect_with_unix(&socket, 30, bollard::API_DEFAULT_VERSION).unwrap();
    match docker.inspect_container(id, None::<bollard::query_parameters::InspectContainerOptions>).await {
        Ok(_) => 200,
        Err(bollard::errors::Error::DockerResponseServerError { status_code, .. }) => status_code,
        // It exists, in a state bollard's models do not know (Podman's "stopped").
        Err(bollard::errors::Error::JsonSerdeError { .. }) => 200,
        Err(e) => panic!("inspect {id}: {e:?}"),
    }
}

async fn remove(agent: &Agent, handle: &ReplicaHandle) {
    agent.stop(handle, Duration::from_secs(1)).await.unwrap();
    agent.cleanup(handle).await.unwrap();
}

#[tokio::test]
async fn echo_logs_and_exit_zero() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), true).await;
    let s = spec(
        Runtime::Container,
        dir.path(),
        &uid("echo"),
        &["sh", "-c", "echo hello from a container; echo on stderr >&2"],
    );
    let handle = agent.start(&s).await.unwrap();
    assert_eq!(handle.runtime, Runtime::Container);
    let (code, reason) = wait_exit(&agent, &handle, T).await;
    assert_eq!((code, reason.as_str()), (0, "Completed"));
    // observe waits for the log follower of an exited container: the log is complete.
    let log = read_log(&s.log_path);
    assert!(log.contains("hello from a container\n"), "{log:?}");
    assert!(log.contains("on stderr\n"), "{log:?}");
    agent.cleanup(&handle).await.unwrap();
    assert_eq!(agent.observe(&handle).await, Observation::Missing);
    assert_eq!(inspect_status(&handle.id).await, 404);
}

#[tokio::test]
async fn exit_code_seven() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), true).await;
    let s = spec(Runtime::Container, dir.path(), &uid("seven"), &["sh", "-c", "exit 7"]);
    let handle = agent.start(&s).await.unwrap();
    assert_eq!(wait_exit(&agent, &handle, T).await, (7, "Error".to_string()));
    agent.cleanup(&handle).await.unwrap();
}

#[tokio::test]
async fn env_working_dir_and_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), true).await;
    let shared = dir.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("input.txt"), "from the host\n").unwrap();
    let mut s = spec(
        Runtime::Container,
        dir.path(),
        &uid("env"),
        &[
            "sh",
            "-c",
            "echo \"var=$CAPSTAN_TEST_VAR rank=$RANK\"; pwd; cat /data/input.txt; echo written > /data/out.txt; \
             echo mem=$(cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null)",
        ],
    );
    s.memory_bytes = Some(64 << 20);
    s.cpu = Some(0.5);
    s.env = vec![("CAPSTAN_TEST_VAR".into(), "hello world".into()), ("RANK".into(), "2".into())];
    s.working_dir = Some("/tmp".into());
    s.mounts = vec![(shared.display().to_string(), "/data".into())];
    let handle = agent.start(&s).await.unwrap();
    assert_eq!(wait_exit(&agent, &handle, T).await.0, 0, "{}", read_log(&s.log_path));
    let log = read_log(&s.log_path);
    assert!(log.contains("var=hello world rank=2\n"), "{log:?}");
    assert!(log.contains("/tmp\n"), "{log:?}");
    assert!(log.contains("from the host\n"), "{log:?}");
    assert_eq!(std::fs::read_to_string(shared.join("out.txt")).unwrap(), "written\n");
    assert!(log.contains(&format!("mem={}\n", 64 << 20)), "memory limit: {log:?}");
    agent.cleanup(&handle).await.unwrap();
}

#[tokio::test]
async fn rendezvous_over_host_network() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), true).await;
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let job = uid("rdzv");
    // Rank 0 listens; its handler logs what it read (stderr) and answers. (busybox nc quits
    // as soon as its own input ends, hence -e for the server and a held-open input for the
    // client.)
    let server = spec(
        Runtime::Container,
        dir.path(),
        &job,
        &[
            "sh",
            "-c",
            &format!("nc -l -p {port} -e sh -c 'read line; echo \"rank0 got $line\" >&2; echo \"ack $line\"'"),
        ],
    );
    let mut client = spec(
        Runtime::Container,
        dir.path(),
        &job,
        &[
            "sh",
            "-c",
            &format!(
                "for i in $(seq 1 100); do (echo hello-from-rank-1; sleep 1) | nc 127.0.0.1 {port} 2>/dev/null && exit 0; sleep 0.2; done; exit 1"
            ),
        ],
    );
    client.index = 1;
    client.log_path = dir.path().join("logs").join("client.log");
    let hs = agent.start(&server).await.unwrap();
    let hc = agent.start(&client).await.unwrap();
    assert_eq!(wait_exit(&agent, &hc, T).await.0, 0, "client: {}", read_log(&client.log_path));
    assert_eq!(wait_exit(&agent, &hs, T).await.0, 0, "server: {}", read_log(&server.log_path));
    let (server_log, client_log) = (read_log(&server.log_path), read_log(&client.log_path));
    assert!(server_log.contains("rank0 got hello-from-rank-1"), "{server_log:?}");
    assert!(client_log.contains("ack hello-from-rank-1"), "{client_log:?}");
    agent.cleanup(&hs).await.unwrap();
    agent.cleanup(&hc).await.unwrap();
}

#[tokio::test]
async fn stop_removes_a_running_container() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), true).await;
    let s = spec(Runtime::Container, dir.path(), &uid("stop"), &["sleep", "1000"]);
    let handle = agent.start(&s).await.unwrap();
    assert_eq!(agent.observe(&handle).await, Observation::Running);
    let grace = Duration::from_secs(2);
    let started = Instant::now();
    // sleep is PID 1 in its container and ignores SIGTERM: this takes grace, then SIGKILL.
    agent.stop(&handle, grace).await.unwrap();
    let took = started.elapsed();
    assert!(took < grace + Duration::from_secs(10), "stop took {took:?}");
    assert_eq!(agent.observe(&handle).await, Observation::Missing);
    agent.cleanup(&handle).await.unwrap();
    assert_eq!(inspect_status(&handle.id).await, 404);
    // Stopping what is gone is fine.
    agent.stop(&handle, grace).await.unwrap();
}

#[tokio::test]
async fn stop_lets_a_graceful_program_exit() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), true).await;
    let s = spec(
        Runtime::Container,
        dir.path(),
        &uid("graceful"),
        &["sh", "-c", "trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 0.1; done"],
    );
    let handle = agent.start(&s).await.unwrap();
    wait_log(&s.log_path, "ready", T).await;
    let started = Instant::now();
    agent.stop(&handle, Duration::from_secs(20)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(read_log(&s.log_path).contains("got TERM"), "{}", read_log(&s.log_path));
}

#[tokio::test]
async fn list_finds_labelled_containers_and_adopts_logs() {
    let dir = tempfile::tempdir().unwrap();
    let job = uid("list");
    let mut s = spec(Runtime::Container, dir.path(), &job, &["sh", "-c", "echo one; sleep 3; echo two"]);
    s.index = 2;
    s.attempt = 1;
    // An earlier attempt's log stays in front.
    std::fs::create_dir_all(s.log_path.parent().unwrap()).unwrap();
    std::fs::write(&s.log_path, "earlier attempt\n").unwrap();

    let handle = {
        let first = agent(dir.path(), true).await;
        let handle = first.start(&s).await.unwrap();
        wait_log(&s.log_path, "one", T).await;
        handle
        // the first agent goes away here, and its log follower with it
    };
    let second = agent(dir.path(), true).await;
    let found = second.list().await.unwrap();
    let mine: Vec<_> = found.iter().filter(|f| f.job_uid == job).collect();
    assert_eq!(mine.len(), 1, "{found:?}");
    assert_eq!((mine[0].index, mine[0].attempt), (2, 1));
    assert_eq!(mine[0].handle, handle);
    assert_eq!(second.observe(&handle).await, Observation::Running);
    assert_eq!(wait_exit(&second, &handle, T).await.0, 0);
    assert_eq!(read_log(&s.log_path), "earlier attempt\none\ntwo\n");
    second.cleanup(&handle).await.unwrap();
    assert!(second.list().await.unwrap().iter().all(|f| f.job_uid != job));
}

#[tokio::test]
async fn missing_image_is_never_pulled() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), true).await;
    let mut s = spec(Runtime::Container, dir.path(), &uid("noimage"), &["true"]);
    let image = "localhost/capstan-no-such-image:1";
    s.image = Some(image.into());
    let started = Instant::now();
    match agent.start(&s).await {
        Err(AgentError::ImageMissing(i)) => assert_eq!(i, image),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // Nothing was created, and the image did not appear.
    let name = capstan_agent::container::container_name(&s);
    assert_eq!(inspect_status(&name).await, 404);
    let socket = common::docker_socket();
    let docker = bollard::Docker::connect_with_unix(&socket, 30, bollard::API_DEFAULT_VERSION).unwrap();
    assert!(docker.inspect_image(image).await.is_err());

    s.image = None;
    assert!(matches!(agent.start(&s).await, Err(AgentError::Invalid(_))));
}

#[tokio::test]
async fn missing_program_is_a_spawn_error() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), true).await;
    let s = spec(Runtime::Container, dir.path(), &uid("noprog"), &["capstan-no-such-program"]);
    match agent.start(&s).await {
        Err(AgentError::Spawn { program, .. }) => assert_eq!(program, "capstan-no-such-program"),
        Ok(handle) => {
            // Some engines start the container and let it exit 127.
            let (code, _) = wait_exit(&agent, &handle, T).await;
            assert_ne!(code, 0);
            remove(&agent, &handle).await;
        }
        Err(other) => panic!("{other:?}"),
    }
    let name = capstan_agent::container::container_name(&s);
    assert_eq!(inspect_status(&name).await, 404, "a container that failed to start is removed");
}
