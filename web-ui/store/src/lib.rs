//! Capstan's durable state, through sea-orm: resources (TrainingJob, Queue, ...) stored as
//! Kubernetes-shaped documents, their events, and the tracking data (experiments, runs,
//! metrics, params, tags) that the MLflow-compatible API serves.
//!
//! Entities live in [`entities`], one migration per schema change in [`migrations`].
//! SQLite (WAL mode) is the default; PostgreSQL (`postgres://` URLs) runs the same migrations
//! (tests of both: [`test_db`]).
//! Every write returns only after its transaction committed.

pub mod artifacts;
pub mod downsample;
pub mod entities;
pub mod gpus;
pub mod metrics;
pub mod migrations;
pub mod registry;
pub mod runs_search;
pub mod secrets;
pub mod test_db;

use std::collections::BTreeMap;
use std::time::Duration;

use sea_orm::sea_query::{Alias, Expr, ExprTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseTransaction,
    EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use entities::{event, experiment, experiment_tag, latest_metric, metric, metric_series, param, resource, run, tag};

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
    /// The object is being deleted and cannot be changed until that finishes.
    #[error("{0} is being deleted; apply it again once it is gone")]
    BeingDeleted(String),
    /// An artifact path is not a safe relative path (absolute, `..`, backslash, NUL, ...).
    #[error("invalid artifact path {path:?}: {reason}")]
    InvalidArtifactPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The artifact destination is malformed or names a backend this build lacks.
    #[error("artifact destination {url:?}: {reason}")]
    ArtifactDestination {
        /// The destination as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An artifact upload was larger than the limit.
    #[error("artifact {path} is larger than the limit of {limit} bytes")]
    ArtifactTooLarge {
        /// Artifact path.
        path: String,
        /// Limit in bytes.
        limit: u64,
    },
    /// The body of an artifact upload broke off (the client went away or sent a bad body);
    /// nothing was stored.
    #[error("the upload of artifact {path} broke off: {reason}")]
    UploadInterrupted {
        /// Artifact path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The artifact storage (local files, S3, ...) failed.
    #[error("artifact storage: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// A local file could not be read or written (e.g. a replica log being uploaded).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
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
///
/// On SQLite there are two pools over the same file: `writer` has a single connection, so
/// writers of this process queue in the pool (fairly, without spinning on SQLITE_BUSY), and
/// every write transaction is `BEGIN IMMEDIATE`, so one from another process waits on the
/// busy timeout instead of failing on a lock upgrade; `db` has a few connections for reads,
/// which WAL lets run beside the writer. An in-memory database has one pool for both.
#[derive(Clone, Debug)]
pub struct Store {
    db: sea_orm::DatabaseConnection,
    writer: sea_orm::DatabaseConnection,
    /// `log_batch` calls waiting for a group commit (see [`metrics`]).
    commits: std::sync::Arc<metrics::CommitQueue>,
}

/// Rows per multi-row INSERT (6 columns x 500 rows stays far below every bind limit).
const CHUNK_ROWS: usize = 500;
/// Connections of the SQLite read pool.
const SQLITE_READERS: u32 = 4;
/// How long a SQLite connection waits for another's write lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_millis(5000);
/// How long a caller waits for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Rows a SQLite connection's thread may hand over ahead of the reader. sqlx's default (50)
/// makes a long read (a 25,000-point history page) switch threads for almost every row; a
/// deep queue lets SQLite run ahead and the reader drain it in bulk.
const SQLITE_ROW_BUFFER: usize = 32 * 1024;
/// Connections of the PostgreSQL pool.
const POSTGRES_CONNECTIONS: u32 = 8;
/// PostgreSQL advisory lock key held by every write transaction ("CAPSTAN\0" as an i64).
const POSTGRES_WRITE_LOCK: i64 = 0x4341_5053_5441_4e00;
/// PostgreSQL advisory lock key held while migrating, so that two processes starting at once
/// do not both create the tables.
const POSTGRES_MIGRATION_LOCK: i64 = 0x4341_5053_5441_4e01;

/// Run the migrations on the PostgreSQL database at `url` under the migration lock, through a
/// single connection (a session-level advisory lock belongs to one connection).
async fn migrate_postgres(url: &str) -> Result<()> {
    let mut options = ConnectOptions::new(url.to_owned());
    options.max_connections(1).min_connections(1).acquire_timeout(ACQUIRE_TIMEOUT).sqlx_logging(false);
    let conn = Database::connect(options).await?;
    conn.execute_unprepared(&format!("SELECT pg_advisory_lock({POSTGRES_MIGRATION_LOCK})")).await?;
    let migrated = migrations::Migrator::up(&conn, None).await;
    let unlocked = conn.execute_unprepared(&format!("SELECT pg_advisory_unlock({POSTGRES_MIGRATION_LOCK})")).await;
    let _ = conn.close().await;
    migrated?;
    unlocked?;
    Ok(())
}

/// Now, RFC 3339, seconds precision, UTC with a "Z".
fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Now, ms since the epoch.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Connect options for a SQLite pool: WAL, synchronous=FULL, foreign keys and the busy timeout
/// on every connection the pool opens.
fn sqlite_options(url: &str, max_connections: u32, in_memory: bool) -> ConnectOptions {
    let mut options = ConnectOptions::new(url.to_owned());
    // No ping before handing out a connection: a SQLite connection is a file handle in this
    // process and cannot go stale, and the ping is one more hand-over to the driver's thread
    // on every write transaction.
    options.test_before_acquire(false);
    options.max_connections(max_connections).acquire_timeout(ACQUIRE_TIMEOUT).sqlx_logging(false).map_sqlx_sqlite_opts(
        |o| {
            o.create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .row_buffer_size(SQLITE_ROW_BUFFER)
        },
    );
    if in_memory {
        // The database lives as long as one connection to it: keep that one open.
        options.min_connections(1).idle_timeout(None::<Duration>).max_lifetime(None::<Duration>);
    }
    options
}

/// Stored JSON text to a value.
fn parse_json(text: &str) -> Result<Value> {
    Ok(serde_json::from_str(text)?)
}

fn to_stored(m: resource::Model) -> Result<StoredResource> {
    Ok(StoredResource {
        labels: parse_json(&m.labels)?,
        annotations: parse_json(&m.annotations)?,
        spec: parse_json(&m.spec)?,
        status: parse_json(&m.status)?,
        kind: m.kind,
        namespace: m.namespace,
        name: m.name,
        uid: m.uid,
        generation: m.generation,
        resource_version: m.resource_version,
        creation_timestamp: m.creation_timestamp,
        deletion_timestamp: m.deletion_timestamp,
    })
}

fn to_event(m: event::Model) -> Event {
    Event {
        object_uid: m.object_uid,
        type_: m.type_,
        reason: m.reason,
        message: m.message,
        count: m.count,
        first_timestamp: m.first_timestamp,
        last_timestamp: m.last_timestamp,
    }
}

/// A value as stored: NaN becomes (0, is_nan), everything else (infinities too) is kept.
fn stored_value(value: f64) -> (f64, bool) {
    if value.is_nan() {
        (0.0, true)
    } else {
        (value, false)
    }
}

/// A metric point as stored (NaN as value 0 with `is_nan`), without its key.
#[derive(Debug, Clone, Copy)]
struct StoredPoint {
    step: i64,
    timestamp: i64,
    value: f64,
    is_nan: bool,
}

impl StoredPoint {
    fn of(m: &MetricPoint) -> StoredPoint {
        let (value, is_nan) = stored_value(m.value);
        StoredPoint { step: m.step, timestamp: m.timestamp, value, is_nan }
    }

    /// Later than `other` by MLflow's order: (step, timestamp, stored value).
    fn beats(&self, other: &StoredPoint) -> bool {
        (self.step, self.timestamp).cmp(&(other.step, other.timestamp)).then(self.value.total_cmp(&other.value)).is_gt()
    }
}

/// A stored value back: is_nan gives NaN.
fn loaded_value(value: f64, is_nan: bool) -> f64 {
    if is_nan {
        f64::NAN
    } else {
        value
    }
}

/// Key/value pairs with one entry per key, the last given winning, sorted by key.
fn last_wins(pairs: &[(String, String)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<BTreeMap<_, _>>().into_iter().collect()
}

fn parse_experiment_id(experiment_id: &str) -> Option<i64> {
    // Only canonical decimal ids: "1", not "+1" or "01".
    let id: i64 = experiment_id.parse().ok()?;
    (id >= 0 && id.to_string() == experiment_id).then_some(id)
}

fn run_not_found(run_id: &str) -> StoreError {
    StoreError::NotFound(format!("run {run_id}"))
}

fn run_record(
    m: run::Model,
    metrics: Vec<MetricPoint>,
    params: Vec<(String, String)>,
    tags: Vec<(String, String)>,
) -> RunRecord {
    RunRecord {
        run_id: m.run_uuid,
        experiment_id: m.experiment_id.to_string(),
        run_name: m.name,
        status: m.status,
        start_time: m.start_time,
        end_time: m.end_time,
        lifecycle_stage: m.lifecycle_stage,
        artifact_uri: m.artifact_uri,
        metrics,
        params,
        tags,
    }
}

/// A run with its latest metrics, params and tags (each sorted by key), read through `conn`.
async fn load_run<C: ConnectionTrait>(conn: &C, run_id: &str) -> Result<Option<RunRecord>> {
    let Some(m) = run::Entity::find_by_id(run_id.to_owned()).one(conn).await? else {
        return Ok(None);
    };
    let metrics = latest_metric::Entity::find()
        .filter(latest_metric::Column::RunUuid.eq(run_id))
        .order_by_asc(latest_metric::Column::Key)
        .all(conn)
        .await?
        .into_iter()
        .map(|l| MetricPoint {
            value: loaded_value(l.value, l.is_nan),
            key: l.key,
            timestamp: l.timestamp,
            step: l.step,
        })
        .collect();
    let params = param::Entity::find()
        .filter(param::Column::RunUuid.eq(run_id))
        .order_by_asc(param::Column::Key)
        .all(conn)
        .await?
        .into_iter()
        .map(|p| (p.key, p.value))
        .collect();
    let tags = tag::Entity::find()
        .filter(tag::Column::RunUuid.eq(run_id))
        .order_by_asc(tag::Column::Key)
        .all(conn)
        .await?
        .into_iter()
        .map(|t| (t.key, t.value))
        .collect();
    Ok(Some(run_record(m, metrics, params, tags)))
}

/// An experiment with its tags (sorted by key), read through `conn`.
async fn load_experiment<C: ConnectionTrait>(
    conn: &C,
    m: Option<experiment::Model>,
) -> Result<Option<ExperimentRecord>> {
    let Some(m) = m else {
        return Ok(None);
    };
    let tags = experiment_tag::Entity::find()
        .filter(experiment_tag::Column::ExperimentId.eq(m.experiment_id))
        .order_by_asc(experiment_tag::Column::Key)
        .all(conn)
        .await?
        .into_iter()
        .map(|t| (t.key, t.value))
        .collect();
    Ok(Some(ExperimentRecord {
        experiment_id: m.experiment_id.to_string(),
        name: m.name,
        artifact_location: m.artifact_location,
        lifecycle_stage: m.lifecycle_stage,
        creation_time: m.creation_time,
        last_update_time: m.last_update_time,
        tags,
    }))
}

/// Create an active experiment inside `txn`; AlreadyExists if the name is taken.
async fn insert_experiment(txn: &DatabaseTransaction, name: &str, tags: &[(String, String)]) -> Result<i64> {
    let taken = experiment::Entity::find().filter(experiment::Column::Name.eq(name)).one(txn).await?;
    if taken.is_some() {
        return Err(StoreError::AlreadyExists(format!("experiment '{name}'")));
    }
    let now = now_ms();
    let inserted = experiment::Entity::insert(experiment::ActiveModel {
        experiment_id: ActiveValue::NotSet,
        name: ActiveValue::Set(name.to_owned()),
        // Needs the id; set right below, in the same transaction.
        artifact_location: ActiveValue::Set(String::new()),
        lifecycle_stage: ActiveValue::Set("active".to_owned()),
        creation_time: ActiveValue::Set(now),
        last_update_time: ActiveValue::Set(now),
    })
    .exec(txn)
    .await?;
    let id = inserted.last_insert_id;
    experiment::Entity::update_many()
        .col_expr(experiment::Column::ArtifactLocation, Expr::value(format!("mlflow-artifacts:/{id}")))
        .filter(experiment::Column::ExperimentId.eq(id))
        .exec(txn)
        .await?;
    let tags = last_wins(tags);
    for chunk in tags.chunks(CHUNK_ROWS) {
        experiment_tag::Entity::insert_many(chunk.iter().map(|(k, v)| experiment_tag::ActiveModel {
            experiment_id: ActiveValue::Set(id),
            key: ActiveValue::Set(k.clone()),
            value: ActiveValue::Set(v.clone()),
        }))
        .exec_without_returning(txn)
        .await?;
    }
    Ok(id)
}

/// `column` of the row an upsert proposes (`excluded.column`).
fn excluded(column: &str) -> Expr {
    Expr::col((Alias::new("excluded"), Alias::new(column)))
}

/// `column` of the stored `latest_metrics` row an upsert conflicts with.
fn stored_latest(column: latest_metric::Column) -> Expr {
    Expr::col((latest_metric::Entity, column))
}

impl Store {
    /// Open (creating if needed) the database at `url` (`sqlite:///abs/path.db?mode=rwc`,
    /// `sqlite::memory:`, or `postgres://user@host:port/database` on an existing database),
    /// switch SQLite to WAL mode with synchronous=FULL (an acknowledged write survives power
    /// loss), and run the migrations (the same ones on both).
    pub async fn open(url: &str) -> Result<Store> {
        let store = if url.starts_with("sqlite:") {
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            let writer = Database::connect(sqlite_options(url, 1, in_memory)).await?;
            migrations::Migrator::up(&writer, None).await?;
            // Readers connect after the migrations, on a file already in WAL mode.
            let db = if in_memory {
                writer.clone()
            } else {
                Database::connect(sqlite_options(url, SQLITE_READERS, false)).await?
            };
            Store { db, writer, commits: Default::default() }
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            migrate_postgres(url).await?;
            let mut options = ConnectOptions::new(url.to_owned());
            options.max_connections(POSTGRES_CONNECTIONS).acquire_timeout(ACQUIRE_TIMEOUT).sqlx_logging(false);
            let db = Database::connect(options).await?;
            Store { writer: db.clone(), db, commits: Default::default() }
        } else {
            return Err(StoreError::Db(sea_orm::DbErr::Custom(format!(
                "unsupported database URL {url:?}: use sqlite://PATH or postgres://USER@HOST:PORT/DATABASE"
            ))));
        };
        tracing::debug!(url, "store opened");
        Ok(store)
    }

    /// Open the SQLite file `path`, creating it.
    pub async fn open_sqlite(path: &std::path::Path) -> Result<Store> {
        let path = std::path::absolute(path)
            .map_err(|e| StoreError::Db(sea_orm::DbErr::Custom(format!("cannot resolve {}: {e}", path.display()))))?;
        // `?` and `#` would end the path part of the URL.
        let path = path.to_string_lossy().replace('%', "%25").replace('?', "%3F").replace('#', "%23");
        Store::open(&format!("sqlite://{path}?mode=rwc")).await
    }

    /// A write transaction: `BEGIN IMMEDIATE` on SQLite, so it holds the write lock from the
    /// start and never fails upgrading a read lock. On PostgreSQL it takes the store's write
    /// lock (a transaction-scoped advisory lock, released at commit or rollback), so writers
    /// of every process run one at a time as on SQLite, and the read-then-write steps of a
    /// write (immutable params, unique names, folded events) see no concurrent change.
    async fn begin_write(&self) -> Result<DatabaseTransaction> {
        let txn = self
            .writer
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await?;
        if txn.get_database_backend() == sea_orm::DbBackend::Postgres {
            txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({POSTGRES_WRITE_LOCK})")).await?;
        }
        Ok(txn)
    }

    /// Create the object, or update its spec/labels/annotations. A create gets a new uid,
    /// generation 1 and `status` `{}`. An update that changes the spec bumps generation.
    /// An object being deleted (deletion_timestamp set) cannot be updated: BeingDeleted.
    pub async fn put_resource(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        labels: &Value,
        annotations: &Value,
        spec: &Value,
    ) -> Result<(StoredResource, PutOutcome)> {
        let txn = self.begin_write().await?;
        let existing = resource::Entity::find()
            .filter(resource::Column::Kind.eq(kind))
            .filter(resource::Column::Namespace.eq(namespace))
            .filter(resource::Column::Name.eq(name))
            .one(&txn)
            .await?;
        let Some(old) = existing else {
            let model = resource::Model {
                uid: uuid::Uuid::new_v4().to_string(),
                kind: kind.to_owned(),
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                generation: 1,
                resource_version: 1,
                creation_timestamp: now_rfc3339(),
                deletion_timestamp: None,
                labels: serde_json::to_string(labels)?,
                annotations: serde_json::to_string(annotations)?,
                spec: serde_json::to_string(spec)?,
                status: "{}".to_owned(),
            };
            resource::Entity::insert(model.clone().into_active_model()).exec_without_returning(&txn).await?;
            txn.commit().await?;
            return Ok((to_stored(model)?, PutOutcome::Created));
        };
        if old.deletion_timestamp.is_some() {
            return Err(StoreError::BeingDeleted(format!("{kind} {namespace}/{name}")));
        }
        let spec_changed = parse_json(&old.spec)? != *spec;
        let changed =
            spec_changed || parse_json(&old.labels)? != *labels || parse_json(&old.annotations)? != *annotations;
        if !changed {
            txn.commit().await?;
            return Ok((to_stored(old)?, PutOutcome::Unchanged));
        }
        let mut model = old;
        if spec_changed {
            model.generation += 1;
        }
        model.resource_version += 1;
        model.labels = serde_json::to_string(labels)?;
        model.annotations = serde_json::to_string(annotations)?;
        model.spec = serde_json::to_string(spec)?;
        resource::Entity::update_many()
            .col_expr(resource::Column::Generation, Expr::value(model.generation))
            .col_expr(resource::Column::ResourceVersion, Expr::value(model.resource_version))
            .col_expr(resource::Column::Labels, Expr::value(model.labels.clone()))
            .col_expr(resource::Column::Annotations, Expr::value(model.annotations.clone()))
            .col_expr(resource::Column::Spec, Expr::value(model.spec.clone()))
            .filter(resource::Column::Uid.eq(model.uid.as_str()))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok((to_stored(model)?, PutOutcome::Configured))
    }

    /// One object.
    pub async fn get_resource(&self, kind: &str, namespace: &str, name: &str) -> Result<Option<StoredResource>> {
        resource::Entity::find()
            .filter(resource::Column::Kind.eq(kind))
            .filter(resource::Column::Namespace.eq(namespace))
            .filter(resource::Column::Name.eq(name))
            .one(&self.db)
            .await?
            .map(to_stored)
            .transpose()
    }

    /// Objects of a kind, in one namespace or all (None), ordered by creation then name.
    pub async fn list_resources(&self, kind: &str, namespace: Option<&str>) -> Result<Vec<StoredResource>> {
        let mut query = resource::Entity::find().filter(resource::Column::Kind.eq(kind));
        if let Some(namespace) = namespace {
            query = query.filter(resource::Column::Namespace.eq(namespace));
        }
        query
            .order_by_asc(resource::Column::CreationTimestamp)
            .order_by_asc(resource::Column::Name)
            .order_by_asc(resource::Column::Namespace)
            .all(&self.db)
            .await?
            .into_iter()
            .map(to_stored)
            .collect()
    }

    /// Replace the status of the object with this uid. NotFound if it no longer exists.
    pub async fn set_status(&self, uid: &str, status: &Value) -> Result<()> {
        let updated = resource::Entity::update_many()
            .col_expr(resource::Column::Status, Expr::value(serde_json::to_string(status)?))
            .col_expr(resource::Column::ResourceVersion, Expr::col(resource::Column::ResourceVersion).add(1i64))
            .filter(resource::Column::Uid.eq(uid))
            .exec(&self.writer)
            .await?;
        if updated.rows_affected == 0 {
            return Err(StoreError::NotFound(format!("resource with uid {uid}")));
        }
        Ok(())
    }

    /// Ask for deletion: set deletion_timestamp (idempotent). Returns false if absent.
    pub async fn mark_deleted(&self, kind: &str, namespace: &str, name: &str) -> Result<bool> {
        let txn = self.begin_write().await?;
        let existing = resource::Entity::find()
            .filter(resource::Column::Kind.eq(kind))
            .filter(resource::Column::Namespace.eq(namespace))
            .filter(resource::Column::Name.eq(name))
            .one(&txn)
            .await?;
        let Some(m) = existing else {
            return Ok(false);
        };
        if m.deletion_timestamp.is_none() {
            resource::Entity::update_many()
                .col_expr(resource::Column::DeletionTimestamp, Expr::value(now_rfc3339()))
                .col_expr(resource::Column::ResourceVersion, Expr::col(resource::Column::ResourceVersion).add(1i64))
                .filter(resource::Column::Uid.eq(m.uid.as_str()))
                .exec(&txn)
                .await?;
            txn.commit().await?;
        }
        Ok(true)
    }

    /// Remove the object with this uid and its events for good.
    pub async fn remove_resource(&self, uid: &str) -> Result<()> {
        let txn = self.begin_write().await?;
        event::Entity::delete_many().filter(event::Column::ObjectUid.eq(uid)).exec(&txn).await?;
        resource::Entity::delete_many().filter(resource::Column::Uid.eq(uid)).exec(&txn).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Record an event; a repeat of the latest event of the same object with the same
    /// type, reason and message increments its count and last_timestamp instead.
    pub async fn add_event(&self, object_uid: &str, type_: &str, reason: &str, message: &str) -> Result<()> {
        let now = now_rfc3339();
        let txn = self.begin_write().await?;
        let latest = event::Entity::find()
            .filter(event::Column::ObjectUid.eq(object_uid))
            .order_by_desc(event::Column::Id)
            .one(&txn)
            .await?;
        match latest {
            Some(e) if e.type_ == type_ && e.reason == reason && e.message == message => {
                event::Entity::update_many()
                    .col_expr(event::Column::Count, Expr::col(event::Column::Count).add(1i64))
                    .col_expr(event::Column::LastTimestamp, Expr::value(now))
                    .filter(event::Column::Id.eq(e.id))
                    .exec(&txn)
                    .await?;
            }
            _ => {
                event::Entity::insert(event::ActiveModel {
                    id: ActiveValue::NotSet,
                    object_uid: ActiveValue::Set(object_uid.to_owned()),
                    type_: ActiveValue::Set(type_.to_owned()),
                    reason: ActiveValue::Set(reason.to_owned()),
                    message: ActiveValue::Set(message.to_owned()),
                    count: ActiveValue::Set(1),
                    first_timestamp: ActiveValue::Set(now.clone()),
                    last_timestamp: ActiveValue::Set(now),
                })
                .exec_without_returning(&txn)
                .await?;
            }
        }
        txn.commit().await?;
        Ok(())
    }

    /// Events of an object, oldest first.
    pub async fn list_events(&self, object_uid: &str) -> Result<Vec<Event>> {
        Ok(event::Entity::find()
            .filter(event::Column::ObjectUid.eq(object_uid))
            .order_by_asc(event::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(to_event)
            .collect())
    }

    /// The experiment with this name, created (active) if missing. Returns its id.
    pub async fn get_or_create_experiment(&self, name: &str) -> Result<String> {
        let found = experiment::Entity::find().filter(experiment::Column::Name.eq(name)).one(&self.db).await?;
        if let Some(m) = found {
            return Ok(m.experiment_id.to_string());
        }
        let txn = self.begin_write().await?;
        // Someone may have made it since the look-up above.
        let found = experiment::Entity::find().filter(experiment::Column::Name.eq(name)).one(&txn).await?;
        let id = match found {
            Some(m) => m.experiment_id,
            None => insert_experiment(&txn, name, &[]).await?,
        };
        txn.commit().await?;
        Ok(id.to_string())
    }

    /// Create an experiment; AlreadyExists if the name is taken.
    pub async fn create_experiment(&self, name: &str, tags: &[(String, String)]) -> Result<String> {
        let txn = self.begin_write().await?;
        let id = insert_experiment(&txn, name, tags).await?;
        txn.commit().await?;
        Ok(id.to_string())
    }

    /// An experiment by id.
    pub async fn get_experiment(&self, experiment_id: &str) -> Result<Option<ExperimentRecord>> {
        let Some(id) = parse_experiment_id(experiment_id) else {
            return Ok(None);
        };
        let txn = self.db.begin().await?;
        let m = experiment::Entity::find_by_id(id).one(&txn).await?;
        let record = load_experiment(&txn, m).await?;
        txn.commit().await?;
        Ok(record)
    }

    /// An experiment by name.
    pub async fn get_experiment_by_name(&self, name: &str) -> Result<Option<ExperimentRecord>> {
        let txn = self.db.begin().await?;
        let m = experiment::Entity::find().filter(experiment::Column::Name.eq(name)).one(&txn).await?;
        let record = load_experiment(&txn, m).await?;
        txn.commit().await?;
        Ok(record)
    }

    /// Create a RUNNING run in the experiment, with a new 32-hex id; start_time in ms.
    pub async fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        start_time: i64,
        tags: &[(String, String)],
    ) -> Result<RunRecord> {
        let not_found = || StoreError::NotFound(format!("experiment {experiment_id}"));
        let exp_id = parse_experiment_id(experiment_id).ok_or_else(not_found)?;
        let txn = self.begin_write().await?;
        if experiment::Entity::find_by_id(exp_id).one(&txn).await?.is_none() {
            return Err(not_found());
        }
        let run_uuid = uuid::Uuid::new_v4().simple().to_string();
        let model = run::Model {
            artifact_uri: format!("mlflow-artifacts:/{exp_id}/{run_uuid}/artifacts"),
            run_uuid,
            experiment_id: exp_id,
            name: run_name.to_owned(),
            status: "RUNNING".to_owned(),
            start_time,
            end_time: None,
            lifecycle_stage: "active".to_owned(),
            user_id: String::new(),
        };
        run::Entity::insert(model.clone().into_active_model()).exec_without_returning(&txn).await?;
        let tags = last_wins(tags);
        for chunk in tags.chunks(CHUNK_ROWS) {
            tag::Entity::insert_many(chunk.iter().map(|(k, v)| tag::ActiveModel {
                run_uuid: ActiveValue::Set(model.run_uuid.clone()),
                key: ActiveValue::Set(k.clone()),
                value: ActiveValue::Set(v.clone()),
            }))
            .exec_without_returning(&txn)
            .await?;
        }
        txn.commit().await?;
        Ok(run_record(model, Vec::new(), Vec::new(), tags))
    }

    /// A run with its latest metrics, params and tags.
    pub async fn get_run(&self, run_id: &str) -> Result<Option<RunRecord>> {
        // One read transaction: one snapshot for the four queries.
        let txn = self.db.begin().await?;
        let record = load_run(&txn, run_id).await?;
        txn.commit().await?;
        Ok(record)
    }

    /// Update status / end_time / name of a run. NotFound if absent.
    pub async fn update_run(
        &self,
        run_id: &str,
        status: Option<&str>,
        end_time: Option<i64>,
        run_name: Option<&str>,
    ) -> Result<RunRecord> {
        let txn = self.begin_write().await?;
        let Some(m) = run::Entity::find_by_id(run_id.to_owned()).one(&txn).await? else {
            return Err(run_not_found(run_id));
        };
        let mut am: run::ActiveModel = m.into();
        if let Some(status) = status {
            am.status = ActiveValue::Set(status.to_owned());
        }
        if let Some(end_time) = end_time {
            am.end_time = ActiveValue::Set(Some(end_time));
        }
        if let Some(run_name) = run_name {
            am.name = ActiveValue::Set(run_name.to_owned());
        }
        if am.is_changed() {
            am.update(&txn).await?;
        }
        let record = load_run(&txn, run_id).await?.ok_or_else(|| run_not_found(run_id))?;
        txn.commit().await?;
        Ok(record)
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
        // Built before the writer's turn; written in a group commit (see `metrics`).
        let batch = metrics::Batch::new(self.writer.get_database_backend(), run_id, metrics, params, tags)?;
        self.commit_batch(batch).await
    }

    /// Every point of one metric of a run, by step then timestamp.
    pub async fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<MetricPoint>> {
        let txn = self.db.begin().await?;
        if run::Entity::find_by_id(run_id.to_owned()).one(&txn).await?.is_none() {
            return Err(run_not_found(run_id));
        }
        let series = metric_series::Entity::find()
            .filter(metric_series::Column::RunUuid.eq(run_id))
            .filter(metric_series::Column::Key.eq(key))
            .one(&txn)
            .await?;
        let points = match series {
            None => Vec::new(),
            Some(series) => metric::Entity::find()
                .filter(metric::Column::SeriesId.eq(series.id))
                .order_by_asc(metric::Column::Step)
                .order_by_asc(metric::Column::Timestamp)
                .order_by_asc(metric::Column::Value)
                .all(&txn)
                .await?
                .into_iter()
                .map(|m| MetricPoint {
                    value: loaded_value(m.value, m.is_nan),
                    key: key.to_owned(),
                    timestamp: m.timestamp,
                    step: m.step,
                })
                .collect(),
        };
        txn.commit().await?;
        Ok(points)
    }
}

#[cfg(test)]
mod tests;
