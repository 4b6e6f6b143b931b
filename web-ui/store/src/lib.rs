//! Capstan's durable state, through sea-orm: resources (TrainingJob, Queue, ...) stored as
//! Kubernetes-shaped documents, their events, and the tracking data (experiments, runs,
//! metrics, params, tags) that the MLflow-compatible API serves.
//!
//! Entities live in [`entities`], one migration per schema change in [`migrations`].
//! SQLite (WAL mode) is the default; PostgreSQL comes with the tracking issue.
//! Every write returns only after its transaction committed.

pub mod entities;
pub mod migrations;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a statement.
    #[error("database error: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// A stored document could not be (de)serialized.
    #[error("stored document is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The object asked for does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A param was logged again with a different value (params are immutable).
    #[error("param {key} of run {run_id} is already {old:?}; it cannot change to {new:?}")]
    ParamChanged {
        /// Run id.
        run_id: String,
        /// Param key.
        key: String,
        /// Stored value.
        old: String,
        /// Value asked for.
        new: String,
    },
    /// A name is already taken.
    #[error("{0} already exists")]
    AlreadyExists(String),
}

/// Result alias.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A stored resource, shaped like a Kubernetes object's metadata plus spec and status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResource {
    /// Kind, e.g. "TrainingJob".
    pub kind: String,
    /// Namespace ("" for cluster-scoped kinds).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (uuid v4), new for each create.
    pub uid: String,
    /// Bumped whenever the spec changes.
    pub generation: i64,
    /// Bumped on every write (spec, status, deletion).
    pub resource_version: i64,
    /// RFC 3339.
    pub creation_timestamp: String,
    /// RFC 3339, set once deletion was asked for (the controller removes it after cleanup).
    pub deletion_timestamp: Option<String>,
    /// metadata.labels and metadata.annotations as given.
    pub labels: Value,
    /// Annotations.
    pub annotations: Value,
    /// The spec as applied.
    pub spec: Value,
    /// The status the controller last wrote (`{}` at first).
    pub status: Value,
}

/// What `put_resource` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// A new object was made.
    Created,
    /// The spec, labels or annotations changed.
    Configured,
    /// Nothing changed.
    Unchanged,
}

/// An event about an object, as `kubectl describe` shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// UID of the object it is about.
    pub object_uid: String,
    /// "Normal" or "Warning".
    pub type_: String,
    /// One CamelCase word.
    pub reason: String,
    /// For a person.
    pub message: String,
    /// How many times it happened (repeats of the same type+reason+message are folded).
    pub count: i64,
    /// RFC 3339 of the first occurrence.
    pub first_timestamp: String,
    /// RFC 3339 of the last occurrence.
    pub last_timestamp: String,
}

/// One metric point (MLflow's shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    /// Metric key.
    pub key: String,
    /// Value (NaN and infinities allowed).
    pub value: f64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// Step.
    pub step: i64,
}

/// A run (MLflow's shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// 32 lowercase hex characters.
    pub run_id: String,
    /// Experiment id (decimal string).
    pub experiment_id: String,
    /// Run name.
    pub run_name: String,
    /// RUNNING, SCHEDULED, FINISHED, FAILED or KILLED.
    pub status: String,
    /// ms since epoch.
    pub start_time: i64,
    /// ms since epoch.
    pub end_time: Option<i64>,
    /// "active" or "deleted".
    pub lifecycle_stage: String,
    /// mlflow-artifacts:/<experiment_id>/<run_id>/artifacts
    pub artifact_uri: String,
    /// Latest value of each metric.
    pub metrics: Vec<MetricPoint>,
    /// Params.
    pub params: Vec<(String, String)>,
    /// Tags.
    pub tags: Vec<(String, String)>,
}

/// An experiment (MLflow's shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentRecord {
    /// Decimal string id.
    pub experiment_id: String,
    /// Unique name.
    pub name: String,
    /// mlflow-artifacts:/<experiment_id>
    pub artifact_location: String,
    /// "active" or "deleted".
    pub lifecycle_stage: String,
    /// ms since epoch.
    pub creation_time: i64,
    /// ms since epoch.
    pub last_update_time: i64,
    /// Tags.
    pub tags: Vec<(String, String)>,
}

/// The store: one database connection pool.
#[derive(Clone, Debug)]
pub struct Store {
    db: sea_orm::DatabaseConnection,
}

impl Store {
    /// Open (creating if needed) the database at `url` (`sqlite:///abs/path.db?mode=rwc`,
    /// or `sqlite::memory:`), switch SQLite to WAL mode with synchronous=FULL (an
    /// acknowledged write survives power loss), and run the migrations.
    pub async fn open(url: &str) -> Result<Store> {
        todo!("{url}")
    }

    /// Open the SQLite file `path`, creating it.
    pub async fn open_sqlite(path: &std::path::Path) -> Result<Store> {
        todo!("{path:?}")
    }

    /// Create the object, or update its spec/labels/annotations. A create gets a new uid,
    /// generation 1 and `status` `{}`. An update that changes the spec bumps generation.
    /// An object being deleted (deletion_timestamp set) cannot be updated: AlreadyExists.
    pub async fn put_resource(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        labels: &Value,
        annotations: &Value,
        spec: &Value,
    ) -> Result<(StoredResource, PutOutcome)> {
        todo!("{kind}{namespace}{name}{labels}{annotations}{spec}")
    }

    /// One object.
    pub async fn get_resource(&self, kind: &str, namespace: &str, name: &str) -> Result<Option<StoredResource>> {
        todo!("{kind}{namespace}{name}")
    }

    /// Objects of a kind, in one namespace or all (None), ordered by creation then name.
    pub async fn list_resources(&self, kind: &str, namespace: Option<&str>) -> Result<Vec<StoredResource>> {
        todo!("{kind}{namespace:?}")
    }

    /// Replace the status of the object with this uid. NotFound if it no longer exists.
    pub async fn set_status(&self, uid: &str, status: &Value) -> Result<()> {
        todo!("{uid}{status}")
    }

    /// Ask for deletion: set deletion_timestamp (idempotent). Returns false if absent.
    pub async fn mark_deleted(&self, kind: &str, namespace: &str, name: &str) -> Result<bool> {
        todo!("{kind}{namespace}{name}")
    }

    /// Remove the object with this uid and its events for good.
    pub async fn remove_resource(&self, uid: &str) -> Result<()> {
        todo!("{uid}")
    }

    /// Record an event; a repeat of the latest event of the same object with the same
    /// type, reason and message increments its count and last_timestamp instead.
    pub async fn add_event(&self, object_uid: &str, type_: &str, reason: &str, message: &str) -> Result<()> {
        todo!("{object_uid}{type_}{reason}{message}")
    }

    /// Events of an object, oldest first.
    pub async fn list_events(&self, object_uid: &str) -> Result<Vec<Event>> {
        todo!("{object_uid}")
    }

    /// The experiment with this name, created (active) if missing. Returns its id.
    pub async fn get_or_create_experiment(&self, name: &str) -> Result<String> {
        todo!("{name}")
    }

    /// Create an experiment; AlreadyExists if the name is taken.
    pub async fn create_experiment(&self, name: &str, tags: &[(String, String)]) -> Result<String> {
        todo!("{name}{tags:?}")
    }

    /// An experiment by id.
    pub async fn get_experiment(&self, experiment_id: &str) -> Result<Option<ExperimentRecord>> {
        todo!("{experiment_id}")
    }

    /// An experiment by name.
    pub async fn get_experiment_by_name(&self, name: &str) -> Result<Option<ExperimentRecord>> {
        todo!("{name}")
    }

    /// Create a RUNNING run in the experiment, with a new 32-hex id; start_time in ms.
    pub async fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        start_time: i64,
        tags: &[(String, String)],
    ) -> Result<RunRecord> {
        todo!("{experiment_id}{run_name}{start_time}{tags:?}")
    }

    /// A run with its latest metrics, params and tags.
    pub async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        todo!("{run_id}")
    }

    /// Update status / end_time / name of a run. NotFound if absent.
    pub async fn update_run(
        &self,
        run_id: &str,
        status: Option<&str>,
        end_time: Option<i64>,
        run_name: Option<&str>,
    ) -> Result<RunRecord> {
        todo!("{run_id}{status:?}{end_time:?}{run_name:?}")
    }

    /// Log metrics, params and tags in one transaction. Params are immutable: the same
    /// value again is fine, another value is ParamChanged and nothing is written. A metric
    /// point identical to a stored one (key, step, timestamp, value) is not stored twice,
    /// so a client retry does not double it. NotFound if the run is absent.
    pub async fn log_batch(
        &self,
        run_id: &str,
        metrics: &[MetricPoint],
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<()> {
        todo!("{run_id}{metrics:?}{params:?}{tags:?}")
    }

    /// Every point of one metric of a run, by step then timestamp.
    pub async fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<MetricPoint>> {
        todo!("{run_id}{key}")
    }
}
