//! Capstan's controllers: the standalone controller that `capstan up` runs ([`standalone`])
//! and the Kubernetes controller ([`k8s`], kube-rs), over the same core and scheduler.
//! [`mapping`] translates between the TrainingJob resource and `capstan_core`'s values.

pub mod artifacts;
pub mod deployments;
pub mod health;
pub mod k8s;
pub mod mapping;
pub mod pipeline_plan;
pub mod pipelines;
pub mod scheduling;
pub mod standalone;

/// Errors of a reconcile pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] capstan_store::StoreError),
    /// The agent failed to start, stop or observe a replica.
    #[error(transparent)]
    Agent(#[from] capstan_agent::AgentError),
    /// A status or spec did not (de)serialize.
    #[error("serialization: {0}")]
    Json(#[from] serde_json::Error),
    /// A file operation failed.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// A Kubernetes API request failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A watch cache never synced.
    #[error("the {0} cache did not sync")]
    Cache(String),
    /// The tracking server refused or could not be reached.
    #[error("tracking: {0}")]
    Tracking(String),
}
