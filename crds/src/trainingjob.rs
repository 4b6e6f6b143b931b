//! The TrainingJob resource: a gang of replicas that run one distributed training program.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::{Condition, EnvVar};

/// Environment variable names Capstan sets for every replica. A manifest that sets one of
/// them in `spec.env` is rejected: the rendezvous would silently break otherwise.
pub const RESERVED_ENV: &[&str] = &[
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "NODE_RANK",
    "LOCAL_WORLD_SIZE",
    "PET_NNODES",
    "PET_NPROC_PER_NODE",
    "PET_NODE_RANK",
    "PET_MASTER_ADDR",
    "PET_MASTER_PORT",
    "CUDA_VISIBLE_DEVICES",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_RUN_ID",
    "CAPSTAN_JOB_NAME",
    "CAPSTAN_REPLICA_INDEX",
    "CAPSTAN_HOSTFILE",
];

/// The port torchrun-style launchers rendezvous on when the job does not choose one.
pub const DEFAULT_MASTER_PORT: u16 = 23456;

/// A distributed training job: `replicas` copies of one program (a gang) that start together,
/// find each other through the injected rendezvous environment, and succeed or fail together.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "capstan.dev",
    version = "v1alpha1",
    kind = "TrainingJob",
    plural = "trainingjobs",
    namespaced,
    shortname = "tj",
    category = "capstan",
    category = "all",
    status = "TrainingJobStatus",
    printcolumn(name = "Queue", type_ = "string", json_path = ".spec.queue"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(
        name = "GPUs",
        type_ = "integer",
        json_path = ".spec.gpusPerReplica",
        description = "GPUs per replica"
    ),
    printcolumn(name = "Restarts", type_ = "integer", json_path = ".status.restarts"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!(has(self.priority) && has(self.priorityClassName))").message("set priority or priorityClassName, not both").field_path(".priority"))]
#[x_kube(validation = Rule::new("has(self.image) || (has(self.runtime) && self.runtime == 'process')").message("image is required unless runtime is process").field_path(".image"))]
#[x_kube(validation = Rule::new("!has(self.nprocPerReplica) || !has(self.gpusPerReplica) || self.gpusPerReplica == 0 || self.nprocPerReplica <= self.gpusPerReplica").message("nprocPerReplica cannot exceed gpusPerReplica").field_path(".nprocPerReplica"))]
pub struct TrainingJobSpec {
    /// Container image each replica runs (runtime container, and always on Kubernetes).
    /// Images are never pulled implicitly by the standalone agent: load them into the local
    /// engine first (`podman load`, `docker load`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// The program to run, as an argv list (the container's entrypoint override). With the
    /// process runtime, the first element is looked up on PATH.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,

    /// Arguments appended to `command`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,

    /// Extra environment for every replica. The rendezvous names (MASTER_ADDR, RANK, PET_*,
    /// CUDA_VISIBLE_DEVICES, MLFLOW_RUN_ID, ...) are reserved and rejected here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.all(e, !(e.name in ['MASTER_ADDR','MASTER_PORT','WORLD_SIZE','RANK','NODE_RANK','LOCAL_WORLD_SIZE','PET_NNODES','PET_NPROC_PER_NODE','PET_NODE_RANK','PET_MASTER_ADDR','PET_MASTER_PORT','CUDA_VISIBLE_DEVICES','MLFLOW_TRACKING_URI','MLFLOW_RUN_ID','CAPSTAN_JOB_NAME','CAPSTAN_REPLICA_INDEX','CAPSTAN_HOSTFILE']))").message("env sets a reserved name: Capstan sets the rendezvous variables itself"))]
    pub env: Vec<EnvVar>,

    /// Working directory of each replica (inside the container, or on the host for the
    /// process runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,

    /// Number of replicas (nodes) in the gang. All start together or none does.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 10000))]
    pub replicas: u32,

    /// GPUs each replica needs. A replica asking for 8 takes a whole 8-GPU node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 64))]
    pub gpus_per_replica: Option<u32>,

    /// GPU product the job must run on (for example `nvidia-h100-80gb-hbm3`, as in the
    /// `nvidia.com/gpu.product` node label). Empty means any product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_product: Option<String>,

    /// CPU and memory each replica requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ReplicaResources>,

    /// How each replica starts its worker processes. `torchrun` gets the PET_* variables;
    /// `deepspeed` and `mpi` also get a hostfile ("host slots=N" per replica) and their
    /// launcher (replica 0) starts only once every other replica is running.
    #[serde(default)]
    pub launcher: Launcher,

    /// Worker processes per replica (LOCAL_WORLD_SIZE, PET_NPROC_PER_NODE). Unset means one
    /// per GPU, or one when the replica has no GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub nproc_per_replica: Option<u32>,

    /// Queue the job is admitted through. Unset means the queue named `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,

    /// Priority: higher goes first and may preempt lower. Mutually exclusive with
    /// priorityClassName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,

    /// Name of a priority class whose value becomes this job's priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,

    /// Restart, deadline, cleanup and suspension rules.
    #[serde(default)]
    pub run_policy: RunPolicy,

    /// Where checkpoints live and how a restarted or preempted job resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,

    /// A scratch volume per replica, mounted at /scratch (NVMe offload such as ZeRO-Infinity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch: Option<Scratch>,

    /// Tracking experiment the job's run is recorded in. Unset means the job's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,

    /// How the standalone agent runs replicas: `container` (Docker Engine API: Docker or
    /// Podman) or `process` (a host process). Ignored on Kubernetes, where pods run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,

    /// Rendezvous port on the rank-0 replica (MASTER_PORT). Unset: 23456 on Kubernetes;
    /// a free port chosen per job by the standalone agent, which shares one host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 65535))]
    pub master_port: Option<u32>,
}

fn one() -> u32 {
    1
}

/// CPU and memory requested by each replica, as Kubernetes quantities.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaResources {
    /// CPU request, for example `4` or `500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory request, for example `32Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// How a replica launches its worker processes.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Launcher {
    /// Run `command` once per replica.
    #[default]
    None,
    /// torchrun: PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_ADDR/PORT are set.
    Torchrun,
    /// DeepSpeed's launcher on replica 0 with a hostfile of every replica.
    Deepspeed,
    /// mpirun on replica 0 with a hostfile of every replica.
    Mpi,
}

/// How the standalone agent runs replicas: `container` (default: Docker Engine API, Docker
/// or Podman) or `process` (a host process). Ignored on Kubernetes, where pods run.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// A container through the Docker Engine API (Docker, or Podman's compatible service).
    #[default]
    Container,
    /// A host process, for machines without a container engine.
    Process,
}

/// Which failures restart the gang: `Never`, `OnFailure` (default: any failure restarts the
/// gang, up to backoffLimit times) or `ExitCode` (1-127 fail the job at once, 128-255 restart).
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Any failure fails the job.
    Never,
    /// Any failure restarts the whole gang, up to backoffLimit times.
    #[default]
    OnFailure,
    /// Exit codes 1-127 fail the job at once (a bug restarting will not fix); 128-255
    /// (signals, OOM kills, preemption) restart the gang, up to backoffLimit times.
    ExitCode,
}

/// Rules for restarts, deadlines, cleanup and suspension (the Kubeflow runPolicy).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunPolicy {
    /// Gang restarts allowed before the job is marked Failed. Preemptions and GPU faults do
    /// not count. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1000))]
    pub backoff_limit: Option<u32>,

    /// Which failures restart the gang: Never, OnFailure (default) or ExitCode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,

    /// Seconds the job may run, counted from its first start, before every replica is
    /// stopped and the job fails with reason DeadlineExceeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<u64>,

    /// Seconds after the job finishes before it is deleted. Unset keeps it forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<u64>,

    /// True stops every replica and keeps the job Suspended until set back to false.
    /// Suspension does not count against backoffLimit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,

    /// Which replicas are removed when the job finishes: Running (default) or All (also
    /// the logs' containers) or None.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_pod_policy: Option<CleanPodPolicy>,
}

/// Which replicas are removed when the job finishes: `Running` (default: stop those still
/// running), `All` (also remove finished ones) or `None`.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CleanPodPolicy {
    /// Stop replicas still running; keep finished ones for inspection.
    #[default]
    Running,
    /// Remove every replica.
    All,
    /// Remove nothing.
    None,
}

impl RunPolicy {
    /// The effective backoff limit (default 3).
    pub fn backoff_limit(&self) -> u32 {
        self.backoff_limit.unwrap_or(3)
    }
    /// The effective restart policy (default OnFailure).
    pub fn restart_policy(&self) -> RestartPolicy {
        self.restart_policy.unwrap_or_default()
    }
    /// Whether the job is suspended.
    pub fn suspended(&self) -> bool {
        self.suspend.unwrap_or(false)
    }
}

/// Checkpoint location and resume behaviour.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checkpoint {
    /// Object-store URI checkpoints are written under (s3://, gs://, az://, file://).
    /// Exported to replicas as CAPSTAN_CHECKPOINT_URI.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^(s3|gs|az|file)://.+')").message("uri must start with s3://, gs://, az:// or file://"))]
    pub uri: String,
    /// On a restart or after preemption: `latest` resumes from the newest checkpoint
    /// (CAPSTAN_RESUME_FROM is set), `never` starts from scratch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumePolicy>,
}

/// On a restart or after preemption: `latest` (default) resumes from the newest checkpoint
/// (CAPSTAN_RESUME_FROM is set), `never` starts from scratch.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ResumePolicy {
    /// Resume from the newest checkpoint.
    #[default]
    Latest,
    /// Always start from scratch.
    Never,
}

/// A per-replica scratch volume mounted at /scratch.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scratch {
    /// Size as a Kubernetes quantity, for example `500Gi`.
    pub size: String,
    /// `disk` (local NVMe, the default) or `memory` (tmpfs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<ScratchMedium>,
}

/// Backing medium of the scratch volume: `disk` (local NVMe, the default) or `memory` (tmpfs).
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScratchMedium {
    /// Local disk (NVMe).
    #[default]
    Disk,
    /// RAM (tmpfs).
    Memory,
}

/// Where the job is in its life.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum JobPhase {
    /// Waiting for admission (quota, GPUs).
    #[default]
    Pending,
    /// Admitted; replicas are being started.
    Starting,
    /// Every replica is running.
    Running,
    /// A replica failed; the gang is being stopped to start again.
    Restarting,
    /// Every replica exited 0.
    Succeeded,
    /// The job failed for good; the Failed condition says why.
    Failed,
    /// Stopped on request (runPolicy.suspend).
    Suspended,
}

impl JobPhase {
    /// True once the job can never run again.
    pub fn is_finished(self) -> bool {
        matches!(self, JobPhase::Succeeded | JobPhase::Failed)
    }
}

impl std::fmt::Display for JobPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Observed state of a TrainingJob.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TrainingJobStatus {
    /// Where the job is in its life.
    #[serde(default)]
    pub phase: JobPhase,
    /// Admitted, Running, Succeeded, Failed, Suspended and Preempted, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// One entry per replica of the current attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replica_statuses: Vec<ReplicaStatus>,
    /// Gang restarts counted against backoffLimit. Never reset while the job exists.
    #[serde(default)]
    pub restarts: u32,
    /// Gang restarts not counted against backoffLimit (preemption, GPU faults, agent loss).
    #[serde(default)]
    pub uncounted_restarts: u32,
    /// The attempt now running or last run; each gang (re)start increments it.
    #[serde(default)]
    pub attempt: u32,
    /// When the job first started running (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When the job finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// The rendezvous endpoint given to every replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendezvous: Option<Rendezvous>,
    /// Tracking run that records this job (MLFLOW_RUN_ID of every replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_run_id: Option<String>,
    /// Why the job is in its phase, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Position in its queue while Pending (1 = next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u32>,
    /// The exit code that ended the job, when a replica's exit ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Set while the gang is being stopped through no fault of its own (preemption, a GPU
    /// fault); the job then goes back to Pending without counting a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction: Option<EvictionStatus>,
}

/// Why a running gang is being stopped and requeued.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EvictionStatus {
    /// CamelCase reason, e.g. Preempted or GpuUnhealthy.
    pub reason: String,
    /// What happened, for a person.
    pub message: String,
}

/// Address every replica uses to find rank 0.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Rendezvous {
    /// MASTER_ADDR.
    pub master_addr: String,
    /// MASTER_PORT.
    pub master_port: u32,
}

/// State of one replica.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReplicaState {
    /// Not started yet.
    #[default]
    Pending,
    /// Running.
    Running,
    /// Exited 0.
    Succeeded,
    /// Exited non-zero, was killed, or vanished.
    Failed,
}

/// Observed state of one replica.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// Replica index (RANK / NODE_RANK).
    pub index: u32,
    /// Replica state.
    pub state: ReplicaState,
    /// Node the replica runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// GPU indices on that node (CUDA_VISIBLE_DEVICES).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<u32>,
    /// Exit code, once exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why the replica is in its state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
