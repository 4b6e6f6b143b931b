//! The Queue resource: GPU quota, cohorts, preemption and fair-share weight.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::common::Condition;

/// A queue jobs are admitted through. It owns a nominal GPU quota per product, may lend
/// unused quota to its cohort and borrow from it, and decides who may preempt whom.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "capstan.dev",
    version = "v1alpha1",
    kind = "Queue",
    plural = "queues",
    shortname = "cq",
    category = "capstan",
    status = "QueueStatus",
    printcolumn(name = "Cohort", type_ = "string", json_path = ".spec.cohort"),
    printcolumn(name = "Pending", type_ = "integer", json_path = ".status.pending"),
    printcolumn(name = "Admitted", type_ = "integer", json_path = ".status.admitted"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueSpec {
    /// GPU quota, one entry per GPU product. Product `*` matches any product.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.product == a.product))").message("each product may appear once in quotas"))]
    pub quotas: Vec<GpuQuota>,

    /// Queues in the same cohort lend each other unused quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort: Option<String>,

    /// Who may preempt whom.
    #[serde(default)]
    pub preemption: PreemptionPolicy,

    /// Fair-share weight against the other queues: a queue of weight 2 gets twice the share.
    /// Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub weight: Option<u32>,
}

/// Quota of one GPU product.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.lendingLimit) || self.lendingLimit <= self.nominal").message("lendingLimit cannot exceed nominal").field_path(".lendingLimit"))]
pub struct GpuQuota {
    /// GPU product (as in the `nvidia.com/gpu.product` label), or `*` for any.
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new("size(self) > 0").message("product must not be empty"))]
    pub product: String,
    /// GPUs this queue owns.
    pub nominal: u32,
    /// Most GPUs it may borrow from its cohort beyond nominal. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub borrowing_limit: Option<u32>,
    /// Most of its nominal GPUs it lends to the cohort. Unset: all unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lending_limit: Option<u32>,
}

/// Preemption rules of a queue.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreemptionPolicy {
    /// Within this queue: `LowerPriority` (default) lets a higher-priority job preempt lower
    /// ones; `Never` does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_queue: Option<WithinQueue>,
    /// Reclaiming quota this queue lent to its cohort: `Any` (default) preempts borrowers
    /// whatever their priority, `LowerPriority` only lower-priority ones, `Never` waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reclaim_within_cohort: Option<ReclaimPolicy>,
}

/// Preemption within this queue: `LowerPriority` (default) lets a higher-priority job preempt
/// lower ones; `Never` does not.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WithinQueue {
    /// Higher priority preempts lower.
    #[default]
    LowerPriority,
    /// No preemption inside the queue.
    Never,
}

/// Reclaiming quota this queue lent to its cohort: `Any` (default) preempts borrowers whatever
/// their priority, `LowerPriority` only lower-priority ones, `Never` waits.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReclaimPolicy {
    /// Preempt any borrower.
    #[default]
    Any,
    /// Preempt only lower-priority borrowers.
    LowerPriority,
    /// Never preempt to reclaim.
    Never,
}

/// Observed state of a Queue.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// GPUs in use by admitted jobs, per product.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub usage: BTreeMap<String, u32>,
    /// Jobs waiting in this queue.
    #[serde(default)]
    pub pending: u32,
    /// Jobs admitted and not finished.
    #[serde(default)]
    pub admitted: u32,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
