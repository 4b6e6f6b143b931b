//! The container runtime: the Docker Engine API (bollard) against Docker or Podman's
//! compatible service (`podman system service`).
//!
//! Containers run on the host network (replicas rendezvous over 127.0.0.1), carry
//! `capstan.dev/*` labels so that a restarted agent finds them ([`ContainerRuntime::list`]),
//! and are never pulled: a missing image is [`AgentError::ImageMissing`].
//!
//! A background task per container follows its logs (stdout and stderr, from the beginning)
//! into the replica's log file. The file may hold earlier attempts' logs: the length it had
//! when the container was created is kept in the label `capstan.dev/log-offset`, and each
//! (re)start of the follower truncates the file to that length before streaming the whole
//! log again, so that following an adopted container again writes the same bytes.

use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::process::exit_reason;
use crate::{AgentError, FoundReplica, Observation, ReplicaHandle, ReplicaSpec, Runtime};

/// Label marking what the agent created.
pub const LABEL_MANAGED: &str = "capstan.dev/managed";
/// Label: job UID.
pub const LABEL_JOB_UID: &str = "capstan.dev/job-uid";
/// Label: job name.
pub const LABEL_JOB_NAME: &str = "capstan.dev/job-name";
/// Label: namespace.
pub const LABEL_NAMESPACE: &str = "capstan.dev/namespace";
/// Label: replica index.
pub const LABEL_INDEX: &str = "capstan.dev/replica-index";
/// Label: attempt.
pub const LABEL_ATTEMPT: &str = "capstan.dev/attempt";
/// Label: the replica's log file on the host.
pub const LABEL_LOG_PATH: &str = "capstan.dev/log-path";
/// Label: length of the log file when the container was created.
pub const LABEL_LOG_OFFSET: &str = "capstan.dev/log-offset";
/// Label: the agent that started it (the id kept in its state_dir), so that
/// [`ContainerRuntime::list`] returns its own containers only, not those of another agent
/// (or test) sharing the engine.
pub const LABEL_AGENT_ID: &str = "capstan.dev/agent-id";
/// Label: node name of the agent that started it.
pub const LABEL_NODE: &str = "capstan.dev/node";

/// An `argv[0]` that keeps the image's entrypoint: the rest of argv becomes the image's
/// command (its `CMD`, the arguments of the entrypoint), as Kubernetes' `args` without
/// `command` do. An argv of this alone keeps both the entrypoint and the command.
pub const KEEP_ENTRYPOINT: &str = "";

/// Sockets tried, in order, when neither the configuration nor $DOCKER_HOST names one.
pub const DEFAULT_SOCKETS: [&str; 2] = ["/run/podman/podman.sock", "/var/run/docker.sock"];

/// How long to wait for the engine to answer the first ping.
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`ContainerRuntime::stop`] waits after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long [`ContainerRuntime::observe`] waits for the log follower of an exited container.
const LOG_DRAIN_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(100);

/// The socket to use: `configured`, else $DOCKER_HOST (unix://...), else the first of
/// [`DEFAULT_SOCKETS`] that exists (the last one when none does).
pub fn choose_socket(configured: Option<&str>) -> String {
    if let Some(socket) = configured.filter(|s| !s.is_empty()) {
        return socket.strip_prefix("unix://").unwrap_or(socket).to_string();
    }
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        if let Some(path) = host.strip_prefix("unix://") {
            return path.to_string();
        }
        if !host.is_empty() {
            tracing::warn!("ignoring DOCKER_HOST={host}: only unix:// sockets are supported");
        }
    }
    DEFAULT_SOCKETS
        .iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or(&DEFAULT_SOCKETS[DEFAULT_SOCKETS.len() - 1])
        .to_string()
}

fn status_code(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn engine(e: BollardError) -> AgentError {
    AgentError::Engine(match e {
        BollardError::DockerResponseServerError { status_code, message } => {
            format!("{message} (HTTP {status_code})")
        }
        other => other.to_string(),
    })
}

fn io_err(path: &Path, source: std::io::Error) -> AgentError {
    AgentError::Io { path: path.display().to_string(), source }
}

/// Characters Docker accepts in a container name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn sanitize_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' }).collect()
}

/// `capstan-<job_name>-<index>-<attempt>-<first 8 characters of the uid>`, sanitized.
pub fn container_name(spec: &ReplicaSpec) -> String {
    let short_uid: String = spec.job_uid.chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect();
    let job: String = spec.job_name.chars().take(100).collect();
    sanitize_name(&format!("capstan-{job}-{}-{}-{short_uid}", spec.index, spec.attempt))
}

/// The container runtime.
pub struct ContainerRuntime {
    docker: Docker,
    socket: String,
    raw: RawClient,
    agent_id: String,
    node: String,
    /// Log followers: container id -> (done, task).
    followers: Arc<Mutex<HashMap<String, Follower>>>,
}

struct Follower {
    done: watch::Receiver<bool>,
    task: tokio::task::AbortHandle,
}

impl Drop for ContainerRuntime {
    fn drop(&mut self) {
        // A later agent re-follows what still runs (list), from the start of the log.
        for follower in self.followers.lock().unwrap().values() {
            follower.task.abort();
        }
    }
}

impl ContainerRuntime {
    /// Connect to the engine at [`choose_socket`]`(socket)` and ping it. What it starts is
    /// labelled with `agent_id` and `node`; [`list`](Self::list) returns what carries
    /// `agent_id`.
    pub async fn connect(socket: Option<&str>, agent_id: &str, node: &str) -> Result<ContainerRuntime, AgentError> {
        let socket = choose_socket(socket);
        let no_engine = |message: String| AgentError::NoEngine { socket: socket.clone(), message };
        let docker =
            Docker::connect_with_unix(&socket, 120, API_DEFAULT_VERSION).map_err(|e| no_engine(e.to_string()))?;
        let docker = match tokio::time::timeout(PING_TIMEOUT, docker.negotiate_version()).await {
            Ok(Ok(docker)) => docker,
            Ok(Err(e)) => return Err(no_engine(e.to_string())),
            Err(_) => return Err(no_engine(format!("no answer within {PING_TIMEOUT:?}"))),
        };
        match tokio::time::timeout(PING_TIMEOUT, docker.ping()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(no_engine(e.to_string())),
            Err(_) => return Err(no_engine(format!("no answer within {PING_TIMEOUT:?}"))),
        }
        let version = docker.client_version();
        let raw = RawClient {
            socket: socket.clone(),
            prefix: format!("/v{}.{}", version.major_version, version.minor_version),
        };
        Ok(ContainerRuntime {
            docker,
            socket,
            raw,
            agent_id: agent_id.to_string(),
            node: node.to_string(),
            followers: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The socket in use.
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// The bollard client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Start a replica (see [`Agent::start`](crate::Agent::start)).
    pub async fn start(&self, spec: &ReplicaSpec) -> Result<ReplicaHandle, AgentError> {
        let image = spec.image.as_deref().filter(|i| !i.trim().is_empty()).ok_or_else(|| {
            AgentError::Invalid(format!(
                "{}/{} replica {}: the container runtime needs an image",
                spec.namespace, spec.job_name, spec.index
            ))
        })?;
        match self.docker.inspect_image(image).await {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(404) => return Err(AgentError::ImageMissing(image.to_string())),
            Err(e) => return Err(engine(e)),
        }

        let name = container_name(spec);
        // The same replica again (e.g. after a failed start): reuse it while it runs.
        if let Some(existing) = self.raw.inspect(&name).await? {
            if existing.running {
                self.follow_from_labels(&existing.id, &existing.labels);
                return Ok(ReplicaHandle { runtime: Runtime::Container, id: existing.id });
            }
            self.remove(&existing.id).await?;
        }

        // The log file: created (parent dirs too); this container's logs start at its end.
        if let Some(parent) = spec.log_path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_path)
            .map_err(|e| io_err(&spec.log_path, e))?;
        let log_offset = log.metadata().map_err(|e| io_err(&spec.log_path, e))?.len();
        drop(log);
        let log_path = std::fs::canonicalize(&spec.log_path).unwrap_or(spec.log_path.clone());

        let labels: HashMap<String, String> = [
            (LABEL_MANAGED, "true".to_string()),
            (LABEL_JOB_UID, spec.job_uid.clone()),
            (LABEL_JOB_NAME, spec.job_name.clone()),
            (LABEL_NAMESPACE, spec.namespace.clone()),
            (LABEL_INDEX, spec.index.to_string()),
            (LABEL_ATTEMPT, spec.attempt.to_string()),
            (LABEL_LOG_PATH, log_path.display().to_string()),
            (LABEL_LOG_OFFSET, log_offset.to_string()),
            (LABEL_AGENT_ID, self.agent_id.clone()),
            (LABEL_NODE, self.node.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();

        let (entrypoint, cmd) = match spec.argv.split_first() {
            Some((program, args)) if program == KEEP_ENTRYPOINT => (None, (!args.is_empty()).then(|| args.to_vec())),
            Some((program, args)) => (Some(vec![program.clone()]), Some(args.to_vec())),
            None => (None, None),
        };
        let device_requests = (!spec.gpus.is_empty()).then(|| {
            vec![DeviceRequest {
                driver: Some("nvidia".to_string()),
                device_ids: Some(spec.gpus.iter().map(|g| g.to_string()).collect()),
                capabilities: Some(vec![vec!["gpu".to_string()]]),
                ..Default::default()
            }]
        });
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint,
            cmd,
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: spec.working_dir.clone(),
            labels: Some(labels.clone()),
            tty: Some(false),
            open_stdin: Some(false),
            attach_stdin: Some(false),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            host_config: Some(HostConfig {
                network_mode: Some("host".to_string()),
                memory: spec.memory_bytes.map(|m| m.min(i64::MAX as u64) as i64),
                nano_cpus: spec.cpu.filter(|c| *c > 0.0).map(|c| (c * 1e9).round() as i64),
                binds: (!spec.mounts.is_empty())
                    .then(|| spec.mounts.iter().map(|(host, inside)| format!("{host}:{inside}")).collect()),
                device_requests,
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(Some(CreateContainerOptionsBuilder::default().name(&name).build()), body)
            .await
            .map_err(engine)?;
        let id = created.id;
        if let Err(e) = self.docker.start_container(&id, None).await {
            let _ = self.remove(&id).await;
            return Err(AgentError::Spawn {
                program: spec.argv.first().cloned().unwrap_or_else(|| image.to_string()),
                message: match e {
                    BollardError::DockerResponseServerError { message, .. } => message,
                    other => other.to_string(),
                },
            });
        }
        self.follow_from_labels(&id, &labels);
        tracing::debug!(id, name, "started container replica");
        Ok(ReplicaHandle { runtime: Runtime::Container, id })
    }

    /// Start the log follower of container `id` unless one is running.
    fn follow_from_labels(&self, id: &str, labels: &HashMap<String, String>) {
        let Some(path) = labels.get(LABEL_LOG_PATH).filter(|p| !p.is_empty()) else { return };
        let offset = labels.get(LABEL_LOG_OFFSET).and_then(|o| o.parse().ok()).unwrap_or(0);
        let mut followers = self.followers.lock().unwrap();
        if followers.get(id).is_some_and(|f| !*f.done.borrow()) {
            return;
        }
        let (tx, done) = watch::channel(false);
        let docker = self.docker.clone();
        let raw = self.raw.clone();
        let path = PathBuf::from(path);
        let task = {
            let id = id.to_string();
            tokio::spawn(async move {
                follow_logs(&docker, &raw, &id, &path, offset).await;
                let _ = tx.send(true);
            })
        };
        followers.insert(id.to_string(), Follower { done, task: task.abort_handle() });
    }

    /// Wait (bounded) for the log follower of `id` to have written everything.
    async fn drain_logs(&self, id: &str) {
        let follower = self.followers.lock().unwrap().get(id).map(|f| f.done.clone());
        if let Some(mut done) = follower {
            let _ = tokio::time::timeout(LOG_DRAIN_WAIT, done.wait_for(|d| *d)).await;
        }
    }

    /// What container `id` does now.
    pub async fn observe(&self, id: &str) -> Observation {
        let inspect = match self.raw.inspect(id).await {
            Ok(Some(inspect)) => inspect,
            Ok(None) => return Observation::Missing,
            Err(e) => {
                // Not knowing is not "gone": the next observation will tell.
                tracing::warn!("inspecting container {id}: {e}");
                return Observation::Running;
            }
        };
        if !inspect.exited() {
            return Observation::Running;
        }
        let code = inspect.exit_code;
        self.drain_logs(id).await;
        let reason = if inspect.oom_killed { "OOMKilled".to_string() } else { exit_reason(code) };
        Observation::Exited { code, reason }
    }

    async fn running(&self, id: &str) -> Result<bool, AgentError> {
        Ok(self.raw.inspect(id).await?.is_some_and(|i| !i.exited()))
    }

    async fn kill(&self, id: &str, signal: &str) -> Result<(), AgentError> {
        let options = KillContainerOptionsBuilder::default().signal(signal).build();
        match self.docker.kill_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // Gone, or not running any more.
            Err(e) if matches!(status_code(&e), Some(404 | 409)) => Ok(()),
            Err(e) => {
                if self.running(id).await? {
                    Err(engine(e))
                } else {
                    Ok(())
                }
            }
        }
    }

    async fn remove(&self, id: &str) -> Result<(), AgentError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(engine(e)),
        }
    }

    /// SIGTERM, up to `grace`, SIGKILL, then remove the container.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<(), AgentError> {
        if self.running(id).await? {
            self.kill(id, "SIGTERM").await?;
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && self.running(id).await? {
                tokio::time::sleep(POLL).await;
            }
            if self.running(id).await? {
                tracing::info!(id, "container still running after {grace:?}: SIGKILL");
                self.kill(id, "SIGKILL").await?;
                let deadline = Instant::now() + KILL_WAIT;
                while self.running(id).await? {
                    if Instant::now() >= deadline {
                        return Err(AgentError::Engine(format!(
                            "container {id} still runs {KILL_WAIT:?} after SIGKILL"
                        )));
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
        }
        self.drain_logs(id).await;
        self.remove(id).await
    }

    /// Remove the container (force).
    pub async fn cleanup(&self, id: &str) -> Result<(), AgentError> {
        self.remove(id).await?;
        let mut followers = self.followers.lock().unwrap();
        if followers.get(id).is_some_and(|f| *f.done.borrow()) {
            followers.remove(id);
        }
        Ok(())
    }

    /// Every container this agent started (labels `capstan.dev/managed=true` and its
    /// `capstan.dev/agent-id`), running or exited; restarts the log follower of each running
    /// one.
    pub async fn list(&self) -> Result<Vec<FoundReplica>, AgentError> {
        let filters = serde_json::json!({
            "label": [format!("{LABEL_MANAGED}=true"), format!("{LABEL_AGENT_ID}={}", self.agent_id)]
        });
        let path = format!("/containers/json?all=true&filters={}", percent_encode(&filters.to_string()));
        let (status, body) = self.raw.get(&path).await.map_err(AgentError::Engine)?;
        if status != 200 {
            return Err(AgentError::Engine(format!("listing containers: HTTP {status}: {body}")));
        }
        let mut found = Vec::new();
        for c in body.as_array().into_iter().flatten() {
            let Some(id) = c.get("Id").and_then(Value::as_str).map(str::to_string) else { continue };
            let labels = labels_of(c.get("Labels"));
            if labels.get(LABEL_MANAGED).map(String::as_str) != Some("true")
                || labels.get(LABEL_AGENT_ID) != Some(&self.agent_id)
            {
                continue;
            }
            let (Some(job_uid), Some(index), Some(attempt)) = (
                labels.get(LABEL_JOB_UID).cloned(),
                labels.get(LABEL_INDEX).and_then(|v| v.parse().ok()),
                labels.get(LABEL_ATTEMPT).and_then(|v| v.parse().ok()),
            ) else {
                tracing::warn!("container {id} is labelled {LABEL_MANAGED}=true but lacks job labels");
                continue;
            };
            if c.get("State").and_then(Value::as_str) == Some("running") {
                self.follow_from_labels(&id, &labels);
            }
            found.push(FoundReplica {
                handle: ReplicaHandle { runtime: Runtime::Container, id },
                job_uid,
                index,
                attempt,
            });
        }
        found.sort_by(|a, b| (&a.job_uid, a.index, a.attempt).cmp(&(&b.job_uid, b.index, b.attempt)));
        Ok(found)
    }
}

/// Follow the logs of container `id` into `path` from `offset` on, until the container has
/// stopped (or is gone).
async fn follow_logs(docker: &Docker, raw: &RawClient, id: &str, path: &Path, offset: u64) {
    loop {
        if let Err(e) = follow_once(docker, id, path, offset, true).await {
            tracing::debug!("following the logs of container {id} into {}: {e}", path.display());
        }
        match raw.inspect(id).await {
            Ok(Some(inspect)) if !inspect.exited() => {
                // The stream broke while the container runs: stream everything again.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(Some(_)) => {
                // A follow stream can end before the last lines of a container that just
                // exited: write the whole, final log once more.
                for attempt in 0..3 {
                    match follow_once(docker, id, path, offset, false).await {
                        Ok(()) => return,
                        Err(e) if attempt == 2 => {
                            tracing::warn!("reading the logs of container {id} into {}: {e}", path.display())
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
                    }
                }
                return;
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("inspecting container {id}: {e}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

async fn follow_once(docker: &Docker, id: &str, path: &Path, offset: u64, follow: bool) -> Result<(), String> {
    let mut file =
        std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let start = offset.min(len);
    file.set_len(start).map_err(|e| e.to_string())?;
    file.seek(SeekFrom::Start(start)).map_err(|e| e.to_string())?;

    let options = LogsOptionsBuilder::default().follow(follow).stdout(true).stderr(true).build();
    let mut stream = docker.logs(id, Some(options));
    while let Some(frame) = stream.next().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let bytes = match &frame {
            LogOutput::StdOut { message } | LogOutput::StdErr { message } => message,
            // Replicas have no TTY, so their logs come multiplexed: an unframed body is the
            // engine's error (Podman answers 200, then writes its error as JSON).
            LogOutput::Console { message } => {
                if let Ok(error) = serde_json::from_slice::<Value>(message) {
                    if error.get("message").is_some() {
                        return Err(format!("engine: {}", error["message"]));
                    }
                }
                message
            }
            LogOutput::StdIn { .. } => continue,
        };
        // Small synchronous writes to a local file: cheap enough on the runtime's thread.
        file.write_all(bytes).map_err(|e| e.to_string())?;
    }
    file.flush().map_err(|e| e.to_string())?;
    Ok(())
}

/// What an inspect tells.
#[derive(Debug, Clone)]
struct Inspected {
    id: String,
    status: String,
    running: bool,
    exit_code: i32,
    oom_killed: bool,
    labels: HashMap<String, String>,
}

impl Inspected {
    /// Whether it has run and stopped. Podman has states of its own ("stopped" before its
    /// cleanup, "configured"), which is why inspect is read as plain JSON here.
    fn exited(&self) -> bool {
        match self.status.as_str() {
            "exited" | "stopped" | "dead" => true,
            "created" | "configured" | "initialized" | "running" | "paused" | "restarting" | "stopping" => false,
            _ => !self.running,
        }
    }
}

fn labels_of(value: Option<&Value>) -> HashMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Plain JSON GETs over the engine's socket, for inspect and list: bollard's typed models
/// reject container states that only Podman has ("stopped", "configured").
#[derive(Debug, Clone)]
struct RawClient {
    socket: String,
    /// "/v1.41": the negotiated API version.
    prefix: String,
}

impl RawClient {
    /// GET `path` (with its query): the status code and the JSON body (Null when empty).
    async fn get(&self, path: &str) -> Result<(u16, Value), String> {
        let exchange = async {
            let mut stream =
                tokio::net::UnixStream::connect(&self.socket).await.map_err(|e| format!("{}: {e}", self.socket))?;
            let request = format!(
                "GET {}{path} HTTP/1.1\r\nHost: docker\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
                self.prefix
            );
            stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(response)
        };
        let response = tokio::time::timeout(Duration::from_secs(60), exchange)
            .await
            .map_err(|_| format!("GET {path}: no answer within 60 s"))??;
        parse_response(&response).map_err(|e| format!("GET {path}: {e}"))
    }

    /// Inspect container `id`: None when there is no such container.
    async fn inspect(&self, id: &str) -> Result<Option<Inspected>, AgentError> {
        let (status, body) =
            self.get(&format!("/containers/{}/json", percent_encode(id))).await.map_err(AgentError::Engine)?;
        match status {
            200 => {}
            404 => return Ok(None),
            _ => return Err(AgentError::Engine(format!("inspecting container {id}: HTTP {status}: {body}"))),
        }
        let state = &body["State"];
        Ok(Some(Inspected {
            id: body["Id"].as_str().unwrap_or(id).to_string(),
            status: state["Status"].as_str().unwrap_or_default().to_ascii_lowercase(),
            running: state["Running"].as_bool().unwrap_or(false),
            exit_code: state["ExitCode"].as_i64().unwrap_or(0) as i32,
            oom_killed: state["OOMKilled"].as_bool().unwrap_or(false),
            labels: labels_of(body["Config"].get("Labels")),
        }))
    }
}

/// Status and JSON body of an HTTP/1.1 response read to its end.
fn parse_response(response: &[u8]) -> Result<(u16, Value), String> {
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").ok_or("incomplete HTTP response")?;
    let head = String::from_utf8_lossy(&response[..split]);
    let mut body = response[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("bad HTTP status line")?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((status, Value::Null));
    }
    let value = serde_json::from_slice(&body).unwrap_or_else(|_| {
        // Errors may come as plain text.
        Value::String(String::from_utf8_lossy(&body).trim().to_string())
    });
    Ok((status, value))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").ok_or("bad chunked body")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err("truncated chunk".to_string());
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        let plain =
            b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\r\n{\"message\":\"no such container\"}";
        let (status, body) = parse_response(plain).unwrap();
        assert_eq!(status, 404);
        assert_eq!(body["message"], "no such container");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n[1,2\r\n2\r\n,3\r\n1\r\n]\r\n0\r\n\r\n";
        let (status, body) = parse_response(chunked).unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, serde_json::json!([1, 2, 3]));
        assert_eq!(parse_response(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap(), (204, Value::Null));
    }

    #[test]
    fn names_and_encoding() {
        assert_eq!(percent_encode("a=b c/{}"), "a%3Db%20c%2F%7B%7D");
        let spec = ReplicaSpec {
            namespace: "ns".into(),
            job_name: "My Job/x".into(),
            job_uid: "1234abcd-ef56-7890".into(),
            index: 3,
            attempt: 2,
            runtime: Runtime::Container,
            image: None,
            argv: vec![],
            env: vec![],
            working_dir: None,
            gpus: vec![],
            cpu: None,
            memory_bytes: None,
            log_path: PathBuf::from("/tmp/x.log"),
            mounts: vec![],
        };
        assert_eq!(container_name(&spec), "capstan-My-Job-x-3-2-1234abcd");
    }
}
