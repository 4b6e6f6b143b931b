//! Capstan's model server: ONNX models run by tract (pure Rust), served over the Open
//! Inference Protocol v2 REST API, with dynamic batching, Prometheus metrics and draining on
//! SIGTERM (`capstan serve`), plus the pure canary decisions the deployment controllers share.
//!
//! - [`tensor`]: the protocol's JSON tensors: decoding (flat or nested, every datatype),
//!   validation against the model, encoding (pure);
//! - [`model`]: loading an ONNX model and running it;
//! - [`batch`]: the batching worker and its pure planning;
//! - [`source`]: where a model comes from (path, object store, `models:/` registry);
//! - [`server`]: the axum routes and [`server::serve`];
//! - [`metrics`]: request counts, latency and batch-size histograms;
//! - [`canary`]: traffic split, weighted routing and the promote / rollback verdict (pure);
//! - [`route`]: the routing table of deployed models shared by the proxy and the controller;
//! - [`autoscale`]: the replica count of a version from its load (pure), and the load meters.

pub mod autoscale;
pub mod batch;
pub mod canary;
pub mod metrics;
pub mod model;
pub mod route;
pub mod server;
pub mod source;
pub mod tensor;

/// Errors of the serving crate.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// The request's inputs cannot be given to the model (answered with 400).
    #[error("{0}")]
    BadInput(String),
    /// The model file is not an ONNX model tract can load and run.
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// The model failed while running.
    #[error("{0}")]
    Inference(String),
    /// The model could not be fetched from its source.
    #[error("model source: {0}")]
    Source(String),
    /// Listening or serving failed.
    #[error("{0}")]
    Io(String),
}

/// Result of this crate.
pub type Result<T, E = ServingError> = std::result::Result<T, E>;
