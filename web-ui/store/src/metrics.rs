//! Metric points: the write path of `log_batch` (params, points, latest values, tiles and
//! tags of a run, with group commit) and the reads of long histories: pages of the full
//! history and the downsampled bulk-interval view (see [`crate::downsample`]).
//!
//! **Group commit.** Concurrent `log_batch` calls share one write transaction: the first
//! caller to get the writer's turn takes every batch waiting and applies each inside its own
//! savepoint (a batch that fails — a changed param, an absent run — is rolled back alone
//! and gets its error), commits once, then answers every caller. Each batch is still all
//! or nothing, and no caller hears "done" before the commit that holds its batch: only the
//! cost of beginning and committing (on SQLite, the fsync of synchronous=FULL) is shared.
//! A caller alone pays no savepoint. The group runs in its own task, so a caller that goes
//! away (a closed connection) does not cut the others' batches short.
//!
//! The statements here are written by hand, with the same text on SQLite and PostgreSQL
//! (only the placeholders differ), and built before the writer's turn: multi-row inserts of
//! up to [`POINT_ROWS`] points whose prepared form the driver caches per connection, and an
//! upsert of tile summaries whose merge (a `CASE` per column) is the SQL form of
//! [`Summary::merge`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use sea_orm::sea_query::{ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter, QueryResult,
    QueryTrait, Statement, TransactionTrait, Value,
};
use tokio::sync::oneshot;

use crate::downsample::{self, Piece, Sample, Summary};
use crate::entities::{latest_metric, param, tag};
use crate::{
    excluded, last_wins, loaded_value, run_not_found, stored_latest, MetricPoint, Result, Store, StoreError,
    StoredPoint, CHUNK_ROWS,
};

/// Most batches one group commit applies (the rest wait for the next).
const MAX_GROUP: usize = 64;

/// Points per multi-row INSERT (6 values each; far below SQLite's and PostgreSQL's limits).
pub const POINT_ROWS: usize = 1000;
/// Tiles per multi-row upsert (20 values each).
const TILE_ROWS: usize = 500;

/// A statement under construction: SQL text plus its values, with the backend's placeholders.
struct Sql {
    backend: DbBackend,
    text: String,
    values: Vec<Value>,
}

impl Sql {
    fn new(backend: DbBackend, text: &str) -> Sql {
        Sql { backend, text: text.to_owned(), values: Vec::new() }
    }

    /// Append SQL text.
    fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    /// Append a placeholder bound to `value`.
    fn bind(&mut self, value: impl Into<Value>) -> &mut Sql {
        self.values.push(value.into());
        match self.backend {
            DbBackend::Postgres => {
                self.text.push('$');
                self.text.push_str(&self.values.len().to_string());
            }
            _ => self.text.push('?'),
        }
        self
    }

    fn statement(self) -> Statement {
        Statement::from_sql_and_values(self.backend, self.text, self.values)
    }
}

/// A multi-row statement of one run's rows. On PostgreSQL its placeholders are numbered:
/// `$1` is the run id and each distinct key gets one number at its first use, so a 1000-point
/// insert binds about 4000 values, not 6000 with 2000 copies of the same strings. On SQLite
/// every placeholder is a plain `?` with its own value: SQLite finds the name of a numbered
/// parameter by a linear scan, which the driver does for each one (quadratic in the rows).
struct RowsSql<'k> {
    backend: DbBackend,
    run_id: &'k str,
    text: String,
    values: Vec<Value>,
    /// PostgreSQL: the last key bound and its number (rows of one key usually come together).
    last_key: Option<(&'k str, usize)>,
    /// PostgreSQL: every key bound and its number.
    key_index: std::collections::HashMap<&'k str, usize>,
}

impl<'k> RowsSql<'k> {
    fn new(backend: DbBackend, head: &str, run_id: &'k str, values: usize) -> RowsSql<'k> {
        let mut text = String::with_capacity(head.len() + values * 9 + 64);
        text.push_str(head);
        let mut all = Vec::with_capacity(values + 2);
        if backend == DbBackend::Postgres {
            all.push(Value::from(run_id));
        }
        RowsSql { backend, run_id, text, values: all, last_key: None, key_index: Default::default() }
    }

    fn numbered(&self) -> bool {
        self.backend == DbBackend::Postgres
    }

    /// `$n`.
    fn number(&mut self, n: usize) {
        self.text.push('$');
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut n = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.text.push_str(std::str::from_utf8(&digits[i..]).expect("ASCII digits"));
    }

    /// A placeholder bound to `value`.
    fn bind(&mut self, value: impl Into<Value>) {
        self.values.push(value.into());
        if self.numbered() {
            self.number(self.values.len());
        } else {
            self.text.push('?');
        }
    }

    /// A placeholder for the run id.
    fn run(&mut self) {
        if self.numbered() {
            self.text.push_str("$1");
        } else {
            self.bind(self.run_id);
        }
    }

    /// A placeholder for `key` (on PostgreSQL bound at its first use).
    fn key(&mut self, key: &'k str) {
        if !self.numbered() {
            self.bind(key);
            return;
        }
        let n = match self.last_key {
            Some((last, n)) if last == key => n,
            _ => match self.key_index.get(key) {
                Some(&n) => n,
                None => {
                    self.values.push(Value::from(key));
                    let n = self.values.len();
                    self.key_index.insert(key, n);
                    n
                }
            },
        };
        self.last_key = Some((key, n));
        self.number(n);
    }

    fn statement(self) -> Statement {
        Statement::from_sql_and_values(self.backend, self.text, self.values)
    }
}

/// `"series_id" = (SELECT "id" FROM "metric_series" WHERE "run_uuid" = ? AND "key" = ?)`: the
/// rows of one run's metric (the subquery is evaluated once per statement).
fn series_of(sql: &mut Sql, run_id: &str, key: &str) {
    sql.push(r#""series_id" = (SELECT "id" FROM "metric_series" WHERE "run_uuid" = "#)
        .bind(run_id)
        .push(r#" AND "key" = "#)
        .bind(key)
        .push(")");
}

/// A point of a `step, timestamp, value, is_nan` row.
fn sample_at(row: &QueryResult, first_column: usize) -> Result<Sample> {
    let value: f64 = row.try_get_by_index(first_column + 2)?;
    let is_nan: bool = row.try_get_by_index(first_column + 3)?;
    Ok(Sample {
        step: row.try_get_by_index(first_column)?,
        timestamp: row.try_get_by_index(first_column + 1)?,
        value: loaded_value(value, is_nan),
    })
}

fn metric_point(key: &str, s: Sample) -> MetricPoint {
    MetricPoint { key: key.to_owned(), value: s.value, timestamp: s.timestamp, step: s.step }
}

/// The columns of a tile's four points, in [`Summary`] order (first, last, min, max).
const TILE_POINT_COLUMNS: &str = r#""first_step", "first_timestamp", "first_value", "first_is_nan", "last_step", "last_timestamp", "last_value", "last_is_nan", "min_step", "min_timestamp", "min_value", "min_is_nan", "max_step", "max_timestamp", "max_value", "max_is_nan""#;

/// How a stored tile and a proposed one (`excluded`) merge: each point column keeps the
/// stored value unless the proposed point beats the stored one, by the orders of
/// [`crate::downsample`] (SQLite and PostgreSQL compare row values lexicographically).
fn tile_merge_sql() -> String {
    let ex = |c: &str| format!(r#"excluded."{c}""#);
    let st = |c: &str| format!(r#""metric_tiles"."{c}""#);
    let row = |f: &dyn Fn(&str) -> String, cols: &[&str]| {
        format!("({})", cols.iter().map(|c| f(c)).collect::<Vec<_>>().join(", "))
    };
    let first = ["first_step", "first_timestamp", "first_value", "first_is_nan"];
    let last = ["last_step", "last_timestamp", "last_value", "last_is_nan"];
    let min_key = ["min_is_nan", "min_value", "min_step", "min_timestamp"];
    let beats = [
        ("first", format!("{} < {}", row(&ex, &first), row(&st, &first))),
        ("last", format!("{} > {}", row(&ex, &last), row(&st, &last))),
        ("min", format!("{} < {}", row(&ex, &min_key), row(&st, &min_key))),
        (
            "max",
            format!(
                "{n} < {sn} OR ({n} = {sn} AND ({v} > {sv} OR ({v} = {sv} AND {t} < {stt})))",
                n = ex("max_is_nan"),
                sn = st("max_is_nan"),
                v = ex("max_value"),
                sv = st("max_value"),
                t = row(&ex, &["max_step", "max_timestamp"]),
                stt = row(&st, &["max_step", "max_timestamp"]),
            ),
        ),
    ];
    let mut sets = Vec::new();
    for (point, cond) in &beats {
        for field in ["step", "timestamp", "value", "is_nan"] {
            let c = format!("{point}_{field}");
            sets.push(format!(r#""{c}" = CASE WHEN {cond} THEN {} ELSE {} END"#, ex(&c), st(&c)));
        }
    }
    sets.join(", ")
}

/// The statements that store points of one run: the points (one already stored is skipped,
/// so a retry stores nothing twice) and the tiles of their steps (the latest values are the
/// caller's). Built before the write transaction begins, so that the writer is held only for
/// the database's own work.
pub(crate) struct PointWrites(Vec<Statement>);

impl PointWrites {
    /// The statements for `metrics` of `run_id` on `backend`, then `after` (on SQLite all of
    /// them one call to the driver: see [`join_sqlite`]).
    ///
    /// See [`RowsSql`] for how the run id and the keys are bound.
    pub(crate) fn new(backend: DbBackend, run_id: &str, metrics: &[MetricPoint], after: Vec<Statement>) -> PointWrites {
        // The batch's samples of each key, in the batch's order: the SQLite inserts and the
        // tiles both read them.
        let mut by_key: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
        for m in metrics {
            by_key.entry(m.key.as_str()).or_default().push(Sample {
                step: m.step,
                timestamp: m.timestamp,
                value: m.value,
            });
        }
        // The series of keys seen for the first time, then the points by series id.
        let mut statements = series_inserts(backend, run_id, &by_key);
        if backend == DbBackend::Sqlite {
            statements.extend(sqlite_point_inserts(run_id, metrics.len(), &by_key));
        } else {
            for chunk in metrics.chunks(POINT_ROWS) {
                let mut sql = RowsSql::new(
                    backend,
                    r#"INSERT INTO "metrics" ("series_id", "step", "timestamp", "value", "is_nan") SELECT "s"."id", "v"."column2", "v"."column3", "v"."column4", "v"."column5" FROM (VALUES "#,
                    run_id,
                    chunk.len() * 5,
                );
                for (i, m) in chunk.iter().enumerate() {
                    let (value, is_nan) = crate::stored_value(m.value);
                    sql.text.push_str(if i == 0 { "(" } else { ", (" });
                    sql.key(&m.key);
                    sql.text.push_str(", ");
                    sql.bind(m.step);
                    sql.text.push_str(", ");
                    sql.bind(m.timestamp);
                    sql.text.push_str(", ");
                    sql.bind(value);
                    sql.text.push_str(", ");
                    sql.bind(is_nan);
                    sql.text.push(')');
                }
                sql.text.push_str(SERIES_JOIN);
                sql.run();
                sql.text.push_str(r#" AND "s"."key" = "v"."column1" ON CONFLICT DO NOTHING"#);
                statements.push(sql.statement());
            }
        }

        // Tiles: the batch's own summaries per (key, level, tile), merged into the stored ones.
        let mut tiles: Vec<(&str, u8, i64, Summary)> = Vec::new();
        for (key, points) in &by_key {
            tiles.extend(downsample::tiles_of(points).into_iter().map(|(level, tile, s)| (*key, level, tile, s)));
        }
        static MERGE: OnceLock<String> = OnceLock::new();
        // The VALUES rows' columns after the key (level, tile, the 16 point columns).
        static TILE_SELECT: OnceLock<String> = OnceLock::new();
        let merge = MERGE.get_or_init(tile_merge_sql);
        for chunk in tiles.chunks(TILE_ROWS) {
            let mut sql = RowsSql::new(
                backend,
                r#"INSERT INTO "metric_tiles" ("series_id", "level", "tile", "#,
                run_id,
                chunk.len() * 19,
            );
            sql.text.push_str(TILE_POINT_COLUMNS);
            sql.text.push_str(TILE_SELECT.get_or_init(|| {
                let columns: String = (2..=19).map(|c| format!(r#", "v"."column{c}""#)).collect();
                format!(r#") SELECT "s"."id"{columns} FROM (VALUES "#)
            }));
            for (i, &(key, level, tile, s)) in chunk.iter().enumerate() {
                sql.text.push_str(if i == 0 { "(" } else { ", (" });
                sql.key(key);
                sql.text.push_str(", ");
                sql.bind(i16::from(level));
                sql.text.push_str(", ");
                sql.bind(tile);
                for p in [s.first, s.last, s.min, s.max] {
                    let (value, is_nan) = p.stored();
                    sql.text.push_str(", ");
                    sql.bind(p.step);
                    sql.text.push_str(", ");
                    sql.bind(p.timestamp);
                    sql.text.push_str(", ");
                    sql.bind(value);
                    sql.text.push_str(", ");
                    sql.bind(is_nan);
                }
                sql.text.push(')');
            }
            sql.text.push_str(SERIES_JOIN);
            sql.run();
            sql.text.push_str(
                r#" AND "s"."key" = "v"."column1" ON CONFLICT ("series_id", "level", "tile") DO UPDATE SET "#,
            );
            sql.text.push_str(merge);
            statements.push(sql.statement());
        }
        statements.extend(after);
        if backend == DbBackend::Sqlite {
            statements = join_sqlite(statements);
        }
        PointWrites(statements)
    }

    /// Run the statements inside `txn`.
    pub(crate) async fn run(self, txn: &DatabaseTransaction) -> Result<()> {
        for statement in self.0 {
            txn.execute_raw(statement).await?;
        }
        Ok(())
    }
}

/// SQLite: the point inserts of one run, up to [`POINT_ROWS`] points a statement, binding 3
/// values a point. The run id and each key are bound once per statement (every placeholder a
/// plain `?`, in text order: see [`RowsSql`] for why not numbered ones) to find the key's
/// series id (a constant subquery, evaluated once), one `SELECT` per key joined by
/// `UNION ALL`, the points of a key a `VALUES` list of (step, timestamp, value) with NaN bound
/// as NULL and stored as (0, is_nan):
///
/// ```sql
/// INSERT INTO "metrics" (...) SELECT (SELECT "id" FROM "metric_series" WHERE "run_uuid" = ? AND "key" = ?),
///   "column1", "column2", coalesce("column3", 0.0), "column3" IS NULL
///   FROM (VALUES (?, ?, ?), ...) WHERE true UNION ALL SELECT ... ON CONFLICT DO NOTHING
/// ```
///
/// Half the values of one row per point (6), and no copy of the run id and key per point: the
/// driver's binding, its allocations and SQLite's per-call locking were most of the writer's
/// time. A statement holds at most [`MAX_KEYS_PER_INSERT`] keys (SQLite's limit on a compound
/// `SELECT` is 500 terms). `by_key`: the batch's samples of each key; `points`: how many in all.
fn sqlite_point_inserts(run_id: &str, points: usize, by_key: &BTreeMap<&str, Vec<Sample>>) -> Vec<Statement> {
    let mut statements = Vec::new();
    let mut text = String::new();
    let mut values: Vec<Value> = Vec::new();
    let (mut rows, mut keys) = (0usize, 0usize);
    let flush = |text: &mut String, values: &mut Vec<Value>, statements: &mut Vec<Statement>| {
        if !values.is_empty() {
            text.push_str(" ON CONFLICT DO NOTHING");
            let sql = std::mem::take(text);
            statements.push(Statement::from_sql_and_values(DbBackend::Sqlite, sql, std::mem::take(values)));
        }
    };
    for (&key, samples) in by_key {
        for part in samples.chunks(POINT_ROWS) {
            if rows + part.len() > POINT_ROWS || keys == MAX_KEYS_PER_INSERT {
                flush(&mut text, &mut values, &mut statements);
                (rows, keys) = (0, 0);
            }
            if values.is_empty() {
                text.reserve(200 + POINT_ROWS.min(points) * 11);
                values.reserve(2 + 3 * POINT_ROWS.min(points));
                text.push_str(r#"INSERT INTO "metrics" ("series_id", "step", "timestamp", "value", "is_nan") "#);
            } else {
                text.push_str(" UNION ALL ");
            }
            text.push_str(
                r#"SELECT (SELECT "id" FROM "metric_series" WHERE "run_uuid" = ? AND "key" = ?), "column1", "column2", coalesce("column3", 0.0), "column3" IS NULL FROM (VALUES "#,
            );
            values.push(Value::from(run_id));
            values.push(Value::from(key));
            for (i, m) in part.iter().enumerate() {
                text.push_str(if i == 0 { "(?, ?, ?)" } else { ", (?, ?, ?)" });
                values.push(Value::from(m.step));
                values.push(Value::from(m.timestamp));
                values.push(Value::from((!m.value.is_nan()).then_some(m.value)));
            }
            text.push_str(") WHERE true");
            rows += part.len();
            keys += 1;
        }
    }
    flush(&mut text, &mut values, &mut statements);
    statements
}

/// Most keys in one SQLite point insert (one compound `SELECT` term each; SQLite allows 500).
const MAX_KEYS_PER_INSERT: usize = 400;

/// The end of a multi-row insert whose rows are a `VALUES` list with the key first: each row's
/// series, found by the run id (bound next) and the row's key.
const SERIES_JOIN: &str = r#") AS "v" CROSS JOIN "metric_series" AS "s" WHERE "s"."run_uuid" = "#;

/// The series of the batch's keys that the run does not have yet (most batches add none).
///
/// SQLite: `INSERT ... VALUES ... ON CONFLICT DO NOTHING` (an id is taken only by a row
/// inserted). PostgreSQL: rows of keys not yet there only, since a conflicting insert would
/// still draw an id from the sequence.
fn series_inserts(backend: DbBackend, run_id: &str, by_key: &BTreeMap<&str, Vec<Sample>>) -> Vec<Statement> {
    let keys: Vec<&str> = by_key.keys().copied().collect();
    keys.chunks(POINT_ROWS)
        .map(|chunk| {
            let mut sql = RowsSql::new(backend, "", run_id, chunk.len() * 2);
            if backend == DbBackend::Sqlite {
                sql.text.push_str(r#"INSERT INTO "metric_series" ("run_uuid", "key") VALUES "#);
                for (i, key) in chunk.iter().enumerate() {
                    sql.text.push_str(if i == 0 { "(" } else { ", (" });
                    sql.run();
                    sql.text.push_str(", ");
                    sql.key(key);
                    sql.text.push(')');
                }
                sql.text.push_str(" ON CONFLICT DO NOTHING");
            } else {
                sql.text.push_str(r#"INSERT INTO "metric_series" ("run_uuid", "key") SELECT $1, "v"."column1" FROM (VALUES "#);
                for (i, key) in chunk.iter().enumerate() {
                    sql.text.push_str(if i == 0 { "(" } else { ", (" });
                    sql.key(key);
                    sql.text.push(')');
                }
                sql.text.push_str(
                    r#") AS "v" WHERE NOT EXISTS (SELECT 1 FROM "metric_series" AS "s" WHERE "s"."run_uuid" = $1 AND "s"."key" = "v"."column1") ON CONFLICT DO NOTHING"#,
                );
            }
            sql.statement()
        })
        .collect()
}

/// SQLite: `statements` as one multi-statement call (`;`-separated, the values in order): the
/// driver runs them in turn on its worker thread, one round trip instead of one each.
fn join_sqlite(statements: Vec<Statement>) -> Vec<Statement> {
    if statements.len() < 2 {
        return statements;
    }
    let mut text = String::with_capacity(statements.iter().map(|s| s.sql.len() + 2).sum());
    let mut values = Vec::with_capacity(statements.iter().map(|s| s.values.as_ref().map_or(0, |v| v.0.len())).sum());
    for s in statements {
        if !text.is_empty() {
            text.push_str("; ");
        }
        text.push_str(&s.sql);
        if let Some(v) = s.values {
            values.extend(v.0);
        }
    }
    vec![Statement::from_sql_and_values(DbBackend::Sqlite, text, values)]
}

/// The upserts of the batch's latest point of each key (`latest`), each kept only where it
/// beats the stored one by MLflow's order (step, then timestamp, then value).
fn latest_upserts(backend: DbBackend, run_id: &str, latest: &[(&str, StoredPoint)]) -> Vec<Statement> {
    let newer = excluded("step").gt(stored_latest(latest_metric::Column::Step)).or(excluded("step")
        .eq(stored_latest(latest_metric::Column::Step))
        .and(
            excluded("timestamp").gt(stored_latest(latest_metric::Column::Timestamp)).or(excluded("timestamp")
                .eq(stored_latest(latest_metric::Column::Timestamp))
                .and(excluded("value").gt(stored_latest(latest_metric::Column::Value)))),
        ));
    latest
        .chunks(CHUNK_ROWS)
        .map(|chunk| {
            latest_metric::Entity::insert_many(chunk.iter().map(|(key, p)| latest_metric::ActiveModel {
                run_uuid: ActiveValue::Set(run_id.to_owned()),
                key: ActiveValue::Set((*key).to_owned()),
                value: ActiveValue::Set(p.value),
                timestamp: ActiveValue::Set(p.timestamp),
                step: ActiveValue::Set(p.step),
                is_nan: ActiveValue::Set(p.is_nan),
            }))
            .on_conflict(
                OnConflict::columns([latest_metric::Column::RunUuid, latest_metric::Column::Key])
                    .update_columns([
                        latest_metric::Column::Value,
                        latest_metric::Column::Timestamp,
                        latest_metric::Column::Step,
                        latest_metric::Column::IsNan,
                    ])
                    .action_and_where(newer.clone())
                    .to_owned(),
            )
            .build(backend)
        })
        .collect()
}

/// One `log_batch` call, owned, its statements built: what a group commit applies.
pub(crate) struct Batch {
    run_id: String,
    points: PointWrites,
    /// Params, one per key.
    params: Vec<(String, String)>,
    /// Tags, the last value of each key.
    tags: Vec<(String, String)>,
}

impl Batch {
    /// Prepare a batch; ParamChanged if it gives one param two values.
    pub(crate) fn new(
        backend: DbBackend,
        run_id: &str,
        metrics: &[MetricPoint],
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<Batch> {
        let mut unique: BTreeMap<&str, &str> = BTreeMap::new();
        for (key, value) in params {
            match unique.get(key.as_str()) {
                Some(&earlier) if earlier != value => {
                    return Err(StoreError::ParamChanged {
                        run_id: run_id.to_owned(),
                        key: key.clone(),
                        old: earlier.to_owned(),
                        new: value.clone(),
                    });
                }
                _ => {
                    unique.insert(key, value);
                }
            }
        }
        // The latest point of each key by (step, timestamp, value), MLflow's order.
        let mut latest: BTreeMap<&str, StoredPoint> = BTreeMap::new();
        for m in metrics {
            let candidate = StoredPoint::of(m);
            latest
                .entry(m.key.as_str())
                .and_modify(|best| {
                    if candidate.beats(best) {
                        *best = candidate;
                    }
                })
                .or_insert(candidate);
        }
        let latest: Vec<(&str, StoredPoint)> = latest.into_iter().collect();
        Ok(Batch {
            run_id: run_id.to_owned(),
            points: PointWrites::new(backend, run_id, metrics, latest_upserts(backend, run_id, &latest)),
            params: unique.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            tags: last_wins(tags),
        })
    }

    /// Apply the batch inside `txn`: NotFound if the run is absent, ParamChanged if a param
    /// has another value already (the caller rolls back then).
    async fn apply(self, txn: &DatabaseTransaction) -> Result<()> {
        self.apply_in(txn, None).await
    }

    /// [`Batch::apply`]; with `savepoint` (SQLite), the batch opens that savepoint in its first
    /// call to the driver and releases it in its last (a failure leaves it open for the caller
    /// to roll back to), so a batch in a group costs no round trips of its own for them.
    async fn apply_in(self, txn: &DatabaseTransaction, savepoint: Option<&str>) -> Result<()> {
        let run_id = self.run_id.as_str();
        if let (Some(sp), true, false) = (savepoint, self.params.is_empty(), self.points.0.is_empty()) {
            return self.apply_unchecked(txn, sp).await;
        }
        let exists = match savepoint {
            Some(sp) => {
                let sql = format!(r#"SAVEPOINT "{sp}"; SELECT 1 FROM "runs" WHERE "run_uuid" = ?"#);
                let check = Statement::from_sql_and_values(DbBackend::Sqlite, sql, [Value::from(run_id)]);
                txn.query_one_raw(check).await?.is_some()
            }
            None => run_exists(txn, run_id).await?,
        };
        if !exists {
            return Err(run_not_found(run_id));
        }

        // Params first: a change anywhere means nothing of the batch is written.
        let mut new_params: BTreeMap<&str, &str> = self.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let keys: Vec<&str> = new_params.keys().copied().collect();
        for chunk in keys.chunks(CHUNK_ROWS) {
            let stored = param::Entity::find()
                .filter(param::Column::RunUuid.eq(run_id))
                .filter(param::Column::Key.is_in(chunk.iter().copied()))
                .all(txn)
                .await?;
            for p in stored {
                let asked = new_params[p.key.as_str()];
                if p.value != asked {
                    return Err(StoreError::ParamChanged {
                        run_id: run_id.to_owned(),
                        key: p.key,
                        old: p.value,
                        new: asked.to_owned(),
                    });
                }
                new_params.remove(p.key.as_str());
            }
        }
        let new_params: Vec<(&str, &str)> = new_params.into_iter().collect();
        for chunk in new_params.chunks(CHUNK_ROWS) {
            param::Entity::insert_many(chunk.iter().map(|&(k, v)| param::ActiveModel {
                run_uuid: ActiveValue::Set(run_id.to_owned()),
                key: ActiveValue::Set(k.to_owned()),
                value: ActiveValue::Set(v.to_owned()),
            }))
            .on_conflict_do_nothing()
            .exec_without_returning(txn)
            .await?;
        }

        // Every point (one already stored is skipped), the tiles of their steps and the
        // latest value of each key; the savepoint's release with them when nothing follows.
        let release = savepoint.map(|sp| format!(r#"RELEASE "{sp}""#));
        let mut points = self.points.0;
        let mut released = false;
        if let (Some(release), true, Some(last)) = (&release, self.tags.is_empty(), points.last_mut()) {
            last.sql.push_str("; ");
            last.sql.push_str(release);
            released = true;
        }
        PointWrites(points).run(txn).await?;

        write_tags(txn, run_id, &self.tags).await?;
        if let (Some(release), false) = (release, released) {
            txn.execute_unprepared(&release).await?;
        }
        Ok(())
    }
}

impl Batch {
    /// [`Batch::apply_in`] of a batch with points and without params on SQLite: everything in
    /// one call to the driver (open the savepoint, write, release), with no read of the run
    /// first. A batch of an absent run cannot be written: the series and latest-value rows
    /// reference `runs`, so the foreign keys refuse them; only then is the run looked up, to
    /// tell NotFound from another failure. The savepoint is left open on failure for the
    /// caller to roll back to.
    async fn apply_unchecked(self, txn: &DatabaseTransaction, savepoint: &str) -> Result<()> {
        let run_id = self.run_id;
        let mut points = self.points.0;
        let first = points.first_mut().expect("apply_in sends only batches with points");
        first.sql.insert_str(0, &format!(r#"SAVEPOINT "{savepoint}"; "#));
        if self.tags.is_empty() {
            let last = points.last_mut().expect("at least one statement");
            last.sql.push_str(&format!(r#"; RELEASE "{savepoint}""#));
        }
        if let Err(e) = PointWrites(points).run(txn).await {
            return Err(match run_exists(txn, &run_id).await {
                Ok(false) => run_not_found(&run_id),
                _ => e,
            });
        }
        if !self.tags.is_empty() {
            write_tags(txn, &run_id, &self.tags).await?;
            txn.execute_unprepared(&format!(r#"RELEASE "{savepoint}""#)).await?;
        }
        Ok(())
    }
}

/// Tags are mutable: the last value wins.
async fn write_tags(txn: &DatabaseTransaction, run_id: &str, tags: &[(String, String)]) -> Result<()> {
    for chunk in tags.chunks(CHUNK_ROWS) {
        tag::Entity::insert_many(chunk.iter().map(|(k, v)| tag::ActiveModel {
            run_uuid: ActiveValue::Set(run_id.to_owned()),
            key: ActiveValue::Set(k.clone()),
            value: ActiveValue::Set(v.clone()),
        }))
        .on_conflict(
            OnConflict::columns([tag::Column::RunUuid, tag::Column::Key]).update_column(tag::Column::Value).to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    }
    Ok(())
}

/// A batch waiting for its group, and where its outcome goes.
type Waiting = (Batch, oneshot::Sender<Result<()>>);

/// The batches waiting to be written, and the writer's turn (see the module docs).
#[derive(Default)]
pub(crate) struct CommitQueue {
    waiting: Mutex<Vec<Waiting>>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for CommitQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitQueue")
    }
}

/// An error for every batch of a group that a shared step (begin, commit) failed for.
fn group_error(e: &StoreError) -> StoreError {
    StoreError::Db(sea_orm::DbErr::Custom(format!("the write transaction failed: {e}")))
}

impl Store {
    /// Write `batch` in a group commit; returns once the transaction holding it committed
    /// (or with its own error).
    pub(crate) async fn commit_batch(&self, batch: Batch) -> Result<()> {
        let (done, mut outcome) = oneshot::channel();
        self.commits.waiting.lock().unwrap_or_else(|e| e.into_inner()).push((batch, done));
        loop {
            if let Ok(result) = outcome.try_recv() {
                return result;
            }
            let turn = self.commits.turn.clone().lock_owned().await;
            if let Ok(result) = outcome.try_recv() {
                return result;
            }
            let group: Vec<Waiting> = {
                let mut waiting = self.commits.waiting.lock().unwrap_or_else(|e| e.into_inner());
                let n = waiting.len().min(MAX_GROUP);
                waiting.drain(..n).collect()
            };
            if group.is_empty() {
                // Not waiting and not answered: the group that held it was lost.
                drop(turn);
                return outcome.await.unwrap_or_else(|_| {
                    Err(StoreError::Db(sea_orm::DbErr::Custom("the write of this batch was abandoned".into())))
                });
            }
            let store = self.clone();
            let _ = tokio::spawn(async move {
                store.write_group(group).await;
                drop(turn);
            })
            .await;
        }
    }

    /// One write transaction for `group`, each batch in a savepoint when there are several.
    async fn write_group(&self, group: Vec<Waiting>) {
        let txn = match self.begin_write().await {
            Ok(txn) => txn,
            Err(e) => {
                for (_, done) in group {
                    let _ = done.send(Err(group_error(&e)));
                }
                return;
            }
        };
        if txn.get_database_backend() == DbBackend::Sqlite {
            return write_group_sqlite(txn, group).await;
        }
        if group.len() == 1 {
            let (batch, done) = group.into_iter().next().expect("one batch");
            let result = match batch.apply(&txn).await {
                Ok(()) => txn.commit().await.map_err(StoreError::from),
                Err(e) => {
                    let _ = txn.rollback().await;
                    Err(e)
                }
            };
            let _ = done.send(result);
            return;
        }
        let mut outcomes: Vec<(oneshot::Sender<Result<()>>, Result<()>)> = Vec::with_capacity(group.len());
        let mut broken: Option<StoreError> = None;
        for (batch, done) in group {
            if let Some(e) = &broken {
                outcomes.push((done, Err(group_error(e))));
                continue;
            }
            let savepoint = match txn.begin().await {
                Ok(sp) => sp,
                Err(e) => {
                    let e = StoreError::from(e);
                    outcomes.push((done, Err(group_error(&e))));
                    broken = Some(e);
                    continue;
                }
            };
            match batch.apply(&savepoint).await {
                Ok(()) => match savepoint.commit().await {
                    Ok(()) => outcomes.push((done, Ok(()))),
                    Err(e) => {
                        let e = StoreError::from(e);
                        outcomes.push((done, Err(group_error(&e))));
                        broken = Some(e);
                    }
                },
                Err(e) => {
                    if let Err(rollback) = savepoint.rollback().await {
                        broken = Some(StoreError::from(rollback));
                    }
                    outcomes.push((done, Err(e)));
                }
            }
        }
        finish_group(txn, outcomes, broken).await;
    }
}

/// SQLite's group write: each batch in a savepoint opened and released inside its own calls to
/// the driver ([`Batch::apply_in`]), so a batch costs two round trips to the driver's worker
/// thread (savepoint and run check; writes and release) plus its params' reads, and the group
/// one begin and one commit. A failed batch is rolled back to its savepoint alone.
async fn write_group_sqlite(txn: DatabaseTransaction, group: Vec<Waiting>) {
    const SAVEPOINT: &str = "capstan_batch";
    let mut outcomes: Vec<(oneshot::Sender<Result<()>>, Result<()>)> = Vec::with_capacity(group.len());
    let mut broken: Option<StoreError> = None;
    for (batch, done) in group {
        if let Some(e) = &broken {
            outcomes.push((done, Err(group_error(e))));
            continue;
        }
        match batch.apply_in(&txn, Some(SAVEPOINT)).await {
            Ok(()) => outcomes.push((done, Ok(()))),
            Err(e) => {
                // Undo what the batch wrote, whichever statement failed (a savepoint that was
                // never opened makes this fail: then the transaction's state is unknown).
                let undo = format!(r#"ROLLBACK TO "{SAVEPOINT}"; RELEASE "{SAVEPOINT}""#);
                if let Err(undo) = txn.execute_unprepared(&undo).await {
                    broken = Some(StoreError::from(undo));
                }
                outcomes.push((done, Err(e)));
            }
        }
    }
    finish_group(txn, outcomes, broken).await;
}

/// The end of a group write: commit unless a shared step `broke` it (then roll back), and answer
/// every batch: its own outcome, or the commit's failure for a batch that had succeeded.
async fn finish_group(
    txn: DatabaseTransaction,
    outcomes: Vec<(oneshot::Sender<Result<()>>, Result<()>)>,
    broken: Option<StoreError>,
) {
    let committed = match broken {
        Some(e) => {
            let _ = txn.rollback().await;
            Err(e)
        }
        None => txn.commit().await.map_err(StoreError::from),
    };
    for (done, result) in outcomes {
        let result = match (&committed, result) {
            (Err(e), Ok(())) => Err(group_error(e)),
            (_, result) => result,
        };
        let _ = done.send(result);
    }
}

/// Whether the run exists, read through `conn`.
async fn run_exists<C: ConnectionTrait>(conn: &C, run_id: &str) -> Result<bool> {
    let mut sql = Sql::new(conn.get_database_backend(), r#"SELECT 1 FROM "runs" WHERE "run_uuid" = "#);
    sql.bind(run_id);
    Ok(conn.query_one_raw(sql.statement()).await?.is_some())
}

/// Points of one metric of a run with steps in `lo..=hi`, in history order, at most `limit`
/// after skipping `offset`.
async fn points_between<C: ConnectionTrait>(
    conn: &C,
    run_id: &str,
    key: &str,
    (lo, hi): (i64, i64),
    offset: u64,
    limit: Option<u64>,
) -> Result<Vec<Sample>> {
    let mut sql =
        Sql::new(conn.get_database_backend(), r#"SELECT "step", "timestamp", "value", "is_nan" FROM "metrics" WHERE "#);
    series_of(&mut sql, run_id, key);
    if lo > i64::MIN {
        sql.push(r#" AND "step" >= "#).bind(lo);
    }
    if hi < i64::MAX {
        sql.push(r#" AND "step" <= "#).bind(hi);
    }
    sql.push(r#" ORDER BY "step", "timestamp", "value", "is_nan""#);
    if let Some(limit) = limit {
        sql.push(" LIMIT ").bind(i64::try_from(limit).unwrap_or(i64::MAX));
    }
    if offset > 0 {
        if limit.is_none() {
            // SQLite accepts OFFSET only after a LIMIT; -1 and NULL mean none.
            sql.push(if conn.get_database_backend() == DbBackend::Postgres { " LIMIT ALL" } else { " LIMIT -1" });
        }
        sql.push(" OFFSET ").bind(i64::try_from(offset).unwrap_or(i64::MAX));
    }
    fetch_samples(conn, sql, 1).await
}

/// The last step of one metric of a run in `lo..=hi`.
async fn last_step_between<C: ConnectionTrait>(
    conn: &C,
    run_id: &str,
    key: &str,
    lo: i64,
    hi: i64,
) -> Result<Option<i64>> {
    let mut sql = Sql::new(conn.get_database_backend(), r#"SELECT "step" FROM "metrics" WHERE "#);
    series_of(&mut sql, run_id, key);
    sql.push(r#" AND "step" >= "#).bind(lo).push(r#" AND "step" <= "#).bind(hi);
    sql.push(r#" ORDER BY "step" DESC LIMIT 1"#);
    match conn.query_one_raw(sql.statement()).await? {
        Some(row) => Ok(Some(row.try_get_by_index(0)?)),
        None => Ok(None),
    }
}

/// The summaries of tiles `first..=last` of `level`.
async fn tiles_between<C: ConnectionTrait>(
    conn: &C,
    run_id: &str,
    key: &str,
    level: u8,
    first: i64,
    last: i64,
) -> Result<Vec<Summary>> {
    let mut sql = Sql::new(conn.get_database_backend(), "SELECT ");
    sql.push(TILE_POINT_COLUMNS).push(r#" FROM "metric_tiles" WHERE "#);
    series_of(&mut sql, run_id, key);
    sql.push(r#" AND "level" = "#).bind(i16::from(level));
    sql.push(r#" AND "tile" >= "#).bind(first).push(r#" AND "tile" <= "#).bind(last);
    let samples = fetch_samples(conn, sql, 4).await?;
    Ok(samples.chunks_exact(4).map(|p| Summary { first: p[0], last: p[1], min: p[2], max: p[3] }).collect())
}

/// The rows of `select` (a SELECT of `per_row` groups of step, timestamp, value and is_nan
/// columns) as points, `per_row` per row, in the rows' order.
async fn fetch_samples<C: ConnectionTrait>(conn: &C, select: Sql, per_row: usize) -> Result<Vec<Sample>> {
    let rows = conn.query_all_raw(select.statement()).await?;
    let mut out = Vec::with_capacity(rows.len() * per_row);
    for row in &rows {
        for i in 0..per_row {
            out.push(sample_at(row, i * 4)?);
        }
    }
    Ok(out)
}

/// The downsampled points of one metric of one run (see [`Store::metric_history_bulk_interval`]).
async fn bulk_interval_one<C: ConnectionTrait>(
    conn: &C,
    run_id: &str,
    key: &str,
    (lo, hi): (i64, i64),
    max_results: usize,
) -> Result<Vec<Sample>> {
    if lo > hi {
        return Ok(Vec::new());
    }
    // Few enough points: all of them (the probe reads at most one more than asked).
    let probe = points_between(conn, run_id, key, (lo, hi), 0, Some(max_results as u64 + 1)).await?;
    if probe.len() <= max_results {
        return Ok(probe);
    }
    let first = probe[0].step;
    let last = last_step_between(conn, run_id, key, lo, hi).await?.unwrap_or(first);
    let grid = downsample::Grid::new(first, last, downsample::group_count(max_results));
    let (start, end) = downsample::cover(lo, hi, first, last, grid.level);
    let mut groups: Vec<Option<Summary>> = vec![None; grid.group_len()];
    let mut add = |s: Summary| match &mut groups[grid.group_of(s.first.step)] {
        Some(g) => g.merge(&s),
        slot => *slot = Some(s),
    };
    for piece in downsample::decompose(start, end, grid.level) {
        match piece {
            Piece::Tiles { level, first, last } => {
                for s in tiles_between(conn, run_id, key, level, first, last).await? {
                    add(s);
                }
            }
            Piece::Steps { first, last } => {
                for p in points_between(conn, run_id, key, (first, last), 0, None).await? {
                    add(Summary::of(p));
                }
            }
        }
    }
    let summaries: Vec<Summary> = groups.into_iter().flatten().collect();
    Ok(downsample::select(&summaries, max_results))
}

impl Store {
    /// Downsampled histories of one metric of several runs, for charts
    /// (`metrics/get-history-bulk-interval`): per run, the points with steps in
    /// `start_step..=end_step` (each bound optional), all of them when they are at most
    /// `max_results` (≥ 1), else at most `max_results` chosen by [`downsample::downsample`]
    /// (evenly spaced step groups, each with its first, last, lowest and highest point).
    /// Computed from tile summaries: a few hundred rows per run however long the history.
    /// Each point comes with its run id, by run (in the order given) then history order.
    /// NotFound if a run is absent.
    pub async fn metric_history_bulk_interval(
        &self,
        run_ids: &[String],
        key: &str,
        start_step: Option<i64>,
        end_step: Option<i64>,
        max_results: usize,
    ) -> Result<Vec<(String, MetricPoint)>> {
        let max_results = max_results.max(1);
        let range = (start_step.unwrap_or(i64::MIN), end_step.unwrap_or(i64::MAX));
        // One read transaction: one snapshot for every run.
        let txn = self.db.begin().await?;
        let mut out = Vec::new();
        for run_id in run_ids {
            if !run_exists(&txn, run_id).await? {
                return Err(run_not_found(run_id));
            }
            let points = bulk_interval_one(&txn, run_id, key, range, max_results).await?;
            out.extend(points.into_iter().map(|p| (run_id.clone(), metric_point(key, p))));
        }
        txn.commit().await?;
        Ok(out)
    }

    /// One page of the full history of a metric (`metrics/get-history`): up to `limit` points
    /// after the first `offset`, in history order (step, timestamp, value), and whether more
    /// follow. An index range scan: pages of a long history cost the same. NotFound if the
    /// run is absent.
    pub async fn metric_history_page(
        &self,
        run_id: &str,
        key: &str,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<MetricPoint>, bool)> {
        let txn = self.db.begin().await?;
        if !run_exists(&txn, run_id).await? {
            return Err(run_not_found(run_id));
        }
        let mut points =
            points_between(&txn, run_id, key, (i64::MIN, i64::MAX), offset, Some(limit.saturating_add(1))).await?;
        txn.commit().await?;
        let more = points.len() as u64 > limit;
        points.truncate(limit as usize);
        Ok((points.into_iter().map(|p| metric_point(key, p)).collect(), more))
    }
}
