//! Capstan's node agent. Outside Kubernetes it runs each replica of a TrainingJob itself,
//! through one of two runtimes:
//! - [`container`]: the Docker Engine API (bollard) against Docker or Podman's compatible
//!   service, containers on the host network so replicas rendezvous over 127.0.0.1;
//! - [`process`]: a host process in its own process group.
//!
//! Both write the replica's stdout and stderr to a log file that outlives the agent, label
//! what they start so a restarted agent can adopt it ([`Agent::list`]), and stop replicas
//! with SIGTERM, a grace period, then SIGKILL.
//! The agent also knows the node's GPUs ([`gpu`]).

pub mod container;
pub mod gpu;
pub mod process;

use std::path::PathBuf;
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
    /// The spec cannot run on this runtime (e.g. container runtime without image).
    #[error("invalid replica: {0}")]
    Invalid(String),
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
    /// GPU inventory: `--simulate-gpus` spec or empty for none.
    pub simulate_gpus: Option<String>,
}

/// The agent: both runtimes and the GPU inventory of this node.
pub struct Agent {
    config: AgentConfig,
    process: process::ProcessRuntime,
    container: Option<container::ContainerRuntime>,
    gpus: Vec<gpu::GpuInfo>,
}

impl Agent {
    /// Build the agent. A missing container engine is logged once and leaves the container
    /// runtime off; starting a container replica then fails with [`AgentError::NoEngine`].
    pub async fn new(config: AgentConfig) -> Result<Agent, AgentError> {
        todo!("{config:?}")
    }

    /// Node name.
    pub fn node_name(&self) -> &str {
        &self.config.node_name
    }

    /// GPUs of this node.
    pub fn gpus(&self) -> &[gpu::GpuInfo] {
        &self.gpus
    }

    /// Whether a container engine answered.
    pub fn has_container_engine(&self) -> bool {
        self.container.is_some()
    }

    /// Start a replica. Returns once it has been started (not once it is ready).
    pub async fn start(&self, spec: &ReplicaSpec) -> Result<ReplicaHandle, AgentError> {
        let _ = (&self.process, spec);
        todo!()
    }

    /// What the replica is doing now.
    pub async fn observe(&self, handle: &ReplicaHandle) -> Observation {
        todo!("{handle:?}")
    }

    /// Stop a replica: SIGTERM to it (the whole process group), wait up to `grace`, then
    /// SIGKILL; a container is then removed. Stopping an already exited or missing replica
    /// is not an error. Returns once nothing of it runs any more.
    pub async fn stop(&self, handle: &ReplicaHandle, grace: Duration) -> Result<(), AgentError> {
        todo!("{handle:?}{grace:?}")
    }

    /// Remove what is left of an exited replica (container, process record).
    pub async fn cleanup(&self, handle: &ReplicaHandle) -> Result<(), AgentError> {
        todo!("{handle:?}")
    }

    /// Every replica this agent (or a previous run of it with the same state_dir and
    /// engine) started and has not cleaned up, running or exited.
    pub async fn list(&self) -> Result<Vec<FoundReplica>, AgentError> {
        todo!()
    }
}
