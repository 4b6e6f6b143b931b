//! Capstan's resource types, group `capstan.dev`, version `v1alpha1`.
//!
//! These Rust types are the single source of truth: the CRD YAML in `helm/capstan/crds/`
//! is generated from them (`cargo run -p capstan-crds --bin crdgen`), their doc comments
//! become `kubectl explain` text, and [`manifest`] validates user manifests against the
//! very schema (types, ranges, unknown fields and CEL rules) the CRDs carry.

pub mod common;
pub mod manifest;
pub mod queue;
pub mod trainingjob;

pub use common::{Condition, EnvVar};
pub use queue::{Queue, QueueSpec, QueueStatus};
pub use trainingjob::{TrainingJob, TrainingJobSpec, TrainingJobStatus};

/// API group of every Capstan resource.
pub const GROUP: &str = "capstan.dev";
/// The served version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every Capstan resource.
pub const API_VERSION: &str = "capstan.dev/v1alpha1";

use kube::CustomResourceExt;

/// Every CRD Capstan installs, in a stable order.
pub fn crds() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    vec![TrainingJob::crd(), Queue::crd()]
}
