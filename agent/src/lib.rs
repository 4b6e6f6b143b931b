//! Capstan's node agent. Outside Kubernetes it runs each replica of a TrainingJob itself,
//! through one of two runtimes:
//! - [`container`]: the Docker Engine API (bollard) against Docker or Podman's compatible
//!   service, containers on the host network so replicas rendezvous over 127.0.0.1;
//! - [`process`]: a host process in its own process group.
//!
//! Both write the replica's stdout and stderr to a log file that outlives the agent, label
//! what they start so a restarted agent can adopt it ([`Agent::list`]), and stop replicas
//! with SIGTERM, a grace period, then SIGKILL.
//! The agent also knows the node's GPUs ([`gpu`]: NVML or simulated), samples them
//! ([`telemetry`]), judges their health ([`health`]), serves them as Prometheus text with
//! dcgm-exporter's names ([`exporter`]) and pushes them to the server ([`push`]).

pub mod attribution;
pub mod container;
pub mod exporter;
pub mod gpu;
pub mod health;
pub mod node;
pub mod process;
pub mod push;
pub mod telemetry;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use capstan_crds::trainingjob::Runtime;

/// Errors of the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No container engine answered at the configured socket.
    #[error("no container engine at {socket}: {message} (start Docker, or `podman system service`, or use runtime: process)")]
    NoEngine {
        /// Socket path tried.
        socket: String,
        /// What failed.
        message: String,
    },
    /// The image is not in the local engine; the agent never pulls implicitly.
    #[error("image {0} is not present in the local container engine; load it first (podman load / docker load)")]
    ImageMissing(String),
    /// The engine refused a request.
    #[error("container engine error: {0}")]
    Engine(String),
    /// The replica's program could not be started.
    #[error("cannot start {program}: {message}")]
    Spawn {
        /// argv[0]
        program: String,
        /// Why.
        message: String,
    },
    /// A file operation failed (log file, state file).
    #[error("{path}: {source}")]
    Io {
        /// File involved.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Invalid input: a replica that cannot run on this runtime (e.g. container runtime
    /// without image), a `--simulate-gpus` spec that does not parse, a fault for a real GPU.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The kubelet's pod-resources API could not be asked, or answered something unreadable.
    #[error("kubelet pod-resources API: {0}")]
    PodResources(String),
}

/// Everything needed to start one replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaSpec {
    /// Namespace of the job.
    pub namespace: String,
    /// Name of the job.
    pub job_name: String,
    /// UID of the job.
    pub job_uid: String,
    /// Replica index (rank).
    pub index: u32,
    /// Gang attempt this replica belongs to.
    pub attempt: u32,
    /// Container or process.
    pub runtime: Runtime,
    /// Image (container runtime).
    pub image: Option<String>,
    /// argv: command then args. Non-empty for the process runtime; for containers an empty
    /// command keeps the image's entrypoint/cmd.
    pub argv: Vec<String>,
    /// Full environment to add (rendezvous variables already included).
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// GPU indices on this node.
    pub gpus: Vec<u32>,
    /// CPU limit in cores (containers: NanoCpus).
    pub cpu: Option<f64>,
    /// Memory limit in bytes (containers: Memory).
    pub memory_bytes: Option<u64>,
    /// File receiving stdout and stderr, created (parent dirs too) or appended to.
    pub log_path: PathBuf,
    /// Host path -> path in the replica (containers: bind mounts; processes: ignored,
    /// the env already points at host paths).
    pub mounts: Vec<(String, String)>,
}

/// What identifies a started replica.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplicaHandle {
    /// Which runtime runs it.
    pub runtime: Runtime,
    /// Container id, or the process id as a decimal string.
    pub id: String,
}

/// A replica found running or exited by [`Agent::list`] (labels of what the agent started).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoundReplica {
    /// Its handle.
    pub handle: ReplicaHandle,
    /// Job UID.
    pub job_uid: String,
    /// Replica index.
    pub index: u32,
    /// Attempt.
    pub attempt: u32,
}

/// What a replica is doing now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observation {
    /// Still running.
    Running,
    /// Exited with this code (128+N for signal N), and a reason in words.
    Exited {
        /// Exit code.
        code: i32,
        /// E.g. "Completed", "Error", "Killed (SIGKILL or out of memory)".
        reason: String,
    },
    /// Gone without a trace (container removed, process vanished with no exit record).
    Missing,
}

/// Agent settings.
#[derive(Debug, Clone, Default)]
pub struct AgentConfig {
    /// Node name reported for replicas (default: the host name).
    pub node_name: String,
    /// Docker Engine API socket. None: $DOCKER_HOST (unix://...), then
    /// /run/podman/podman.sock, then /var/run/docker.sock. The container runtime is
    /// optional: an agent without an engine still runs process replicas.
    pub docker_socket: Option<String>,
    /// Folder for the agent's own state (process records for adoption).
    pub state_dir: PathBuf,
    /// GPU inventory: a `--simulate-gpus` spec, or None for the real GPUs (NVML; none when
    /// the library or driver is absent).
    pub simulate_gpus: Option<String>,
    /// Sampling, push and system-metrics intervals, outbox sizes.
    pub telemetry: telemetry::TelemetryConfig,
}

/// The agent: both runtimes and the GPU inventory of this node.
pub struct Agent {
    config: AgentConfig,
    process: process::ProcessRuntime,
    container: Option<container::ContainerRuntime>,
    telemetry: Arc<telemetry::Telemetry>,
    /// Why there is no container runtime: (socket tried, what failed).
    engine_error: Option<(String, String)>,
}

/// The host name (/proc/sys/kernel/hostname, then /etc/hostname, then $HOSTNAME).
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_string())
}

/// The id of the agent keeping its state in `state_dir` (file `agent-id`, made once).
fn agent_id(state_dir: &std::path::Path) -> Result<String, AgentError> {
    let path = state_dir.join("agent-id");
    let io = |source| AgentError::Io { path: path.display().to_string(), source };
    if let Ok(id) = std::fs::read_to_string(&path) {
        if !id.trim().is_empty() {
            return Ok(id.trim().to_string());
        }
    }
    std::fs::create_dir_all(state_dir).map_err(io)?;
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    let id = format!("{:x}{:06x}", nanos, std::process::id() & 0xff_ffff);
    let tmp = state_dir.join(format!("agent-id.{}.tmp", std::process::id()));
    std::fs::write(&tmp, format!("{id}\n")).map_err(io)?;
    // Two agents starting at once on one state_dir agree on the first id written.
    match std::fs::hard_link(&tmp, &path) {
        Ok(()) => {
            let _ = std::fs::remove_file(&tmp);
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(&tmp);
            Ok(std::fs::read_to_string(&path).map_err(io)?.trim().to_string())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(io(e))
        }
    }
}

impl Agent {
    /// Build the agent. A missing container engine is logged once and leaves the container
    /// runtime off; starting a container replica then fails with [`AgentError::NoEngine`].
    ///
    /// An empty `node_name` becomes the host name; an empty `state_dir` becomes
    /// `$TMPDIR/capstan-agent`. `simulate_gpus` that does not parse is [`AgentError::Invalid`].
    /// The state_dir keeps the agent's id (file `agent-id`), which labels its containers:
    /// [`Agent::list`] finds those of agents with the same state_dir only.
    pub async fn new(config: AgentConfig) -> Result<Agent, AgentError> {
        let mut config = config;
        if config.node_name.trim().is_empty() {
            config.node_name = host_name();
        }
        if config.state_dir.as_os_str().is_empty() {
            config.state_dir = std::env::temp_dir().join("capstan-agent");
        }
        let telemetry = Arc::new(telemetry::Telemetry::open(
            &config.node_name,
            config.simulate_gpus.as_deref(),
            &config.state_dir,
            config.telemetry,
        )?);
        let process = process::ProcessRuntime::new(&config.state_dir)?;
        let id = agent_id(&config.state_dir)?;
        let (container, engine_error) =
            match container::ContainerRuntime::connect(config.docker_socket.as_deref(), &id, &config.node_name).await {
                Ok(runtime) => (Some(runtime), None),
                Err(AgentError::NoEngine { socket, message }) => {
                    tracing::warn!(
                        "no container engine at {socket}: {message}; container replicas are off, process replicas run"
                    );
                    (None, Some((socket, message)))
                }
                Err(e) => {
                    let socket = container::choose_socket(config.docker_socket.as_deref());
                    tracing::warn!(
                        "no container engine at {socket}: {e}; container replicas are off, process replicas run"
                    );
                    (None, Some((socket, e.to_string())))
                }
            };
        Ok(Agent { config, process, container, telemetry, engine_error })
    }

    /// Node name.
    pub fn node_name(&self) -> &str {
        &self.config.node_name
    }

    /// GPUs of this node.
    pub fn gpus(&self) -> &[gpu::GpuInfo] {
        self.telemetry.gpus()
    }

    /// The GPU telemetry (readings, health, `/metrics`, pushes). Its loops run once
    /// [`telemetry::run`] is called with it.
    pub fn telemetry(&self) -> &Arc<telemetry::Telemetry> {
        &self.telemetry
    }

    /// GPUs marked unhealthy, by index, with the reason.
    pub fn unhealthy_gpus(&self) -> std::collections::BTreeMap<u32, health::GpuHealth> {
        self.telemetry.unhealthy()
    }

    /// Whether a container engine answered.
    pub fn has_container_engine(&self) -> bool {
        self.container.is_some()
    }

    /// The folder of the agent's own state.
    pub fn state_dir(&self) -> &std::path::Path {
        &self.config.state_dir
    }

    fn engine(&self) -> Result<&container::ContainerRuntime, AgentError> {
        self.container.as_ref().ok_or_else(|| {
            let (socket, message) = self.engine_error.clone().unwrap_or_else(|| {
                (container::choose_socket(self.config.docker_socket.as_deref()), "not connected".to_string())
            });
            AgentError::NoEngine { socket, message }
        })
    }

    /// Start a replica. Returns once it has been started (not once it is ready).
    ///
    /// Starting the same replica (job UID, index, attempt) again while it runs returns the
    /// running one; an exited one is replaced. A container gets device requests for its
    /// GPUs unless they are simulated.
    pub async fn start(&self, spec: &ReplicaSpec) -> Result<ReplicaHandle, AgentError> {
        let handle = match spec.runtime {
            Runtime::Process => self.process.start(spec).await?,
            Runtime::Container => {
                let engine = self.engine()?;
                // Simulated GPUs cannot be handed to a container: no device requests for them.
                let simulated = |index: &u32| self.gpus().iter().any(|g| g.index == *index && g.simulated);
                if !spec.gpus.is_empty() && spec.gpus.iter().all(simulated) {
                    let spec = ReplicaSpec { gpus: Vec::new(), ..spec.clone() };
                    engine.start(&spec).await?
                } else {
                    engine.start(spec).await?
                }
            }
        };
        self.telemetry.placed(spec, &handle);
        Ok(handle)
    }

    /// What the replica is doing now.
    ///
    /// A container whose engine does not answer (an error other than "no such container")
    /// is reported [`Observation::Running`], with a warning logged: not knowing is not gone.
    /// Without any engine, a container replica is [`Observation::Missing`].
    pub async fn observe(&self, handle: &ReplicaHandle) -> Observation {
        match handle.runtime {
            Runtime::Process => self.process.observe(&handle.id).await,
            Runtime::Container => match &self.container {
                Some(runtime) => runtime.observe(&handle.id).await,
                None => Observation::Missing,
            },
        }
    }

    /// Stop a replica: SIGTERM to it (the whole process group), wait up to `grace`, then
    /// SIGKILL; a container is then removed. Stopping an already exited or missing replica
    /// is not an error. Returns once nothing of it runs any more.
    pub async fn stop(&self, handle: &ReplicaHandle, grace: Duration) -> Result<(), AgentError> {
        match handle.runtime {
            Runtime::Process => self.process.stop(&handle.id, grace).await?,
            Runtime::Container => self.engine()?.stop(&handle.id, grace).await?,
        }
        self.telemetry.released(handle);
        Ok(())
    }

    /// Remove what is left of an exited replica (container, process record).
    /// What still runs of it is killed first.
    pub async fn cleanup(&self, handle: &ReplicaHandle) -> Result<(), AgentError> {
        match handle.runtime {
            Runtime::Process => self.process.cleanup(&handle.id).await?,
            Runtime::Container => self.engine()?.cleanup(&handle.id).await?,
        }
        self.telemetry.released(handle);
        Ok(())
    }

    /// Every replica this agent (or a previous run of it with the same state_dir and
    /// engine) started and has not cleaned up, running or exited.
    pub async fn list(&self) -> Result<Vec<FoundReplica>, AgentError> {
        let mut found = self.process.list().await?;
        if let Some(runtime) = &self.container {
            found.extend(runtime.list().await?);
        }
        Ok(found)
    }
}
