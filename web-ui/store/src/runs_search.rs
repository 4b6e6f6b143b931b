//! Experiments and runs beyond create/get/log: their lifecycle (delete, restore, rename,
//! tags), run inputs and outputs (datasets, logged models), and search.
//!
//! # How search works
//!
//! A search is one SQL query over the searched table (runs, experiments, registered models,
//! model versions) that scopes (experiments, lifecycle stage), filters and orders, read in
//! pages with LIMIT/OFFSET. The parsed filter ([`capstan_search::Expr`]) is translated to SQL
//! by [`filter_sql`]: attributes become column comparisons, params, tags and metrics
//! `EXISTS` subqueries on their tables (metrics on `latest_metrics`), datasets subqueries on
//! `inputs`/`datasets`/`input_tags`. Each comparison translates to a condition that holds at
//! least wherever the comparison does (a superset), and usually exactly there. When every
//! comparison is exact the SQL result is the answer and a page is one `LIMIT n+1 OFFSET k`.
//! Otherwise (case-insensitive `ILIKE` on non-ASCII patterns, `attributes.user_id`) the
//! candidates are read in chunks and each is checked with [`capstan_search::matches`] against
//! just the metrics, params and tags the filter names, so memory stays bounded by the chunk,
//! not the table. Full records (every metric, param and tag) are loaded only for the rows of
//! the page returned.
//!
//! Page tokens are offsets into that ordered stream (MLflow's scheme: base64 of
//! `{"offset": N}`, see [`encode_page_token`]); the order always ends with the unique key,
//! so it is total and a token stays valid while the data does not change.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;

use capstan_search::{compare_str, AttrKind, AttrValue, Comparison, Entity, Expr as Filter, Op, OrderBy, RunView};
use capstan_search::{SearchTarget, Value as FilterValue};
use sea_orm::sea_query::{Alias, BinOper, Expr, ExprTrait, Func, JoinType, Order, Query, SelectStatement};
use sea_orm::{
    ActiveValue, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, FromQueryResult,
    QueryFilter, QueryOrder,
};

use crate::entities::{dataset, experiment, experiment_tag, input, input_tag, latest_metric, param, run, tag};
use crate::{
    loaded_value, now_ms, parse_experiment_id, run_not_found, run_record, ExperimentRecord, MetricPoint, Result,
    RunRecord, Store, StoreError, CHUNK_ROWS,
};

/// The alias of the searched table in every search query.
pub(crate) const MAIN: &str = "t";
/// Tag holding a run's user (what `attributes.user_id` compares).
const TAG_USER: &str = "mlflow.user";
/// Input tag holding a dataset's context (`datasets.context`).
pub const TAG_DATASET_CONTEXT: &str = "mlflow.data.context";
/// Candidates read per query when the filter must be checked in memory.
const SCAN_CHUNK_MIN: u64 = 500;
const SCAN_CHUNK_MAX: u64 = 5000;

/// Which lifecycle stages a search returns (MLflow's `ViewType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ViewType {
    /// Only active objects.
    #[default]
    ActiveOnly,
    /// Only deleted objects.
    DeletedOnly,
    /// Both.
    All,
}

impl ViewType {
    /// The lifecycle stages it covers.
    pub fn stages(self) -> &'static [&'static str] {
        match self {
            ViewType::ActiveOnly => &["active"],
            ViewType::DeletedOnly => &["deleted"],
            ViewType::All => &["active", "deleted"],
        }
    }
}

/// One page of search results; `next_offset` is where the next page starts (None: this was
/// the last page).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The results, in order.
    pub items: Vec<T>,
    /// Offset of the next page, if there is one.
    pub next_offset: Option<u64>,
}

/// A dataset (MLflow's shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRecord {
    /// Name.
    pub name: String,
    /// Digest.
    pub digest: String,
    /// Source type.
    pub source_type: String,
    /// Source (JSON).
    pub source: String,
    /// Schema (JSON).
    pub schema: Option<String>,
    /// Profile (JSON).
    pub profile: Option<String>,
}

/// A dataset logged as an input of a run, with the input's tags (`mlflow.data.context`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetInputRecord {
    /// The dataset.
    pub dataset: DatasetRecord,
    /// Tags of this input.
    pub tags: Vec<(String, String)>,
}

/// A run's inputs and outputs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunIo {
    /// Datasets.
    pub dataset_inputs: Vec<DatasetInputRecord>,
    /// Logged models used as inputs.
    pub model_inputs: Vec<String>,
    /// Logged models produced, with the step.
    pub model_outputs: Vec<(String, i64)>,
}

/// A search for runs.
#[derive(Debug, Clone, Copy)]
pub struct RunQuery<'a> {
    /// Experiments to search (decimal ids; others match nothing).
    pub experiment_ids: &'a [String],
    /// Parsed filter (None: every run).
    pub filter: Option<&'a Filter>,
    /// Order (MLflow's default `start_time DESC` follows, then `run_id`).
    pub order_by: &'a [OrderBy],
    /// Lifecycle stages.
    pub view: ViewType,
    /// Page size (at least 1).
    pub max_results: usize,
    /// Where the page starts.
    pub offset: u64,
}

/// A search for experiments.
#[derive(Debug, Clone, Copy)]
pub struct ExperimentQuery<'a> {
    /// Parsed filter (None: every experiment).
    pub filter: Option<&'a Filter>,
    /// Order (default `creation_time DESC, experiment_id ASC`).
    pub order_by: &'a [OrderBy],
    /// Lifecycle stages.
    pub view: ViewType,
    /// Page size (at least 1).
    pub max_results: usize,
    /// Where the page starts.
    pub offset: u64,
}

// ---------------------------------------------------------------------------------------
// Page tokens
// ---------------------------------------------------------------------------------------

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The page token for `offset`: base64 of `{"offset": N}`, MLflow's format.
pub fn encode_page_token(offset: u64) -> String {
    base64_encode(format!("{{\"offset\": {offset}}}").as_bytes())
}

/// The offset in a page token made by [`encode_page_token`] (or by MLflow); None if it is
/// not one.
pub fn decode_page_token(token: &str) -> Option<u64> {
    let bytes = base64_decode(token.trim())?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("offset")?.as_u64()
}

// ---------------------------------------------------------------------------------------
// Filter → SQL
// ---------------------------------------------------------------------------------------

/// A child table of key/value pairs (params, tags, latest metrics) as a filter sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KvTable {
    /// Table name.
    pub table: &'static str,
    /// (child column, column of the searched table) pairs that join a row to its owner.
    pub link: &'static [(&'static str, &'static str)],
    /// Key column.
    pub key: &'static str,
    /// Value column.
    pub value: &'static str,
    /// For metrics: the column flagging a NaN value.
    pub is_nan: Option<&'static str>,
}

/// Where an attribute lives.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AttrSql {
    /// A column: (table alias, column).
    Col(&'static str, &'static str),
    /// The value of this run tag, "" when the run has none (`user_id` is `mlflow.user`).
    Tag(&'static str),
    /// Not a column: the comparison is checked in memory.
    InMemory,
}

/// How a search target maps to SQL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SqlSchema {
    /// Which attributes exist and their kinds.
    pub target: SearchTarget,
    /// Where an attribute (canonical name) lives.
    pub attr: fn(&str) -> AttrSql,
    /// `metrics.` table.
    pub metrics: Option<KvTable>,
    /// `params.` table.
    pub params: Option<KvTable>,
    /// `tags.` table.
    pub tags: Option<KvTable>,
    /// Whether `datasets.` comparisons apply (runs, joined on `t.run_uuid`).
    pub datasets: bool,
}

/// `alias.column`.
pub(crate) fn col(alias: &str, column: &str) -> Expr {
    Expr::col((Alias::new(alias), Alias::new(column)))
}

fn always() -> Expr {
    Expr::cust("1 = 1")
}

fn never() -> Expr {
    Expr::cust("1 = 0")
}

/// A LIKE pattern as a SQLite GLOB pattern (GLOB is case-sensitive, LIKE is not there).
pub(crate) fn like_to_glob(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 8);
    for c in pattern.chars() {
        match c {
            '%' => out.push('*'),
            '_' => out.push('?'),
            '*' => out.push_str("[*]"),
            '?' => out.push_str("[?]"),
            '[' => out.push_str("[[]"),
            c => out.push(c),
        }
    }
    out
}

/// A LIKE pattern for PostgreSQL, whose LIKE treats `\` as an escape (MLflow's has none).
fn pg_like(pattern: &str) -> String {
    pattern.replace('\\', "\\\\")
}

/// `column op value` for a string column: (condition, exact).
pub(crate) fn str_sql(column: Expr, op: Op, value: &FilterValue, backend: DbBackend) -> (Expr, bool) {
    match (op, value) {
        (Op::Eq, FilterValue::String(s)) => (column.eq(s.as_str()), true),
        (Op::Ne, FilterValue::String(s)) => (column.ne(s.as_str()), true),
        (Op::Like, FilterValue::String(p)) => match backend {
            DbBackend::Postgres => (column.like(pg_like(p)), true),
            _ => (column.binary(BinOper::Custom("GLOB"), Expr::val(like_to_glob(p))), true),
        },
        (Op::ILike, FilterValue::String(p)) => {
            // SQL lower-cases ASCII alike everywhere, the rest not: a non-ASCII character of
            // the pattern becomes '_' (any one character). Values where SQL and MLflow's
            // folding differ are let through too: with a 'k' in the pattern, those holding
            // the Kelvin sign (it folds to 'k'); on PostgreSQL, whose lower() makes 'İ' two
            // characters, those holding an 'İ'. The in-memory check narrows such supersets;
            // without them the translation is exact.
            let mut exact = true;
            let pattern: String = p
                .chars()
                .map(|c| {
                    if c.is_ascii() {
                        c.to_ascii_lowercase()
                    } else {
                        exact = false;
                        '_'
                    }
                })
                .collect();
            let mut cond = match backend {
                DbBackend::Postgres => Expr::from(Func::lower(column.clone())).like(pg_like(&pattern)),
                _ => Expr::from(Func::lower(column.clone())).like(pattern),
            };
            if p.contains(['k', 'K']) {
                exact = false;
                cond = cond.or(column.clone().like("%\u{212A}%"));
            }
            if backend == DbBackend::Postgres {
                exact = false;
                cond = cond.or(column.like("%\u{130}%"));
            }
            (cond, exact)
        }
        (Op::In, FilterValue::List(items)) => (column.is_in(items.iter().map(String::as_str)), true),
        (Op::NotIn, FilterValue::List(items)) => (column.is_not_in(items.iter().map(String::as_str)), true),
        (Op::IsNull, _) => (column.is_null(), true),
        (Op::IsNotNull, _) => (column.is_not_null(), true),
        _ => (never(), true),
    }
}

/// `column op value` for a numeric column (never NaN): (condition, exact).
pub(crate) fn num_sql(column: Expr, op: Op, value: &FilterValue) -> Expr {
    match (op, value) {
        (Op::IsNull, _) => column.is_null(),
        (Op::IsNotNull, _) => column.is_not_null(),
        (op, FilterValue::Number(r)) => {
            let r = *r;
            match op {
                Op::Eq => column.eq(r),
                Op::Ne => column.ne(r),
                Op::Gt => column.gt(r),
                Op::Ge => column.gte(r),
                Op::Lt => column.lt(r),
                Op::Le => column.lte(r),
                _ => never(),
            }
        }
        _ => never(),
    }
}

/// `SELECT 1 FROM <kv.table> s WHERE s.<link> = t.<link> AND s.key = <key>`.
fn kv_subquery(kv: &KvTable, key: &str) -> SelectStatement {
    let mut sub = Query::select();
    sub.expr(Expr::val(1)).from_as(Alias::new(kv.table), Alias::new("s"));
    for (child, parent) in kv.link {
        sub.and_where(col("s", child).equals((Alias::new(MAIN), Alias::new(*parent))));
    }
    sub.and_where(col("s", kv.key).eq(key));
    sub
}

fn kv_sql(kv: &KvTable, c: &Comparison, backend: DbBackend) -> (Expr, bool) {
    match c.op {
        Op::IsNull => (Expr::not_exists(kv_subquery(kv, &c.key)), true),
        Op::IsNotNull => (Expr::exists(kv_subquery(kv, &c.key)), true),
        op => {
            let mut sub = kv_subquery(kv, &c.key);
            let value = col("s", kv.value);
            let exact = match kv.is_nan {
                Some(is_nan) => {
                    // Every comparison with NaN is false.
                    sub.and_where(col("s", is_nan).eq(false));
                    sub.and_where(num_sql(value, op, &c.value));
                    true
                }
                None => {
                    let (cond, exact) = str_sql(value, op, &c.value, backend);
                    sub.and_where(cond);
                    exact
                }
            };
            (Expr::exists(sub), exact)
        }
    }
}

/// Runs whose dataset inputs have `field` satisfying the comparison.
fn dataset_sql(c: &Comparison, backend: DbBackend) -> (Expr, bool) {
    let mut sub = Query::select();
    sub.expr(Expr::val(1))
        .from_as(input::Entity, Alias::new("i"))
        .join_as(
            JoinType::InnerJoin,
            dataset::Entity,
            Alias::new("d"),
            col("d", "dataset_uuid").equals((Alias::new("i"), Alias::new("source_id"))),
        )
        .and_where(col("i", "source_type").eq("DATASET"))
        .and_where(col("i", "destination_type").eq("RUN"))
        .and_where(col("i", "destination_id").equals((Alias::new(MAIN), Alias::new("run_uuid"))));
    let column = match c.key.as_str() {
        "name" => col("d", "name"),
        "digest" => col("d", "digest"),
        "context" => {
            sub.join_as(
                JoinType::InnerJoin,
                input_tag::Entity,
                Alias::new("it"),
                col("it", "input_uuid")
                    .equals((Alias::new("i"), Alias::new("input_uuid")))
                    .and(col("it", "name").eq(TAG_DATASET_CONTEXT)),
            );
            col("it", "value")
        }
        _ => return (never(), true),
    };
    let (cond, exact) = str_sql(column, c.op, &c.value, backend);
    sub.and_where(cond);
    (Expr::exists(sub), exact)
}

/// An attribute held in tag `key`, "" when absent: the tag satisfies the comparison, or
/// (when "" does) the tag is absent.
fn tag_attr_sql(kv: &KvTable, key: &str, c: &Comparison, backend: DbBackend) -> (Expr, bool) {
    let mut sub = kv_subquery(kv, key);
    let (cond, exact) = str_sql(col("s", kv.value), c.op, &c.value, backend);
    sub.and_where(cond);
    let with_tag = Expr::exists(sub);
    if compare_str(&c.op, Some(""), &c.value) {
        (with_tag.or(Expr::not_exists(kv_subquery(kv, key))), exact)
    } else {
        (with_tag, exact)
    }
}

fn comparison_sql(c: &Comparison, schema: &SqlSchema, backend: DbBackend) -> (Expr, bool) {
    let kv = match c.entity {
        Entity::Attribute => {
            return match (schema.attr)(&c.key) {
                AttrSql::InMemory => (always(), false),
                AttrSql::Tag(key) => match schema.tags {
                    Some(kv) => tag_attr_sql(&kv, key, c, backend),
                    None => (always(), false),
                },
                AttrSql::Col(alias, column) => match capstan_search::attribute_kind(schema.target, &c.key) {
                    Some(AttrKind::Number) => (num_sql(col(alias, column), c.op, &c.value), true),
                    Some(AttrKind::String) => str_sql(col(alias, column), c.op, &c.value, backend),
                    None => (never(), true),
                },
            };
        }
        Entity::Dataset if schema.datasets => return dataset_sql(c, backend),
        Entity::Dataset => None,
        Entity::Metric => schema.metrics,
        Entity::Param => schema.params,
        Entity::Tag => schema.tags,
    };
    match kv {
        Some(kv) => kv_sql(&kv, c, backend),
        // The target has no such entity: nothing has it.
        None => (if c.op == Op::IsNull { always() } else { never() }, true),
    }
}

/// The SQL condition for a filter over `schema`'s table (aliased [`MAIN`]), and whether it
/// is exact (otherwise it is a superset, and rows must be checked with `matches`).
pub(crate) fn filter_sql(filter: &Filter, schema: &SqlSchema, backend: DbBackend) -> (Expr, bool) {
    let (children, is_and) = match filter {
        Filter::Cmp(c) => return comparison_sql(c, schema, backend),
        Filter::And(children) => (children, true),
        Filter::Or(children) => (children, false),
    };
    let mut exact = true;
    let mut acc: Option<Expr> = None;
    for child in children {
        let (cond, child_exact) = filter_sql(child, schema, backend);
        exact &= child_exact;
        acc = Some(match acc {
            None => cond,
            Some(a) if is_and => a.and(cond),
            Some(a) => a.or(cond),
        });
    }
    (acc.unwrap_or_else(|| if is_and { always() } else { never() }), exact)
}

/// The order expressions for an `order_by` entry: `(expr, direction)` pairs. Missing values
/// (and NaN metrics) sort last whatever the direction, as in MLflow.
pub(crate) fn order_exprs(value: Expr, is_nan: Option<Expr>, ascending: bool) -> Vec<(Expr, Order)> {
    let presence = match is_nan {
        Some(is_nan) => Expr::case(is_nan.eq(true), 1).case(value.clone().is_null(), 2).finally(0),
        None => Expr::case(value.clone().is_null(), 1).finally(0),
    };
    vec![(presence.into(), Order::Asc), (value, if ascending { Order::Asc } else { Order::Desc })]
}

// ---------------------------------------------------------------------------------------
// In-memory check
// ---------------------------------------------------------------------------------------

/// What a filter reads besides attributes.
#[derive(Debug, Default, Clone)]
pub(crate) struct Needs {
    pub metrics: BTreeSet<String>,
    pub params: BTreeSet<String>,
    pub tags: BTreeSet<String>,
    pub datasets: bool,
    pub attributes: BTreeSet<String>,
}

impl Needs {
    pub(crate) fn of(filter: &Filter) -> Needs {
        let mut needs = Needs::default();
        for c in filter.comparisons() {
            match c.entity {
                Entity::Metric => needs.metrics.insert(c.key.clone()),
                Entity::Param => needs.params.insert(c.key.clone()),
                Entity::Tag => needs.tags.insert(c.key.clone()),
                Entity::Attribute => needs.attributes.insert(c.key.clone()),
                Entity::Dataset => {
                    needs.datasets = true;
                    true
                }
            };
        }
        needs
    }
}

/// An attribute value owned by a [`RowView`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Attr {
    Str(String),
    Num(f64),
}

/// What the in-memory check sees of one row.
#[derive(Debug, Default, Clone)]
pub(crate) struct RowView {
    pub attrs: Vec<(&'static str, Option<Attr>)>,
    pub metrics: HashMap<String, f64>,
    pub params: HashMap<String, String>,
    pub tags: HashMap<String, String>,
    /// (name, digest, context) of each dataset input.
    pub datasets: Vec<[Option<String>; 3]>,
}

impl RunView for RowView {
    fn metric(&self, key: &str) -> Option<f64> {
        self.metrics.get(key).copied()
    }

    fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }

    fn attribute(&self, key: &str) -> Option<AttrValue<'_>> {
        let (_, value) = self.attrs.iter().find(|(k, _)| *k == key)?;
        value.as_ref().map(|v| match v {
            Attr::Str(s) => AttrValue::Str(s),
            Attr::Num(n) => AttrValue::Num(*n),
        })
    }

    fn dataset_matches(&self, field: &str, op: &Op, v: &FilterValue) -> bool {
        let index = match field {
            "name" => 0,
            "digest" => 1,
            "context" => 2,
            _ => return false,
        };
        self.datasets.iter().any(|d| compare_str(op, d[index].as_deref(), v))
    }
}

/// A row type a search reads, and how to build the in-memory views of a chunk of them.
pub(crate) trait Searchable: FromQueryResult + Send + Sync + Sized {
    fn views<'a>(
        conn: &'a DatabaseConnection,
        rows: &'a [Self],
        needs: &'a Needs,
    ) -> impl Future<Output = Result<Vec<RowView>>> + Send + 'a;
}

/// Run the search query `stmt` (filtered by `filter_sql` already, ordered totally): the page
/// at `offset` of at most `max_results` rows that match `filter`, and the next page's offset.
pub(crate) async fn scan<R: Searchable>(
    conn: &DatabaseConnection,
    stmt: &SelectStatement,
    filter: Option<&Filter>,
    exact: bool,
    max_results: usize,
    offset: u64,
) -> Result<(Vec<R>, Option<u64>)> {
    let backend = conn.get_database_backend();
    let max = max_results as u64;
    let fetch = |limit: u64, at: u64| {
        let mut s = stmt.clone();
        s.limit(limit).offset(at);
        R::find_by_statement(backend.build(&s)).all(conn)
    };
    let filter = match filter {
        Some(f) if !exact => f,
        _ => {
            let mut rows = fetch(max + 1, offset).await?;
            let next = (rows.len() as u64 > max).then_some(offset + max);
            rows.truncate(max_results);
            return Ok((rows, next));
        }
    };
    let needs = Needs::of(filter);
    let chunk = (max + 1).clamp(SCAN_CHUNK_MIN, SCAN_CHUNK_MAX);
    let mut at = offset;
    let mut out = Vec::new();
    loop {
        let rows = fetch(chunk, at).await?;
        let n = rows.len() as u64;
        let views = R::views(conn, &rows, &needs).await?;
        for (i, (row, view)) in rows.into_iter().zip(views).enumerate() {
            if !capstan_search::matches(filter, &view) {
                continue;
            }
            if out.len() == max_results {
                // The next page starts at this match.
                return Ok((out, Some(at + i as u64)));
            }
            out.push(row);
        }
        if n < chunk {
            return Ok((out, None));
        }
        at += n;
    }
}

/// `key -> value` per owner for the keys asked (all keys when `keys` is None).
async fn kv_by_owner<E>(
    conn: &DatabaseConnection,
    owner: E::Column,
    key: E::Column,
    owners: &[&str],
    keys: Option<&BTreeSet<String>>,
    mut each: impl FnMut(E::Model),
) -> Result<()>
where
    E: EntityTrait,
    E::Column: ColumnTrait,
{
    if keys.is_some_and(BTreeSet::is_empty) {
        return Ok(());
    }
    for chunk in owners.chunks(CHUNK_ROWS) {
        let mut query = E::find().filter(owner.is_in(chunk.iter().copied()));
        if let Some(keys) = keys {
            query = query.filter(key.is_in(keys.iter().map(String::as_str)));
        }
        for m in query.all(conn).await? {
            each(m);
        }
    }
    Ok(())
}

/// (run id, name, digest, context) of the dataset inputs of `runs`.
async fn dataset_contexts(conn: &DatabaseConnection, runs: &[&str]) -> Result<Vec<(String, [Option<String>; 3])>> {
    let mut out = Vec::new();
    for chunk in runs.chunks(CHUNK_ROWS) {
        let edges = input::Entity::find()
            .filter(input::Column::SourceType.eq("DATASET"))
            .filter(input::Column::DestinationType.eq("RUN"))
            .filter(input::Column::DestinationId.is_in(chunk.iter().copied()))
            .all(conn)
            .await?;
        if edges.is_empty() {
            continue;
        }
        let dataset_ids: BTreeSet<&str> = edges.iter().map(|e| e.source_id.as_str()).collect();
        let datasets: HashMap<String, dataset::Model> = dataset::Entity::find()
            .filter(dataset::Column::DatasetUuid.is_in(dataset_ids))
            .all(conn)
            .await?
            .into_iter()
            .map(|d| (d.dataset_uuid.clone(), d))
            .collect();
        let contexts: HashMap<String, String> = input_tag::Entity::find()
            .filter(input_tag::Column::InputUuid.is_in(edges.iter().map(|e| e.input_uuid.as_str())))
            .filter(input_tag::Column::Name.eq(TAG_DATASET_CONTEXT))
            .all(conn)
            .await?
            .into_iter()
            .map(|t| (t.input_uuid, t.value))
            .collect();
        for e in edges {
            if let Some(d) = datasets.get(&e.source_id) {
                out.push((
                    e.destination_id,
                    [Some(d.name.clone()), Some(d.digest.clone()), contexts.get(&e.input_uuid).cloned()],
                ));
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------

fn run_attr(name: &str) -> AttrSql {
    match name {
        "run_id" => AttrSql::Col(MAIN, "run_uuid"),
        "run_name" => AttrSql::Col(MAIN, "name"),
        "status" => AttrSql::Col(MAIN, "status"),
        "start_time" => AttrSql::Col(MAIN, "start_time"),
        "end_time" => AttrSql::Col(MAIN, "end_time"),
        "artifact_uri" => AttrSql::Col(MAIN, "artifact_uri"),
        "lifecycle_stage" => AttrSql::Col(MAIN, "lifecycle_stage"),
        "experiment_id" => AttrSql::Col(MAIN, "experiment_id"),
        // The user is the `mlflow.user` tag, "" without one.
        "user_id" => AttrSql::Tag(TAG_USER),
        _ => AttrSql::InMemory,
    }
}

const RUN_LINK: &[(&str, &str)] = &[("run_uuid", "run_uuid")];

pub(crate) const RUN_SCHEMA: SqlSchema = SqlSchema {
    target: SearchTarget::Runs,
    attr: run_attr,
    metrics: Some(KvTable {
        table: "latest_metrics",
        link: RUN_LINK,
        key: "key",
        value: "value",
        is_nan: Some("is_nan"),
    }),
    params: Some(KvTable { table: "params", link: RUN_LINK, key: "key", value: "value", is_nan: None }),
    tags: Some(KvTable { table: "tags", link: RUN_LINK, key: "key", value: "value", is_nan: None }),
    datasets: true,
};

impl Searchable for run::Model {
    async fn views<'a>(conn: &'a DatabaseConnection, rows: &'a [Self], needs: &'a Needs) -> Result<Vec<RowView>> {
        let ids: Vec<&str> = rows.iter().map(|r| r.run_uuid.as_str()).collect();
        let mut views: HashMap<String, RowView> = HashMap::new();
        kv_by_owner::<latest_metric::Entity>(
            conn,
            latest_metric::Column::RunUuid,
            latest_metric::Column::Key,
            &ids,
            Some(&needs.metrics),
            |m| {
                views.entry(m.run_uuid).or_default().metrics.insert(m.key, loaded_value(m.value, m.is_nan));
            },
        )
        .await?;
        kv_by_owner::<param::Entity>(
            conn,
            param::Column::RunUuid,
            param::Column::Key,
            &ids,
            Some(&needs.params),
            |p| {
                views.entry(p.run_uuid).or_default().params.insert(p.key, p.value);
            },
        )
        .await?;
        let mut tag_keys = needs.tags.clone();
        if needs.attributes.contains("user_id") {
            tag_keys.insert(TAG_USER.to_owned());
        }
        kv_by_owner::<tag::Entity>(conn, tag::Column::RunUuid, tag::Column::Key, &ids, Some(&tag_keys), |t| {
            views.entry(t.run_uuid).or_default().tags.insert(t.key, t.value);
        })
        .await?;
        if needs.datasets {
            for (run_id, d) in dataset_contexts(conn, &ids).await? {
                views.entry(run_id).or_default().datasets.push(d);
            }
        }
        Ok(rows
            .iter()
            .map(|r| {
                let mut v = views.remove(&r.run_uuid).unwrap_or_default();
                let user = v.tags.get(TAG_USER).cloned().unwrap_or_default();
                v.attrs = vec![
                    ("run_id", Some(Attr::Str(r.run_uuid.clone()))),
                    ("run_name", Some(Attr::Str(r.name.clone()))),
                    ("status", Some(Attr::Str(r.status.clone()))),
                    ("start_time", Some(Attr::Num(r.start_time as f64))),
                    ("end_time", r.end_time.map(|t| Attr::Num(t as f64))),
                    ("artifact_uri", Some(Attr::Str(r.artifact_uri.clone()))),
                    ("user_id", Some(Attr::Str(user))),
                    ("lifecycle_stage", Some(Attr::Str(r.lifecycle_stage.clone()))),
                    ("experiment_id", Some(Attr::Str(r.experiment_id.to_string()))),
                ];
                v
            })
            .collect())
    }
}

/// Runs with their latest metrics, params and tags (each sorted by key), in the order given.
async fn load_runs(conn: &DatabaseConnection, rows: Vec<run::Model>) -> Result<Vec<RunRecord>> {
    let ids: Vec<&str> = rows.iter().map(|r| r.run_uuid.as_str()).collect();
    type Parts = (Vec<MetricPoint>, Vec<(String, String)>, Vec<(String, String)>);
    let mut parts: HashMap<String, Parts> = HashMap::new();
    for chunk in ids.chunks(CHUNK_ROWS) {
        for m in latest_metric::Entity::find()
            .filter(latest_metric::Column::RunUuid.is_in(chunk.iter().copied()))
            .order_by_asc(latest_metric::Column::Key)
            .all(conn)
            .await?
        {
            parts.entry(m.run_uuid).or_default().0.push(MetricPoint {
                value: loaded_value(m.value, m.is_nan),
                key: m.key,
                timestamp: m.timestamp,
                step: m.step,
            });
        }
        for p in param::Entity::find()
            .filter(param::Column::RunUuid.is_in(chunk.iter().copied()))
            .order_by_asc(param::Column::Key)
            .all(conn)
            .await?
        {
            parts.entry(p.run_uuid).or_default().1.push((p.key, p.value));
        }
        for t in tag::Entity::find()
            .filter(tag::Column::RunUuid.is_in(chunk.iter().copied()))
            .order_by_asc(tag::Column::Key)
            .all(conn)
            .await?
        {
            parts.entry(t.run_uuid).or_default().2.push((t.key, t.value));
        }
    }
    Ok(rows
        .into_iter()
        .map(|r| {
            let (metrics, params, tags) = parts.remove(&r.run_uuid).unwrap_or_default();
            run_record(r, metrics, params, tags)
        })
        .collect())
}

/// The inputs and outputs of runs.
async fn load_run_io(conn: &DatabaseConnection, run_ids: &[&str]) -> Result<HashMap<String, RunIo>> {
    let mut out: HashMap<String, RunIo> = HashMap::new();
    for chunk in run_ids.chunks(CHUNK_ROWS) {
        // Datasets: DATASET -> RUN edges, with their tags.
        let edges = input::Entity::find()
            .filter(input::Column::SourceType.eq("DATASET"))
            .filter(input::Column::DestinationType.eq("RUN"))
            .filter(input::Column::DestinationId.is_in(chunk.iter().copied()))
            .order_by_asc(input::Column::DestinationId)
            .order_by_asc(input::Column::InputUuid)
            .all(conn)
            .await?;
        if !edges.is_empty() {
            let dataset_ids: BTreeSet<&str> = edges.iter().map(|e| e.source_id.as_str()).collect();
            let datasets: HashMap<String, dataset::Model> = dataset::Entity::find()
                .filter(dataset::Column::DatasetUuid.is_in(dataset_ids))
                .all(conn)
                .await?
                .into_iter()
                .map(|d| (d.dataset_uuid.clone(), d))
                .collect();
            let mut tags: HashMap<String, Vec<(String, String)>> = HashMap::new();
            for t in input_tag::Entity::find()
                .filter(input_tag::Column::InputUuid.is_in(edges.iter().map(|e| e.input_uuid.as_str())))
                .order_by_asc(input_tag::Column::Name)
                .all(conn)
                .await?
            {
                tags.entry(t.input_uuid).or_default().push((t.name, t.value));
            }
            for e in edges {
                let Some(d) = datasets.get(&e.source_id) else { continue };
                out.entry(e.destination_id).or_default().dataset_inputs.push(DatasetInputRecord {
                    dataset: DatasetRecord {
                        name: d.name.clone(),
                        digest: d.digest.clone(),
                        source_type: d.source_type.clone(),
                        source: d.source.clone(),
                        schema: d.schema.clone(),
                        profile: d.profile.clone(),
                    },
                    tags: tags.remove(&e.input_uuid).unwrap_or_default(),
                });
            }
        }
        // Models: RUN_INPUT -> MODEL_INPUT and RUN_OUTPUT -> MODEL_OUTPUT edges.
        for e in input::Entity::find()
            .filter(input::Column::SourceType.is_in(["RUN_INPUT", "RUN_OUTPUT"]))
            .filter(input::Column::SourceId.is_in(chunk.iter().copied()))
            .order_by_asc(input::Column::Step)
            .order_by_asc(input::Column::DestinationId)
            .all(conn)
            .await?
        {
            let io = out.entry(e.source_id).or_default();
            if e.source_type == "RUN_INPUT" {
                io.model_inputs.push(e.destination_id);
            } else {
                io.model_outputs.push((e.destination_id, e.step));
            }
        }
    }
    Ok(out)
}

fn parse_experiment_ids(ids: &[String]) -> Vec<i64> {
    ids.iter().filter_map(|id| parse_experiment_id(id)).collect()
}

/// `ON CONFLICT (source_type, source_id, destination_type, destination_id) DO NOTHING`: an
/// edge is stored once.
fn same_edge() -> sea_orm::sea_query::OnConflict {
    sea_orm::sea_query::OnConflict::columns([
        input::Column::SourceType,
        input::Column::SourceId,
        input::Column::DestinationType,
        input::Column::DestinationId,
    ])
    .do_nothing()
    .to_owned()
}

/// One edge (insert it with [`same_edge`]).
fn edge(
    source_type: &str,
    source_id: &str,
    destination_type: &str,
    destination_id: &str,
    step: i64,
) -> input::ActiveModel {
    input::ActiveModel {
        input_uuid: ActiveValue::Set(uuid::Uuid::new_v4().simple().to_string()),
        source_type: ActiveValue::Set(source_type.to_owned()),
        source_id: ActiveValue::Set(source_id.to_owned()),
        destination_type: ActiveValue::Set(destination_type.to_owned()),
        destination_id: ActiveValue::Set(destination_id.to_owned()),
        step: ActiveValue::Set(step),
    }
}

impl Store {
    /// Search runs (see the module docs).
    pub async fn search_runs(&self, q: &RunQuery<'_>) -> Result<Page<(RunRecord, RunIo)>> {
        let backend = self.db.get_database_backend();
        let experiment_ids = parse_experiment_ids(q.experiment_ids);
        if experiment_ids.is_empty() {
            return Ok(Page { items: Vec::new(), next_offset: None });
        }
        let mut stmt = Query::select();
        stmt.columns(
            [
                run::Column::RunUuid,
                run::Column::ExperimentId,
                run::Column::Name,
                run::Column::Status,
                run::Column::StartTime,
                run::Column::EndTime,
                run::Column::LifecycleStage,
                run::Column::ArtifactUri,
                run::Column::UserId,
            ]
            .map(|c| (Alias::new(MAIN), c)),
        )
        .from_as(run::Entity, Alias::new(MAIN))
        .and_where(col(MAIN, "experiment_id").is_in(experiment_ids))
        .and_where(col(MAIN, "lifecycle_stage").is_in(q.view.stages().iter().copied()));
        let mut exact = true;
        if let Some(filter) = q.filter {
            let (cond, is_exact) = filter_sql(filter, &RUN_SCHEMA, backend);
            stmt.and_where(cond);
            exact = is_exact;
        }
        let mut start_time_ordered = false;
        for (i, o) in q.order_by.iter().enumerate() {
            let alias = format!("o{i}");
            let joined = |stmt: &mut SelectStatement, table: &str, key: &str| {
                stmt.join_as(
                    JoinType::LeftJoin,
                    Alias::new(table),
                    Alias::new(alias.as_str()),
                    col(&alias, "run_uuid")
                        .equals((Alias::new(MAIN), Alias::new("run_uuid")))
                        .and(col(&alias, "key").eq(key)),
                );
            };
            let exprs = match o.entity {
                Entity::Metric => {
                    joined(&mut stmt, "latest_metrics", &o.key);
                    order_exprs(col(&alias, "value"), Some(col(&alias, "is_nan")), o.ascending)
                }
                Entity::Param => {
                    joined(&mut stmt, "params", &o.key);
                    order_exprs(col(&alias, "value"), None, o.ascending)
                }
                Entity::Tag => {
                    joined(&mut stmt, "tags", &o.key);
                    order_exprs(col(&alias, "value"), None, o.ascending)
                }
                Entity::Attribute => match run_attr(&o.key) {
                    AttrSql::Col(table, column) => {
                        start_time_ordered |= o.key == "start_time";
                        order_exprs(col(table, column), None, o.ascending)
                    }
                    AttrSql::Tag(key) => {
                        joined(&mut stmt, "tags", key);
                        order_exprs(col(&alias, "value"), None, o.ascending)
                    }
                    AttrSql::InMemory => continue,
                },
                Entity::Dataset => continue,
            };
            for (e, dir) in exprs {
                stmt.order_by_expr(e, dir);
            }
        }
        if !start_time_ordered {
            stmt.order_by_expr(col(MAIN, "start_time"), Order::Desc);
        }
        stmt.order_by_expr(col(MAIN, "run_uuid"), Order::Asc);

        let (rows, next_offset) = scan::<run::Model>(&self.db, &stmt, q.filter, exact, q.max_results, q.offset).await?;
        let ids: Vec<String> = rows.iter().map(|r| r.run_uuid.clone()).collect();
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut io = load_run_io(&self.db, &id_refs).await?;
        let runs = load_runs(&self.db, rows).await?;
        let items = runs
            .into_iter()
            .map(|r| {
                let run_io = io.remove(&r.run_id).unwrap_or_default();
                (r, run_io)
            })
            .collect();
        Ok(Page { items, next_offset })
    }

    /// The inputs and outputs of one run (empty when it has none or does not exist).
    pub async fn run_io(&self, run_id: &str) -> Result<RunIo> {
        Ok(load_run_io(&self.db, &[run_id]).await?.remove(run_id).unwrap_or_default())
    }

    /// Mark a run deleted or active again (`stage` is "deleted" or "active"). NotFound if
    /// the run does not exist.
    pub async fn set_run_lifecycle(&self, run_id: &str, stage: &str) -> Result<()> {
        let updated = run::Entity::update_many()
            .col_expr(run::Column::LifecycleStage, Expr::value(stage))
            .filter(run::Column::RunUuid.eq(run_id))
            .exec(&self.writer)
            .await?;
        if updated.rows_affected == 0 {
            return Err(run_not_found(run_id));
        }
        Ok(())
    }

    /// Delete a run's tag. NotFound if the run or the tag does not exist.
    pub async fn delete_run_tag(&self, run_id: &str, key: &str) -> Result<()> {
        let txn = self.begin_write().await?;
        if run::Entity::find_by_id(run_id.to_owned()).one(&txn).await?.is_none() {
            return Err(run_not_found(run_id));
        }
        let deleted = tag::Entity::delete_many()
            .filter(tag::Column::RunUuid.eq(run_id))
            .filter(tag::Column::Key.eq(key))
            .exec(&txn)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(StoreError::NotFound(format!("tag '{key}' of run {run_id}")));
        }
        txn.commit().await?;
        Ok(())
    }

    /// Log dataset inputs and model inputs of a run. A dataset is stored once per
    /// experiment, name and digest; an input edge once per run (a repeat, e.g. a client
    /// retry, adds nothing, and the tags of the first one stay). NotFound if the run is
    /// absent.
    pub async fn log_inputs(&self, run_id: &str, datasets: &[DatasetInputRecord], model_ids: &[String]) -> Result<()> {
        let txn = self.begin_write().await?;
        let Some(run) = run::Entity::find_by_id(run_id.to_owned()).one(&txn).await? else {
            return Err(run_not_found(run_id));
        };
        for input in datasets {
            let d = &input.dataset;
            // Insert-if-absent, then read: safe against a concurrent writer of the same
            // dataset on PostgreSQL (SQLite writers are serialized anyway).
            dataset::Entity::insert(dataset::ActiveModel {
                dataset_uuid: ActiveValue::Set(uuid::Uuid::new_v4().simple().to_string()),
                experiment_id: ActiveValue::Set(run.experiment_id),
                name: ActiveValue::Set(d.name.clone()),
                digest: ActiveValue::Set(d.digest.clone()),
                source_type: ActiveValue::Set(d.source_type.clone()),
                source: ActiveValue::Set(d.source.clone()),
                schema: ActiveValue::Set(d.schema.clone()),
                profile: ActiveValue::Set(d.profile.clone()),
            })
            .on_conflict(
                sea_orm::sea_query::OnConflict::columns([
                    dataset::Column::ExperimentId,
                    dataset::Column::Name,
                    dataset::Column::Digest,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
            let dataset_uuid = dataset::Entity::find()
                .filter(dataset::Column::ExperimentId.eq(run.experiment_id))
                .filter(dataset::Column::Name.eq(d.name.as_str()))
                .filter(dataset::Column::Digest.eq(d.digest.as_str()))
                .one(&txn)
                .await?
                .map(|e| e.dataset_uuid)
                .ok_or_else(|| StoreError::NotFound(format!("dataset '{}'", d.name)))?;
            let input_uuid = uuid::Uuid::new_v4().simple().to_string();
            let mut e = edge("DATASET", &dataset_uuid, "RUN", run_id, 0);
            e.input_uuid = ActiveValue::Set(input_uuid.clone());
            let inserted = input::Entity::insert(e).on_conflict(same_edge()).exec_without_returning(&txn).await?;
            if inserted == 0 {
                // Logged before: the first logging's tags stay.
                continue;
            }
            let tags = crate::last_wins(&input.tags);
            for chunk in tags.chunks(CHUNK_ROWS) {
                input_tag::Entity::insert_many(chunk.iter().map(|(k, v)| input_tag::ActiveModel {
                    input_uuid: ActiveValue::Set(input_uuid.clone()),
                    name: ActiveValue::Set(k.clone()),
                    value: ActiveValue::Set(v.clone()),
                }))
                .exec_without_returning(&txn)
                .await?;
            }
        }
        for model_id in model_ids {
            input::Entity::insert(edge("RUN_INPUT", run_id, "MODEL_INPUT", model_id, 0))
                .on_conflict(same_edge())
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Log logged models as outputs of a run, with their step (a repeat updates nothing).
    /// NotFound if the run is absent.
    pub async fn log_outputs(&self, run_id: &str, outputs: &[(String, i64)]) -> Result<()> {
        let txn = self.begin_write().await?;
        if run::Entity::find_by_id(run_id.to_owned()).one(&txn).await?.is_none() {
            return Err(run_not_found(run_id));
        }
        for (model_id, step) in outputs {
            input::Entity::insert(edge("RUN_OUTPUT", run_id, "MODEL_OUTPUT", model_id, *step))
                .on_conflict(same_edge())
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // Experiments
    // -----------------------------------------------------------------------------------

    /// Search experiments (see the module docs).
    pub async fn search_experiments(&self, q: &ExperimentQuery<'_>) -> Result<Page<ExperimentRecord>> {
        let backend = self.db.get_database_backend();
        let mut stmt = Query::select();
        stmt.columns(
            [
                experiment::Column::ExperimentId,
                experiment::Column::Name,
                experiment::Column::ArtifactLocation,
                experiment::Column::LifecycleStage,
                experiment::Column::CreationTime,
                experiment::Column::LastUpdateTime,
            ]
            .map(|c| (Alias::new(MAIN), c)),
        )
        .from_as(experiment::Entity, Alias::new(MAIN))
        .and_where(col(MAIN, "lifecycle_stage").is_in(q.view.stages().iter().copied()));
        let mut exact = true;
        if let Some(filter) = q.filter {
            let (cond, is_exact) = filter_sql(filter, &EXPERIMENT_SCHEMA, backend);
            stmt.and_where(cond);
            exact = is_exact;
        }
        let default_order = [
            OrderBy { entity: Entity::Attribute, key: "creation_time".into(), ascending: false },
            OrderBy { entity: Entity::Attribute, key: "experiment_id".into(), ascending: true },
        ];
        let order_by = if q.order_by.is_empty() { &default_order[..] } else { q.order_by };
        let mut id_ordered = false;
        for o in order_by {
            if let AttrSql::Col(table, column) = experiment_attr(&o.key) {
                id_ordered |= o.key == "experiment_id";
                for (e, dir) in order_exprs(col(table, column), None, o.ascending) {
                    stmt.order_by_expr(e, dir);
                }
            }
        }
        if !id_ordered {
            stmt.order_by_expr(col(MAIN, "experiment_id"), Order::Desc);
        }
        let (rows, next_offset) =
            scan::<experiment::Model>(&self.db, &stmt, q.filter, exact, q.max_results, q.offset).await?;
        let ids: Vec<i64> = rows.iter().map(|e| e.experiment_id).collect();
        let mut tags: HashMap<i64, Vec<(String, String)>> = HashMap::new();
        for chunk in ids.chunks(CHUNK_ROWS) {
            for t in experiment_tag::Entity::find()
                .filter(experiment_tag::Column::ExperimentId.is_in(chunk.iter().copied()))
                .order_by_asc(experiment_tag::Column::Key)
                .all(&self.db)
                .await?
            {
                tags.entry(t.experiment_id).or_default().push((t.key, t.value));
            }
        }
        let items = rows
            .into_iter()
            .map(|m| ExperimentRecord {
                experiment_id: m.experiment_id.to_string(),
                tags: tags.remove(&m.experiment_id).unwrap_or_default(),
                name: m.name,
                artifact_location: m.artifact_location,
                lifecycle_stage: m.lifecycle_stage,
                creation_time: m.creation_time,
                last_update_time: m.last_update_time,
            })
            .collect();
        Ok(Page { items, next_offset })
    }

    /// Rename an experiment. NotFound if absent; AlreadyExists if the name is taken.
    pub async fn rename_experiment(&self, experiment_id: &str, new_name: &str) -> Result<()> {
        let not_found = || StoreError::NotFound(format!("experiment {experiment_id}"));
        let id = parse_experiment_id(experiment_id).ok_or_else(not_found)?;
        let txn = self.begin_write().await?;
        if experiment::Entity::find_by_id(id).one(&txn).await?.is_none() {
            return Err(not_found());
        }
        let taken = experiment::Entity::find()
            .filter(experiment::Column::Name.eq(new_name))
            .filter(experiment::Column::ExperimentId.ne(id))
            .one(&txn)
            .await?;
        if taken.is_some() {
            return Err(StoreError::AlreadyExists(format!("experiment '{new_name}'")));
        }
        experiment::Entity::update_many()
            .col_expr(experiment::Column::Name, Expr::value(new_name))
            .col_expr(experiment::Column::LastUpdateTime, Expr::value(now_ms()))
            .filter(experiment::Column::ExperimentId.eq(id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Set the lifecycle stage ("deleted" or "active") of an experiment and of all its runs
    /// (as MLflow does). NotFound if absent.
    pub async fn set_experiment_lifecycle(&self, experiment_id: &str, stage: &str) -> Result<()> {
        let not_found = || StoreError::NotFound(format!("experiment {experiment_id}"));
        let id = parse_experiment_id(experiment_id).ok_or_else(not_found)?;
        let txn = self.begin_write().await?;
        let updated = experiment::Entity::update_many()
            .col_expr(experiment::Column::LifecycleStage, Expr::value(stage))
            .col_expr(experiment::Column::LastUpdateTime, Expr::value(now_ms()))
            .filter(experiment::Column::ExperimentId.eq(id))
            .exec(&txn)
            .await?;
        if updated.rows_affected == 0 {
            return Err(not_found());
        }
        run::Entity::update_many()
            .col_expr(run::Column::LifecycleStage, Expr::value(stage))
            .filter(run::Column::ExperimentId.eq(id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Set (or replace) an experiment tag. NotFound if the experiment is absent.
    pub async fn set_experiment_tag(&self, experiment_id: &str, key: &str, value: &str) -> Result<()> {
        let not_found = || StoreError::NotFound(format!("experiment {experiment_id}"));
        let id = parse_experiment_id(experiment_id).ok_or_else(not_found)?;
        let txn = self.begin_write().await?;
        if experiment::Entity::find_by_id(id).one(&txn).await?.is_none() {
            return Err(not_found());
        }
        experiment_tag::Entity::insert(experiment_tag::ActiveModel {
            experiment_id: ActiveValue::Set(id),
            key: ActiveValue::Set(key.to_owned()),
            value: ActiveValue::Set(value.to_owned()),
        })
        .on_conflict(
            sea_orm::sea_query::OnConflict::columns([
                experiment_tag::Column::ExperimentId,
                experiment_tag::Column::Key,
            ])
            .update_column(experiment_tag::Column::Value)
            .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Delete an experiment tag. NotFound if the experiment or the tag is absent.
    pub async fn delete_experiment_tag(&self, experiment_id: &str, key: &str) -> Result<()> {
        let not_found = || StoreError::NotFound(format!("experiment {experiment_id}"));
        let id = parse_experiment_id(experiment_id).ok_or_else(not_found)?;
        let txn = self.begin_write().await?;
        if experiment::Entity::find_by_id(id).one(&txn).await?.is_none() {
            return Err(not_found());
        }
        let deleted = experiment_tag::Entity::delete_many()
            .filter(experiment_tag::Column::ExperimentId.eq(id))
            .filter(experiment_tag::Column::Key.eq(key))
            .exec(&txn)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(StoreError::NotFound(format!("tag '{key}' of experiment {experiment_id}")));
        }
        txn.commit().await?;
        Ok(())
    }
}

fn experiment_attr(name: &str) -> AttrSql {
    match name {
        "name" => AttrSql::Col(MAIN, "name"),
        "creation_time" => AttrSql::Col(MAIN, "creation_time"),
        "last_update_time" => AttrSql::Col(MAIN, "last_update_time"),
        "experiment_id" => AttrSql::Col(MAIN, "experiment_id"),
        _ => AttrSql::InMemory,
    }
}

const EXPERIMENT_SCHEMA: SqlSchema = SqlSchema {
    target: SearchTarget::Experiments,
    attr: experiment_attr,
    metrics: None,
    params: None,
    tags: Some(KvTable {
        table: "experiment_tags",
        link: &[("experiment_id", "experiment_id")],
        key: "key",
        value: "value",
        is_nan: None,
    }),
    datasets: false,
};

impl Searchable for experiment::Model {
    async fn views<'a>(conn: &'a DatabaseConnection, rows: &'a [Self], needs: &'a Needs) -> Result<Vec<RowView>> {
        let mut tags: HashMap<i64, HashMap<String, String>> = HashMap::new();
        if !needs.tags.is_empty() {
            let ids: Vec<i64> = rows.iter().map(|r| r.experiment_id).collect();
            for chunk in ids.chunks(CHUNK_ROWS) {
                for t in experiment_tag::Entity::find()
                    .filter(experiment_tag::Column::ExperimentId.is_in(chunk.iter().copied()))
                    .filter(experiment_tag::Column::Key.is_in(needs.tags.iter().map(String::as_str)))
                    .all(conn)
                    .await?
                {
                    tags.entry(t.experiment_id).or_default().insert(t.key, t.value);
                }
            }
        }
        Ok(rows
            .iter()
            .map(|r| RowView {
                attrs: vec![
                    ("name", Some(Attr::Str(r.name.clone()))),
                    ("creation_time", Some(Attr::Num(r.creation_time as f64))),
                    ("last_update_time", Some(Attr::Num(r.last_update_time as f64))),
                    ("experiment_id", Some(Attr::Str(r.experiment_id.to_string()))),
                ],
                tags: tags.remove(&r.experiment_id).unwrap_or_default(),
                ..RowView::default()
            })
            .collect())
    }
}

// ---------------------------------------------------------------------------------------
// The web UI's runs table: only the columns shown
// ---------------------------------------------------------------------------------------

/// One cell of [`RunsTable`].
#[derive(Debug, Clone, PartialEq)]
pub enum TableCell {
    /// The run has no such metric, param or tag (or the column names none), or the
    /// metric's latest value is NaN (JSON and CSV show both alike).
    Missing,
    /// A metric's latest value (not NaN).
    Number(f64),
    /// A param's or tag's value.
    Text(String),
}

/// One run of [`RunsTable`]: its attributes and one cell per asked column.
#[derive(Debug, Clone, PartialEq)]
pub struct RunsTableRow {
    /// Run id.
    pub run_id: String,
    /// Run name.
    pub run_name: String,
    /// Status (`RUNNING`, `FINISHED`...).
    pub status: String,
    /// ms since epoch.
    pub start_time: i64,
    /// The asked columns' values, in their order.
    pub cells: Vec<TableCell>,
}

/// The runs of some experiments that match a filter, with only the asked columns read
/// ([`Store::runs_table`]): what the web UI's runs table shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunsTable {
    /// Every metric key the matching runs have, sorted.
    pub metric_keys: Vec<String>,
    /// Every param key, sorted.
    pub param_keys: Vec<String>,
    /// Every tag key except MLflow's system tags (`mlflow.*`), sorted.
    pub tag_keys: Vec<String>,
    /// The columns read, as chosen (each row's cells follow them).
    pub columns: Vec<String>,
    /// The runs, newest start time first (then by id), at most the limit asked.
    pub rows: Vec<RunsTableRow>,
}

/// Which runs a table query reads values of: those the scope statement selects (its single
/// column is `run_uuid`), or a list of ids (read in chunks).
enum TableScope<'a> {
    Sub(&'a SelectStatement),
    Ids(&'a [String]),
}

impl TableScope<'_> {
    /// The condition `run_uuid IN (...)` for the whole scope (Sub) or for each chunk (Ids).
    fn conditions(&self) -> Vec<Expr> {
        let run = || Expr::col(Alias::new("run_uuid"));
        match self {
            TableScope::Sub(sub) => vec![run().in_subquery((*sub).clone())],
            TableScope::Ids(ids) => ids.chunks(CHUNK_ROWS).map(|c| run().is_in(c.iter().map(String::as_str))).collect(),
        }
    }
}

#[derive(Debug, FromQueryResult)]
struct TableKey {
    key: String,
}

#[derive(Debug, FromQueryResult)]
struct TableMetric {
    run_uuid: String,
    key: String,
    value: f64,
    is_nan: bool,
}

#[derive(Debug, FromQueryResult)]
struct TableText {
    run_uuid: String,
    key: String,
    value: String,
}

/// A column name of the runs table split into its table and key: `metrics.x` ->
/// (`latest_metrics`, `x`), `params.y` -> (`params`, `y`), `tags.z` -> (`tags`, `z`);
/// None for anything else.
pub fn table_column(column: &str) -> Option<(&'static str, &str)> {
    let (kind, key) = column.split_once('.')?;
    let table = match kind {
        "metrics" => "latest_metrics",
        "params" => "params",
        "tags" => "tags",
        _ => return None,
    };
    (!key.is_empty()).then_some((table, key))
}

/// The most columns [`Store::runs_table`] reads in its one-row-per-run query (SQLite allows
/// 2,000 result columns); more are read as rows per table.
const ONE_QUERY_COLUMNS: usize = 100;

/// Column positions per key, for one table.
type KeyColumns<'a> = HashMap<&'a str, Vec<usize>>;

impl Store {
    /// The runs table of the web UI: the runs of `experiment_ids` in `view` matching
    /// `filter` (newest first, at most `limit`), every metric, param and tag key those runs
    /// have (for a column chooser), and for each run just the values of the columns
    /// `columns` picks given those keys (metric, param, tag keys): `metrics.<key>`,
    /// `params.<key>`, `tags.<key>`; others are [`TableCell::Missing`].
    ///
    /// Unlike [`Store::search_runs`] this never loads a run's other metrics, params, tags or
    /// inputs. The key lists are three `DISTINCT` queries run side by side on the read pool,
    /// scoped by a subquery over the matching runs; the rows are then one query, one row per
    /// run, each column a correlated subquery on its table's primary key. When the filter
    /// must be checked in memory, the runs are read first and the keys and values are read
    /// for the matching ids in chunks instead. When more than `limit` runs match, the key
    /// lists may also hold keys of runs past the limit.
    pub async fn runs_table(
        &self,
        experiment_ids: &[String],
        filter: Option<&Filter>,
        view: ViewType,
        limit: usize,
        columns: impl FnOnce(&[String], &[String], &[String]) -> Vec<String>,
    ) -> Result<RunsTable> {
        let backend = self.db.get_database_backend();
        let experiment_ids = parse_experiment_ids(experiment_ids);
        if experiment_ids.is_empty() {
            return Ok(RunsTable::default());
        }
        let mut scope = Query::select();
        scope
            .from_as(run::Entity, Alias::new(MAIN))
            .and_where(col(MAIN, "experiment_id").is_in(experiment_ids))
            .and_where(col(MAIN, "lifecycle_stage").is_in(view.stages().iter().copied()));
        let mut exact = true;
        if let Some(filter) = filter {
            let (cond, is_exact) = filter_sql(filter, &RUN_SCHEMA, backend);
            scope.and_where(cond);
            exact = is_exact;
        }
        let mut stmt = scope.clone();
        stmt.columns(
            [
                run::Column::RunUuid,
                run::Column::ExperimentId,
                run::Column::Name,
                run::Column::Status,
                run::Column::StartTime,
                run::Column::EndTime,
                run::Column::LifecycleStage,
                run::Column::ArtifactUri,
                run::Column::UserId,
            ]
            .map(|c| (Alias::new(MAIN), c)),
        )
        .order_by_expr(col(MAIN, "start_time"), Order::Desc)
        .order_by_expr(col(MAIN, "run_uuid"), Order::Asc);
        scope.column((Alias::new(MAIN), run::Column::RunUuid));
        if exact {
            let (metric_keys, param_keys, tag_keys) = self.table_key_lists(&TableScope::Sub(&scope)).await?;
            let columns = columns(&metric_keys, &param_keys, &tag_keys);
            let rows = if columns.len() <= ONE_QUERY_COLUMNS {
                self.table_rows(&stmt, &columns, limit).await?
            } else {
                let (runs, _) = scan::<run::Model>(&self.db, &stmt, filter, exact, limit, 0).await?;
                self.table_cells(runs, &columns, &TableScope::Sub(&scope)).await?
            };
            return Ok(RunsTable { metric_keys, param_keys, tag_keys, columns, rows });
        }
        let (runs, _) = scan::<run::Model>(&self.db, &stmt, filter, exact, limit, 0).await?;
        if runs.is_empty() {
            return Ok(RunsTable::default());
        }
        let ids: Vec<String> = runs.iter().map(|r| r.run_uuid.clone()).collect();
        let scope = TableScope::Ids(&ids);
        let (metric_keys, param_keys, tag_keys) = self.table_key_lists(&scope).await?;
        let columns = columns(&metric_keys, &param_keys, &tag_keys);
        let rows = self.table_cells(runs, &columns, &scope).await?;
        Ok(RunsTable { metric_keys, param_keys, tag_keys, columns, rows })
    }

    /// `runs` with the values of `columns` read as `run_uuid, key, value` rows per table
    /// over the scope (which holds the runs): for filters checked in memory, and for more
    /// columns than one query should carry.
    async fn table_cells(
        &self,
        runs: Vec<run::Model>,
        columns: &[String],
        scope: &TableScope<'_>,
    ) -> Result<Vec<RunsTableRow>> {
        let index: HashMap<&str, usize> = runs.iter().enumerate().map(|(i, r)| (r.run_uuid.as_str(), i)).collect();
        let mut wanted: HashMap<&'static str, KeyColumns<'_>> = HashMap::new();
        for (j, c) in columns.iter().enumerate() {
            if let Some((table, key)) = table_column(c) {
                wanted.entry(table).or_default().entry(key).or_default().push(j);
            }
        }
        let none = KeyColumns::new();
        let metric_cols = wanted.get("latest_metrics").unwrap_or(&none);
        let param_cols = wanted.get("params").unwrap_or(&none);
        let tag_cols = wanted.get("tags").unwrap_or(&none);
        let (metrics, params, tags) = futures_util::try_join!(
            self.table_values::<TableMetric>("latest_metrics", &["value", "is_nan"], metric_cols, scope),
            self.table_values::<TableText>("params", &["value"], param_cols, scope),
            self.table_values::<TableText>("tags", &["value"], tag_cols, scope),
        )?;
        let mut cells = vec![vec![TableCell::Missing; columns.len()]; runs.len()];
        for m in metrics {
            if let (Some(&i), Some(js)) = (index.get(m.run_uuid.as_str()), metric_cols.get(m.key.as_str())) {
                for &j in js {
                    if !m.is_nan {
                        cells[i][j] = TableCell::Number(m.value);
                    }
                }
            }
        }
        for (rows, cols) in [(params, param_cols), (tags, tag_cols)] {
            for t in rows {
                if let (Some(&i), Some(js)) = (index.get(t.run_uuid.as_str()), cols.get(t.key.as_str())) {
                    for &j in js {
                        cells[i][j] = TableCell::Text(t.value.clone());
                    }
                }
            }
        }
        Ok(runs
            .into_iter()
            .zip(cells)
            .map(|(r, cells)| RunsTableRow {
                run_id: r.run_uuid,
                run_name: r.name,
                status: r.status,
                start_time: r.start_time,
                cells,
            })
            .collect())
    }

    /// Metric, param and tag keys (without `mlflow.*` tags) over the scope's runs, sorted.
    async fn table_key_lists(&self, scope: &TableScope<'_>) -> Result<(Vec<String>, Vec<String>, Vec<String>)> {
        let (metrics, params, tags) = futures_util::try_join!(
            self.table_keys("latest_metrics", scope),
            self.table_keys("params", scope),
            self.table_keys("tags", scope),
        )?;
        Ok((metrics, params, tags.into_iter().filter(|k| !k.starts_with("mlflow.")).collect()))
    }

    /// The runs `stmt` selects (its order, at most `limit`), each with the values of
    /// `columns`: one query, one correlated subquery per column on its table's primary key
    /// (`run_uuid`, `key`).
    async fn table_rows(&self, stmt: &SelectStatement, columns: &[String], limit: usize) -> Result<Vec<RunsTableRow>> {
        let backend = self.db.get_database_backend();
        let mut one = stmt.clone();
        let mut metric = Vec::with_capacity(columns.len());
        for (j, c) in columns.iter().enumerate() {
            let Some((table, key)) = table_column(c) else {
                metric.push(None);
                continue;
            };
            let is_metric = table == "latest_metrics";
            let value =
                if is_metric { Expr::cust("CASE WHEN x.is_nan THEN NULL ELSE x.value END") } else { col("x", "value") };
            let mut sub = Query::select();
            sub.expr(value)
                .from_as(Alias::new(table), Alias::new("x"))
                .and_where(col("x", "run_uuid").equals((Alias::new(MAIN), Alias::new("run_uuid"))))
                .and_where(col("x", "key").eq(key));
            one.expr_as(Expr::SubQuery(None, Box::new(sub.into())), Alias::new(format!("c{j}")));
            metric.push(Some(is_metric));
        }
        one.limit(limit as u64);
        let rows = self.db.query_all_raw(backend.build(&one)).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut cells = Vec::with_capacity(columns.len());
            for (j, m) in metric.iter().enumerate() {
                let name = format!("c{j}");
                cells.push(match m {
                    None => TableCell::Missing,
                    Some(true) => row.try_get::<Option<f64>>("", &name)?.map_or(TableCell::Missing, TableCell::Number),
                    Some(false) => {
                        row.try_get::<Option<String>>("", &name)?.map_or(TableCell::Missing, TableCell::Text)
                    }
                });
            }
            out.push(RunsTableRow {
                run_id: row.try_get("", "run_uuid")?,
                run_name: row.try_get("", "name")?,
                status: row.try_get("", "status")?,
                start_time: row.try_get("", "start_time")?,
                cells,
            });
        }
        Ok(out)
    }

    /// The distinct keys of `table` (latest_metrics, params, tags) over the scope's runs,
    /// sorted.
    async fn table_keys(&self, table: &str, scope: &TableScope<'_>) -> Result<Vec<String>> {
        let backend = self.db.get_database_backend();
        let mut keys = BTreeSet::new();
        for runs in scope.conditions() {
            let mut s = Query::select();
            s.distinct().column(Alias::new("key")).from(Alias::new(table)).and_where(runs);
            for k in TableKey::find_by_statement(backend.build(&s)).all(&self.db).await? {
                keys.insert(k.key);
            }
        }
        Ok(keys.into_iter().collect())
    }

    /// `run_uuid, key, <value columns>` of `table` for the asked keys over the scope's runs
    /// (nothing when no key is asked).
    async fn table_values<R: FromQueryResult>(
        &self,
        table: &str,
        value_columns: &[&str],
        keys: &KeyColumns<'_>,
        scope: &TableScope<'_>,
    ) -> Result<Vec<R>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let backend = self.db.get_database_backend();
        let mut out = Vec::new();
        for runs in scope.conditions() {
            let mut s = Query::select();
            s.column(Alias::new("run_uuid")).column(Alias::new("key"));
            for c in value_columns {
                s.column(Alias::new(*c));
            }
            s.from(Alias::new(table))
                .and_where(Expr::col(Alias::new("key")).is_in(keys.keys().copied()))
                .and_where(runs);
            out.extend(R::find_by_statement(backend.build(&s)).all(&self.db).await?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_match_mlflow_s() {
        for offset in [0u64, 1, 7, 1000, 49_999, u64::from(u32::MAX) * 3] {
            assert_eq!(decode_page_token(&encode_page_token(offset)), Some(offset));
        }
        // Python: base64.b64encode(json.dumps({"offset": 100}).encode())
        assert_eq!(encode_page_token(100), "eyJvZmZzZXQiOiAxMDB9");
        assert_eq!(decode_page_token("eyJvZmZzZXQiOiAxMDB9"), Some(100));
        for bad in ["", "!!", "bm90IGpzb24=", "eyJvZmZzZXQiOiAtMX0=", "eyJmb28iOiAxfQ=="] {
            assert_eq!(decode_page_token(bad), None, "{bad}");
        }
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
        for s in [&b"any carnal pleas"[..], b"\xff\xfe\x00", b"x"] {
            assert_eq!(base64_decode(&base64_encode(s)).unwrap(), s);
        }
    }

    #[test]
    fn like_patterns_become_globs() {
        assert_eq!(like_to_glob("a%b_c"), "a*b?c");
        assert_eq!(like_to_glob("*?[x]"), "[*][?][[]x]");
        assert_eq!(like_to_glob("%"), "*");
    }

    #[test]
    fn needs_collects_keys_by_entity() {
        let f = capstan_search::parse_filter(
            "metrics.acc > 0.5 AND (params.lr = '0.1' OR tags.t IS NULL) AND datasets.name = 'd' AND user_id = 'x'",
        )
        .unwrap()
        .unwrap();
        let n = Needs::of(&f);
        assert_eq!(n.metrics.into_iter().collect::<Vec<_>>(), ["acc"]);
        assert_eq!(n.params.into_iter().collect::<Vec<_>>(), ["lr"]);
        assert_eq!(n.tags.into_iter().collect::<Vec<_>>(), ["t"]);
        assert!(n.datasets);
        assert!(n.attributes.contains("user_id"));
    }

    #[test]
    fn exactness_of_translations() {
        let exact = |s: &str| {
            let f = capstan_search::parse_filter(s).unwrap().unwrap();
            filter_sql(&f, &RUN_SCHEMA, DbBackend::Sqlite).1
        };
        assert!(exact("metrics.acc > 0.5 AND params.p LIKE 'a%' OR tags.t IN ('x', 'y')"));
        assert!(exact("params.p ILIKE 'A%'"));
        assert!(!exact("params.p ILIKE 'ka%'"));
        assert!(!exact("params.p ILIKE 'é%'"));
        assert!(exact("attributes.user_id = 'me' OR attributes.user_id != 'x'"));
        assert!(exact("datasets.context = 'training' AND status = 'FINISHED'"));
    }
}
