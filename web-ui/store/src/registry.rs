//! The model registry (registered models, numbered versions, stages, tags, aliases) and
//! MLflow 3's logged models.
//!
//! Beyond MLflow: every change of an alias (set, moved, deleted, removed with its version or
//! model) is kept as a [`AliasEvent`] with who and when, and outlives the model
//! ([`Store::alias_history`]). Version numbers are never reused: a model remembers the
//! highest number it gave out, so deleting version 3 and registering again gives 4.

use std::collections::{BTreeMap, HashMap};

use capstan_search::{Entity, Expr as Filter, Op, OrderBy, SearchTarget, Value as FilterValue};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, JoinType, OnConflict, Order, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, DatabaseConnection, DatabaseTransaction, EntityTrait, FromQueryResult,
    IntoActiveModel, QueryFilter, QueryOrder,
};

use crate::entities::{
    experiment, logged_model, logged_model_param, logged_model_tag, model_version, model_version_tag, registered_model,
    registered_model_alias, registered_model_alias_event, registered_model_tag,
};
use crate::runs_search::{
    col, filter_sql, order_exprs, scan, Attr, AttrSql, KvTable, Needs, Page, RowView, Searchable, SqlSchema, MAIN,
};
use crate::{last_wins, now_ms, parse_experiment_id, Result, Store, StoreError, CHUNK_ROWS};

/// Tag of a registered model (or version) that makes it a prompt; prompts are left out of
/// searches unless the filter asks about this tag (as MLflow does).
pub const TAG_IS_PROMPT: &str = "mlflow.prompt.is_prompt";
/// Tag of a logged model listing the model versions registered from it (JSON).
pub const TAG_MODEL_VERSIONS: &str = "mlflow.modelVersions";
/// The stages a model version can be in.
pub const STAGES: [&str; 4] = ["None", "Staging", "Production", "Archived"];

/// A registered model (MLflow's shape).
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredModelRecord {
    /// Unique name.
    pub name: String,
    /// ms since epoch.
    pub creation_timestamp: i64,
    /// ms since epoch.
    pub last_updated_timestamp: i64,
    /// Description.
    pub description: Option<String>,
    /// Tags, sorted by key.
    pub tags: Vec<(String, String)>,
    /// (alias, version), sorted by alias.
    pub aliases: Vec<(String, i64)>,
    /// The highest version in each stage, by stage order (None, Staging, Production, Archived).
    pub latest_versions: Vec<ModelVersionRecord>,
}

/// A model version (MLflow's shape).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelVersionRecord {
    /// Registered model name.
    pub name: String,
    /// 1, 2, ...
    pub version: i64,
    /// ms since epoch.
    pub creation_timestamp: i64,
    /// ms since epoch.
    pub last_updated_timestamp: i64,
    /// User ("" when unknown).
    pub user_id: String,
    /// None, Staging, Production or Archived.
    pub current_stage: String,
    /// Description.
    pub description: Option<String>,
    /// Source URI as given.
    pub source: String,
    /// Where the artifacts are, when not `source` (a logged model's artifact location).
    pub storage_location: Option<String>,
    /// Run that produced it.
    pub run_id: Option<String>,
    /// Link to the run.
    pub run_link: Option<String>,
    /// READY.
    pub status: String,
    /// Status message.
    pub status_message: Option<String>,
    /// Tags, sorted by key.
    pub tags: Vec<(String, String)>,
    /// Aliases pointing to it, sorted.
    pub aliases: Vec<String>,
    /// Logged model it was registered from.
    pub model_id: Option<String>,
}

/// What a new model version is made of.
#[derive(Debug, Clone, Default)]
pub struct NewModelVersion {
    /// Registered model name.
    pub name: String,
    /// Source URI.
    pub source: String,
    /// Where the artifacts are when not `source`.
    pub storage_location: Option<String>,
    /// Run that produced it.
    pub run_id: Option<String>,
    /// Link to the run.
    pub run_link: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: Vec<(String, String)>,
    /// Logged model it comes from (its `mlflow.modelVersions` tag gets this version).
    pub model_id: Option<String>,
    /// User.
    pub user_id: String,
}

/// One change of an alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasEvent {
    /// The model's name when it happened.
    pub model_name: String,
    /// Alias.
    pub alias: String,
    /// Version before (None: the alias was new).
    pub from_version: Option<i64>,
    /// Version after (None: the alias was removed).
    pub to_version: Option<i64>,
    /// Who.
    pub user: String,
    /// ms since epoch.
    pub timestamp: i64,
    /// `set`, `deleted`, `version deleted` or `model deleted`.
    pub reason: String,
}

/// A logged model (MLflow 3's shape).
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedModelRecord {
    /// `m-` and 32 hex characters.
    pub model_id: String,
    /// Experiment id.
    pub experiment_id: String,
    /// Name.
    pub name: String,
    /// `<experiment artifact location>/models/<model_id>/artifacts`.
    pub artifact_location: String,
    /// ms since epoch.
    pub creation_timestamp_ms: i64,
    /// ms since epoch.
    pub last_updated_timestamp_ms: i64,
    /// LOGGED_MODEL_PENDING, LOGGED_MODEL_READY or LOGGED_MODEL_UPLOAD_FAILED.
    pub status: String,
    /// "active" or "deleted".
    pub lifecycle_stage: String,
    /// Model type.
    pub model_type: Option<String>,
    /// Run that produced it.
    pub source_run_id: Option<String>,
    /// Status message.
    pub status_message: Option<String>,
    /// Tags, sorted by key.
    pub tags: Vec<(String, String)>,
    /// Params, sorted by key.
    pub params: Vec<(String, String)>,
}

/// A search of registered models or model versions.
#[derive(Debug, Clone, Copy)]
pub struct RegistryQuery<'a> {
    /// Parsed filter (None: everything).
    pub filter: Option<&'a Filter>,
    /// Order (attributes).
    pub order_by: &'a [OrderBy],
    /// Page size (at least 1).
    pub max_results: usize,
    /// Where the page starts.
    pub offset: u64,
}

/// A search of logged models.
#[derive(Debug, Clone, Copy)]
pub struct LoggedModelQuery<'a> {
    /// Experiments to search.
    pub experiment_ids: &'a [String],
    /// Parsed filter, checked in memory (attributes `name`, `model_id`, `status`,
    /// `model_type`, `source_run_id`, params and tags).
    pub filter: Option<&'a Filter>,
    /// (attribute column, ascending): `name`, `model_id`, `creation_timestamp`,
    /// `last_updated_timestamp`, `status`, `model_type`, `source_run_id`.
    pub order_by: &'a [(String, bool)],
    /// Page size (at least 1).
    pub max_results: usize,
    /// Where the page starts.
    pub offset: u64,
}

fn model_not_found(name: &str) -> StoreError {
    StoreError::NotFound(format!("registered model '{name}'"))
}

fn version_not_found(name: &str, version: i64) -> StoreError {
    StoreError::NotFound(format!("model version (name={name}, version={version})"))
}

fn logged_model_not_found(model_id: &str) -> StoreError {
    StoreError::NotFound(format!("logged model {model_id}"))
}

/// A model version row with its model's name, as searches read it.
#[derive(Debug, Clone, FromQueryResult)]
pub(crate) struct MvRow {
    model_id: i64,
    version: i64,
    creation_timestamp: i64,
    last_updated_timestamp: i64,
    user_id: String,
    current_stage: String,
    description: Option<String>,
    source: String,
    storage_location: Option<String>,
    run_id: Option<String>,
    run_link: Option<String>,
    status: String,
    status_message: Option<String>,
    logged_model_id: Option<String>,
    model_name: String,
}

/// `SELECT t.*, rm.name AS model_name FROM model_versions t JOIN registered_models rm`.
fn mv_select() -> sea_orm::sea_query::SelectStatement {
    let mut stmt = Query::select();
    stmt.columns(
        [
            model_version::Column::ModelId,
            model_version::Column::Version,
            model_version::Column::CreationTimestamp,
            model_version::Column::LastUpdatedTimestamp,
            model_version::Column::UserId,
            model_version::Column::CurrentStage,
            model_version::Column::Description,
            model_version::Column::Source,
            model_version::Column::StorageLocation,
            model_version::Column::RunId,
            model_version::Column::RunLink,
            model_version::Column::Status,
            model_version::Column::StatusMessage,
            model_version::Column::LoggedModelId,
        ]
        .map(|c| (Alias::new(MAIN), c)),
    )
    .expr_as(col("rm", "name"), Alias::new("model_name"))
    .from_as(model_version::Entity, Alias::new(MAIN))
    .join_as(
        JoinType::InnerJoin,
        registered_model::Entity,
        Alias::new("rm"),
        col("rm", "id").equals((Alias::new(MAIN), Alias::new("model_id"))),
    );
    stmt
}

async fn mv_rows<C: sea_orm::ConnectionTrait>(
    conn: &C,
    stmt: &sea_orm::sea_query::SelectStatement,
) -> Result<Vec<MvRow>> {
    Ok(MvRow::find_by_statement(conn.get_database_backend().build(stmt)).all(conn).await?)
}

/// Full records of model version rows (tags and aliases loaded), in the order given.
async fn load_versions<C: sea_orm::ConnectionTrait>(conn: &C, rows: Vec<MvRow>) -> Result<Vec<ModelVersionRecord>> {
    let mut tags: HashMap<(i64, i64), Vec<(String, String)>> = HashMap::new();
    let mut aliases: HashMap<(i64, i64), Vec<String>> = HashMap::new();
    let model_ids: Vec<i64> =
        rows.iter().map(|r| r.model_id).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    for chunk in model_ids.chunks(CHUNK_ROWS) {
        for t in model_version_tag::Entity::find()
            .filter(model_version_tag::Column::ModelId.is_in(chunk.iter().copied()))
            .order_by_asc(model_version_tag::Column::Key)
            .all(conn)
            .await?
        {
            tags.entry((t.model_id, t.version)).or_default().push((t.key, t.value));
        }
        for a in registered_model_alias::Entity::find()
            .filter(registered_model_alias::Column::ModelId.is_in(chunk.iter().copied()))
            .order_by_asc(registered_model_alias::Column::Alias)
            .all(conn)
            .await?
        {
            aliases.entry((a.model_id, a.version)).or_default().push(a.alias);
        }
    }
    Ok(rows
        .into_iter()
        .map(|r| {
            let key = (r.model_id, r.version);
            ModelVersionRecord {
                name: r.model_name,
                version: r.version,
                creation_timestamp: r.creation_timestamp,
                last_updated_timestamp: r.last_updated_timestamp,
                user_id: r.user_id,
                current_stage: r.current_stage,
                description: r.description,
                source: r.source,
                storage_location: r.storage_location,
                run_id: r.run_id,
                run_link: r.run_link,
                status: r.status,
                status_message: r.status_message,
                tags: tags.remove(&key).unwrap_or_default(),
                aliases: aliases.remove(&key).unwrap_or_default(),
                model_id: r.logged_model_id,
            }
        })
        .collect())
}

/// One model version by model id and number.
async fn version_by_id<C: sea_orm::ConnectionTrait>(
    conn: &C,
    model_id: i64,
    version: i64,
) -> Result<Option<ModelVersionRecord>> {
    let mut stmt = mv_select();
    stmt.and_where(col(MAIN, "model_id").eq(model_id)).and_where(col(MAIN, "version").eq(version));
    Ok(load_versions(conn, mv_rows(conn, &stmt).await?).await?.pop())
}

/// Full records of registered models (tags, aliases, latest version per stage), in order.
async fn load_models<C: sea_orm::ConnectionTrait>(
    conn: &C,
    rows: Vec<registered_model::Model>,
) -> Result<Vec<RegisteredModelRecord>> {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut tags: HashMap<i64, Vec<(String, String)>> = HashMap::new();
    let mut aliases: HashMap<i64, Vec<(String, i64)>> = HashMap::new();
    let mut latest: HashMap<i64, Vec<ModelVersionRecord>> = HashMap::new();
    for chunk in ids.chunks(CHUNK_ROWS) {
        for t in registered_model_tag::Entity::find()
            .filter(registered_model_tag::Column::ModelId.is_in(chunk.iter().copied()))
            .order_by_asc(registered_model_tag::Column::Key)
            .all(conn)
            .await?
        {
            tags.entry(t.model_id).or_default().push((t.key, t.value));
        }
        for a in registered_model_alias::Entity::find()
            .filter(registered_model_alias::Column::ModelId.is_in(chunk.iter().copied()))
            .order_by_asc(registered_model_alias::Column::Alias)
            .all(conn)
            .await?
        {
            aliases.entry(a.model_id).or_default().push((a.alias, a.version));
        }
        // The highest version of each (model, stage).
        let mut top = Query::select();
        top.column(model_version::Column::ModelId)
            .column(model_version::Column::CurrentStage)
            .expr_as(Expr::col(model_version::Column::Version).max(), Alias::new("version"))
            .from(model_version::Entity)
            .and_where(Expr::col(model_version::Column::ModelId).is_in(chunk.iter().copied()))
            .group_by_columns([model_version::Column::ModelId, model_version::Column::CurrentStage]);
        #[derive(FromQueryResult)]
        struct Top {
            model_id: i64,
            version: i64,
        }
        let tops = Top::find_by_statement(conn.get_database_backend().build(&top)).all(conn).await?;
        if tops.is_empty() {
            continue;
        }
        let mut stmt = mv_select();
        let mut any = Expr::cust("1 = 0");
        for t in &tops {
            any = any.or(col(MAIN, "model_id").eq(t.model_id).and(col(MAIN, "version").eq(t.version)));
        }
        stmt.and_where(any);
        for v in load_versions(conn, mv_rows(conn, &stmt).await?).await? {
            let id = rows.iter().find(|r| r.name == v.name).map(|r| r.id).unwrap_or_default();
            latest.entry(id).or_default().push(v);
        }
    }
    Ok(rows
        .into_iter()
        .map(|r| {
            let mut latest_versions = latest.remove(&r.id).unwrap_or_default();
            latest_versions.sort_by_key(|v| (STAGES.iter().position(|s| *s == v.current_stage), v.version));
            RegisteredModelRecord {
                name: r.name,
                creation_timestamp: r.creation_timestamp,
                last_updated_timestamp: r.last_updated_timestamp,
                description: r.description,
                tags: tags.remove(&r.id).unwrap_or_default(),
                aliases: aliases.remove(&r.id).unwrap_or_default(),
                latest_versions,
            }
        })
        .collect())
}

async fn find_model<C: sea_orm::ConnectionTrait>(conn: &C, name: &str) -> Result<registered_model::Model> {
    registered_model::Entity::find()
        .filter(registered_model::Column::Name.eq(name))
        .one(conn)
        .await?
        .ok_or_else(|| model_not_found(name))
}

async fn find_version<C: sea_orm::ConnectionTrait>(
    conn: &C,
    model: &registered_model::Model,
    version: i64,
) -> Result<model_version::Model> {
    model_version::Entity::find_by_id((model.id, version))
        .one(conn)
        .await?
        .ok_or_else(|| version_not_found(&model.name, version))
}

/// Touch a model's last_updated_timestamp.
async fn touch_model(txn: &DatabaseTransaction, model_id: i64, now: i64) -> Result<()> {
    registered_model::Entity::update_many()
        .col_expr(registered_model::Column::LastUpdatedTimestamp, Expr::value(now))
        .filter(registered_model::Column::Id.eq(model_id))
        .exec(txn)
        .await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn record_alias_event(
    txn: &DatabaseTransaction,
    model: &registered_model::Model,
    alias: &str,
    from_version: Option<i64>,
    to_version: Option<i64>,
    user: &str,
    now: i64,
    reason: &str,
) -> Result<()> {
    registered_model_alias_event::Entity::insert(registered_model_alias_event::ActiveModel {
        id: ActiveValue::NotSet,
        model_id: ActiveValue::Set(model.id),
        model_name: ActiveValue::Set(model.name.clone()),
        alias: ActiveValue::Set(alias.to_owned()),
        from_version: ActiveValue::Set(from_version),
        to_version: ActiveValue::Set(to_version),
        user_name: ActiveValue::Set(user.to_owned()),
        timestamp: ActiveValue::Set(now),
        reason: ActiveValue::Set(reason.to_owned()),
    })
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

/// Remove the aliases of `model` (those of `version` only, when given), recording each.
async fn drop_aliases(
    txn: &DatabaseTransaction,
    model: &registered_model::Model,
    version: Option<i64>,
    user: &str,
    now: i64,
    reason: &str,
) -> Result<()> {
    let mut query = registered_model_alias::Entity::find().filter(registered_model_alias::Column::ModelId.eq(model.id));
    if let Some(v) = version {
        query = query.filter(registered_model_alias::Column::Version.eq(v));
    }
    for a in query.order_by_asc(registered_model_alias::Column::Alias).all(txn).await? {
        record_alias_event(txn, model, &a.alias, Some(a.version), None, user, now, reason).await?;
        registered_model_alias::Entity::delete_by_id((a.model_id, a.alias)).exec(txn).await?;
    }
    Ok(())
}

/// Upsert `(owner, key) -> value` rows of a tag table.
macro_rules! upsert_tags {
    ($txn:expr, $entity:ident, $rows:expr, [$($pk:ident),+]) => {
        for chunk in $rows.chunks(CHUNK_ROWS) {
            $entity::Entity::insert_many(chunk.iter().cloned())
                .on_conflict(
                    OnConflict::columns([$($entity::Column::$pk),+])
                        .update_column($entity::Column::Value)
                        .to_owned(),
                )
                .exec_without_returning($txn)
                .await?;
        }
    };
}

// ---------------------------------------------------------------------------------------
// Search schemas
// ---------------------------------------------------------------------------------------

fn registered_model_attr(name: &str) -> AttrSql {
    match name {
        "name" => AttrSql::Col(MAIN, "name"),
        "creation_timestamp" => AttrSql::Col(MAIN, "creation_timestamp"),
        "last_updated_timestamp" => AttrSql::Col(MAIN, "last_updated_timestamp"),
        _ => AttrSql::InMemory,
    }
}

const REGISTERED_MODEL_SCHEMA: SqlSchema = SqlSchema {
    target: SearchTarget::RegisteredModels,
    attr: registered_model_attr,
    metrics: None,
    params: None,
    tags: Some(KvTable {
        table: "registered_model_tags",
        link: &[("model_id", "id")],
        key: "key",
        value: "value",
        is_nan: None,
    }),
    datasets: false,
};

fn model_version_attr(name: &str) -> AttrSql {
    match name {
        "name" => AttrSql::Col("rm", "name"),
        "version_number" => AttrSql::Col(MAIN, "version"),
        "run_id" => AttrSql::Col(MAIN, "run_id"),
        "source_path" => AttrSql::Col(MAIN, "source"),
        "creation_timestamp" => AttrSql::Col(MAIN, "creation_timestamp"),
        "last_updated_timestamp" => AttrSql::Col(MAIN, "last_updated_timestamp"),
        _ => AttrSql::InMemory,
    }
}

const MODEL_VERSION_SCHEMA: SqlSchema = SqlSchema {
    target: SearchTarget::ModelVersions,
    attr: model_version_attr,
    metrics: None,
    params: None,
    tags: Some(KvTable {
        table: "model_version_tags",
        link: &[("model_id", "model_id"), ("version", "version")],
        key: "key",
        value: "value",
        is_nan: None,
    }),
    datasets: false,
};

/// Whether a filter asks for prompts (`tags.mlflow.prompt.is_prompt = 'true'`, or `!=
/// 'false'`), as MLflow decides it.
fn asks_for_prompts(filter: Option<&Filter>) -> bool {
    filter.is_some_and(|f| {
        f.comparisons().iter().any(|c| {
            let FilterValue::String(v) = &c.value else { return false };
            c.entity == Entity::Tag
                && c.key == TAG_IS_PROMPT
                && ((c.op == Op::Eq && v.eq_ignore_ascii_case("true"))
                    || (c.op == Op::Ne && v.eq_ignore_ascii_case("false")))
        })
    })
}

/// The filter without its comparisons on the prompt tag (each becomes "true"): when not
/// searching prompts, MLflow drops them and leaves prompts out instead. (The client adds
/// `tag.mlflow.prompt.is_prompt != 'true'` to every registered-model search.)
fn without_prompt_clauses(filter: &Filter) -> Filter {
    match filter {
        Filter::Cmp(c) if c.entity == Entity::Tag && c.key == TAG_IS_PROMPT => Filter::And(Vec::new()),
        Filter::Cmp(c) => Filter::Cmp(c.clone()),
        Filter::And(children) => Filter::And(children.iter().map(without_prompt_clauses).collect()),
        Filter::Or(children) => Filter::Or(children.iter().map(without_prompt_clauses).collect()),
    }
}

/// The filter a registry search runs, and whether prompts are left out.
fn registry_filter(filter: Option<&Filter>) -> (Option<Filter>, bool) {
    if asks_for_prompts(filter) {
        (filter.cloned(), false)
    } else {
        (filter.map(without_prompt_clauses), true)
    }
}

/// `NOT EXISTS (tag mlflow.prompt.is_prompt = 'true')` on a tag table linked like `kv`.
fn not_a_prompt(kv: &KvTable) -> Expr {
    let mut sub = Query::select();
    sub.expr(Expr::val(1)).from_as(Alias::new(kv.table), Alias::new("p"));
    for (child, parent) in kv.link {
        sub.and_where(col("p", child).equals((Alias::new(MAIN), Alias::new(*parent))));
    }
    sub.and_where(col("p", "key").eq(TAG_IS_PROMPT)).and_where(Expr::expr(col("p", "value")).eq("true"));
    Expr::not_exists(sub)
}

impl Searchable for registered_model::Model {
    async fn views<'a>(conn: &'a DatabaseConnection, rows: &'a [Self], needs: &'a Needs) -> Result<Vec<RowView>> {
        let mut tags: HashMap<i64, HashMap<String, String>> = HashMap::new();
        if !needs.tags.is_empty() {
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            for chunk in ids.chunks(CHUNK_ROWS) {
                for t in registered_model_tag::Entity::find()
                    .filter(registered_model_tag::Column::ModelId.is_in(chunk.iter().copied()))
                    .filter(registered_model_tag::Column::Key.is_in(needs.tags.iter().map(String::as_str)))
                    .all(conn)
                    .await?
                {
                    tags.entry(t.model_id).or_default().insert(t.key, t.value);
                }
            }
        }
        Ok(rows
            .iter()
            .map(|r| RowView {
                attrs: vec![
                    ("name", Some(Attr::Str(r.name.clone()))),
                    ("creation_timestamp", Some(Attr::Num(r.creation_timestamp as f64))),
                    ("last_updated_timestamp", Some(Attr::Num(r.last_updated_timestamp as f64))),
                ],
                tags: tags.remove(&r.id).unwrap_or_default(),
                ..RowView::default()
            })
            .collect())
    }
}

impl Searchable for MvRow {
    async fn views<'a>(conn: &'a DatabaseConnection, rows: &'a [Self], needs: &'a Needs) -> Result<Vec<RowView>> {
        let mut tags: HashMap<(i64, i64), HashMap<String, String>> = HashMap::new();
        if !needs.tags.is_empty() {
            let ids: Vec<i64> =
                rows.iter().map(|r| r.model_id).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
            for chunk in ids.chunks(CHUNK_ROWS) {
                for t in model_version_tag::Entity::find()
                    .filter(model_version_tag::Column::ModelId.is_in(chunk.iter().copied()))
                    .filter(model_version_tag::Column::Key.is_in(needs.tags.iter().map(String::as_str)))
                    .all(conn)
                    .await?
                {
                    tags.entry((t.model_id, t.version)).or_default().insert(t.key, t.value);
                }
            }
        }
        Ok(rows
            .iter()
            .map(|r| RowView {
                attrs: vec![
                    ("name", Some(Attr::Str(r.model_name.clone()))),
                    ("version_number", Some(Attr::Num(r.version as f64))),
                    ("run_id", r.run_id.clone().map(Attr::Str)),
                    ("source_path", Some(Attr::Str(r.source.clone()))),
                    ("creation_timestamp", Some(Attr::Num(r.creation_timestamp as f64))),
                    ("last_updated_timestamp", Some(Attr::Num(r.last_updated_timestamp as f64))),
                ],
                tags: tags.remove(&(r.model_id, r.version)).unwrap_or_default(),
                ..RowView::default()
            })
            .collect())
    }
}

impl Searchable for logged_model::Model {
    async fn views<'a>(conn: &'a DatabaseConnection, rows: &'a [Self], needs: &'a Needs) -> Result<Vec<RowView>> {
        let ids: Vec<&str> = rows.iter().map(|r| r.model_id.as_str()).collect();
        let mut views: HashMap<String, RowView> = HashMap::new();
        for chunk in ids.chunks(CHUNK_ROWS) {
            if !needs.tags.is_empty() {
                for t in logged_model_tag::Entity::find()
                    .filter(logged_model_tag::Column::ModelId.is_in(chunk.iter().copied()))
                    .filter(logged_model_tag::Column::Key.is_in(needs.tags.iter().map(String::as_str)))
                    .all(conn)
                    .await?
                {
                    views.entry(t.model_id).or_default().tags.insert(t.key, t.value);
                }
            }
            if !needs.params.is_empty() {
                for p in logged_model_param::Entity::find()
                    .filter(logged_model_param::Column::ModelId.is_in(chunk.iter().copied()))
                    .filter(logged_model_param::Column::Key.is_in(needs.params.iter().map(String::as_str)))
                    .all(conn)
                    .await?
                {
                    views.entry(p.model_id).or_default().params.insert(p.key, p.value);
                }
            }
        }
        Ok(rows
            .iter()
            .map(|r| {
                let mut v = views.remove(&r.model_id).unwrap_or_default();
                let created = Some(Attr::Num(r.creation_timestamp_ms as f64));
                let run = r.source_run_id.clone().map(Attr::Str);
                v.attrs = vec![
                    ("name", Some(Attr::Str(r.name.clone()))),
                    ("model_id", Some(Attr::Str(r.model_id.clone()))),
                    ("status", Some(Attr::Str(r.status.clone()))),
                    ("model_type", r.model_type.clone().map(Attr::Str)),
                    ("source_run_id", run.clone()),
                    ("run_id", run),
                    ("creation_timestamp", created.clone()),
                    ("start_time", created),
                    ("last_updated_timestamp", Some(Attr::Num(r.last_updated_timestamp_ms as f64))),
                    ("lifecycle_stage", Some(Attr::Str(r.lifecycle_stage.clone()))),
                ];
                v
            })
            .collect())
    }
}

async fn load_logged_models<C: sea_orm::ConnectionTrait>(
    conn: &C,
    rows: Vec<logged_model::Model>,
) -> Result<Vec<LoggedModelRecord>> {
    let ids: Vec<&str> = rows.iter().map(|r| r.model_id.as_str()).collect();
    let mut tags: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut params: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for chunk in ids.chunks(CHUNK_ROWS) {
        for t in logged_model_tag::Entity::find()
            .filter(logged_model_tag::Column::ModelId.is_in(chunk.iter().copied()))
            .order_by_asc(logged_model_tag::Column::Key)
            .all(conn)
            .await?
        {
            tags.entry(t.model_id).or_default().push((t.key, t.value));
        }
        for p in logged_model_param::Entity::find()
            .filter(logged_model_param::Column::ModelId.is_in(chunk.iter().copied()))
            .order_by_asc(logged_model_param::Column::Key)
            .all(conn)
            .await?
        {
            params.entry(p.model_id).or_default().push((p.key, p.value));
        }
    }
    Ok(rows
        .into_iter()
        .map(|m| LoggedModelRecord {
            tags: tags.remove(&m.model_id).unwrap_or_default(),
            params: params.remove(&m.model_id).unwrap_or_default(),
            experiment_id: m.experiment_id.to_string(),
            model_id: m.model_id,
            name: m.name,
            artifact_location: m.artifact_location,
            creation_timestamp_ms: m.creation_timestamp_ms,
            last_updated_timestamp_ms: m.last_updated_timestamp_ms,
            status: m.status,
            lifecycle_stage: m.lifecycle_stage,
            model_type: m.model_type,
            source_run_id: m.source_run_id,
            status_message: m.status_message,
        })
        .collect())
}

async fn logged_model_by_id<C: sea_orm::ConnectionTrait>(
    conn: &C,
    model_id: &str,
) -> Result<Option<LoggedModelRecord>> {
    let Some(m) = logged_model::Entity::find_by_id(model_id.to_owned()).one(conn).await? else {
        return Ok(None);
    };
    Ok(load_logged_models(conn, vec![m]).await?.pop())
}

/// Replace the logged model's tags given (last value of a key wins) inside `txn`.
async fn upsert_logged_model_tags(txn: &DatabaseTransaction, model_id: &str, tags: &[(String, String)]) -> Result<()> {
    let rows: Vec<logged_model_tag::ActiveModel> = last_wins(tags)
        .into_iter()
        .map(|(k, v)| logged_model_tag::ActiveModel {
            model_id: ActiveValue::Set(model_id.to_owned()),
            key: ActiveValue::Set(k),
            value: ActiveValue::Set(v),
        })
        .collect();
    upsert_tags!(txn, logged_model_tag, rows, [ModelId, Key]);
    Ok(())
}

impl Store {
    // -----------------------------------------------------------------------------------
    // Registered models
    // -----------------------------------------------------------------------------------

    /// Create a registered model. AlreadyExists if the name is taken.
    pub async fn create_registered_model(
        &self,
        name: &str,
        description: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<RegisteredModelRecord> {
        let txn = self.begin_write().await?;
        let taken = registered_model::Entity::find().filter(registered_model::Column::Name.eq(name)).one(&txn).await?;
        if taken.is_some() {
            return Err(StoreError::AlreadyExists(format!("registered model '{name}'")));
        }
        let now = now_ms();
        let inserted = registered_model::Entity::insert(registered_model::ActiveModel {
            id: ActiveValue::NotSet,
            name: ActiveValue::Set(name.to_owned()),
            creation_timestamp: ActiveValue::Set(now),
            last_updated_timestamp: ActiveValue::Set(now),
            description: ActiveValue::Set(description.map(str::to_owned)),
            last_version: ActiveValue::Set(0),
        })
        .exec(&txn)
        .await?;
        let id = inserted.last_insert_id;
        let rows: Vec<registered_model_tag::ActiveModel> = last_wins(tags)
            .into_iter()
            .map(|(k, v)| registered_model_tag::ActiveModel {
                model_id: ActiveValue::Set(id),
                key: ActiveValue::Set(k),
                value: ActiveValue::Set(v),
            })
            .collect();
        upsert_tags!(&txn, registered_model_tag, rows, [ModelId, Key]);
        let model = find_model(&txn, name).await?;
        let record = load_models(&txn, vec![model]).await?.pop().ok_or_else(|| model_not_found(name))?;
        txn.commit().await?;
        Ok(record)
    }

    /// A registered model by name.
    pub async fn get_registered_model(&self, name: &str) -> Result<Option<RegisteredModelRecord>> {
        let Some(m) =
            registered_model::Entity::find().filter(registered_model::Column::Name.eq(name)).one(&self.db).await?
        else {
            return Ok(None);
        };
        Ok(load_models(&self.db, vec![m]).await?.pop())
    }

    /// Set a registered model's description. NotFound if absent.
    pub async fn update_registered_model(
        &self,
        name: &str,
        description: Option<&str>,
    ) -> Result<RegisteredModelRecord> {
        let txn = self.begin_write().await?;
        let model = find_model(&txn, name).await?;
        let mut am = model.into_active_model();
        am.description = ActiveValue::Set(description.map(str::to_owned));
        am.last_updated_timestamp = ActiveValue::Set(now_ms());
        let model = am.update(&txn).await?;
        let record = load_models(&txn, vec![model]).await?.pop().ok_or_else(|| model_not_found(name))?;
        txn.commit().await?;
        Ok(record)
    }

    /// Rename a registered model (its versions, tags, aliases and alias history follow).
    /// NotFound if absent; AlreadyExists if the new name is taken.
    pub async fn rename_registered_model(&self, name: &str, new_name: &str) -> Result<RegisteredModelRecord> {
        let txn = self.begin_write().await?;
        let model = find_model(&txn, name).await?;
        if name != new_name {
            let taken =
                registered_model::Entity::find().filter(registered_model::Column::Name.eq(new_name)).one(&txn).await?;
            if taken.is_some() {
                return Err(StoreError::AlreadyExists(format!("registered model '{new_name}'")));
            }
        }
        let mut am = model.into_active_model();
        am.name = ActiveValue::Set(new_name.to_owned());
        am.last_updated_timestamp = ActiveValue::Set(now_ms());
        let model = am.update(&txn).await?;
        let record = load_models(&txn, vec![model]).await?.pop().ok_or_else(|| model_not_found(new_name))?;
        txn.commit().await?;
        Ok(record)
    }

    /// Delete a registered model with its versions, tags and aliases (the removal of each
    /// alias is recorded, by `user`). NotFound if absent.
    pub async fn delete_registered_model(&self, name: &str, user: &str) -> Result<()> {
        let txn = self.begin_write().await?;
        let model = find_model(&txn, name).await?;
        drop_aliases(&txn, &model, None, user, now_ms(), "model deleted").await?;
        registered_model::Entity::delete_by_id(model.id).exec(&txn).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Set (or replace) a registered model tag. NotFound if the model is absent.
    pub async fn set_registered_model_tag(&self, name: &str, key: &str, value: &str) -> Result<()> {
        let txn = self.begin_write().await?;
        let model = find_model(&txn, name).await?;
        let rows = [registered_model_tag::ActiveModel {
            model_id: ActiveValue::Set(model.id),
            key: ActiveValue::Set(key.to_owned()),
            value: ActiveValue::Set(value.to_owned()),
        }];
        upsert_tags!(&txn, registered_model_tag, rows, [ModelId, Key]);
        txn.commit().await?;
        Ok(())
    }

    /// Delete a registered model tag (absent: nothing to do). NotFound if the model is absent.
    pub async fn delete_registered_model_tag(&self, name: &str, key: &str) -> Result<()> {
        let txn = self.begin_write().await?;
        let model = find_model(&txn, name).await?;
        registered_model_tag::Entity::delete_by_id((model.id, key.to_owned())).exec(&txn).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Search registered models. Models tagged as prompts are left out, and comparisons on
    /// the prompt tag dropped, unless the filter asks for prompts (MLflow's rule). Ordered by
    /// `order_by` then name.
    pub async fn search_registered_models(&self, q: &RegistryQuery<'_>) -> Result<Page<RegisteredModelRecord>> {
        let backend = self.db.get_database_backend();
        let mut stmt = Query::select();
        stmt.columns(
            [
                registered_model::Column::Id,
                registered_model::Column::Name,
                registered_model::Column::CreationTimestamp,
                registered_model::Column::LastUpdatedTimestamp,
                registered_model::Column::Description,
                registered_model::Column::LastVersion,
            ]
            .map(|c| (Alias::new(MAIN), c)),
        )
        .from_as(registered_model::Entity, Alias::new(MAIN));
        let (filter, no_prompts) = registry_filter(q.filter);
        if no_prompts {
            if let Some(kv) = &REGISTERED_MODEL_SCHEMA.tags {
                stmt.and_where(not_a_prompt(kv));
            }
        }
        let mut exact = true;
        if let Some(filter) = &filter {
            let (cond, is_exact) = filter_sql(filter, &REGISTERED_MODEL_SCHEMA, backend);
            stmt.and_where(cond);
            exact = is_exact;
        }
        let mut name_ordered = false;
        for o in q.order_by {
            if let AttrSql::Col(table, column) = registered_model_attr(&o.key) {
                name_ordered |= o.key == "name";
                for (e, dir) in order_exprs(col(table, column), None, o.ascending) {
                    stmt.order_by_expr(e, dir);
                }
            }
        }
        if !name_ordered {
            stmt.order_by_expr(col(MAIN, "name"), Order::Asc);
        }
        let (rows, next_offset) =
            scan::<registered_model::Model>(&self.db, &stmt, filter.as_ref(), exact, q.max_results, q.offset).await?;
        Ok(Page { items: load_models(&self.db, rows).await?, next_offset })
    }

    /// The highest version of a model in each of `stages` (every stage when empty; stages
    /// are canonical: None, Staging, Production, Archived). NotFound if the model is absent.
    pub async fn latest_versions(&self, name: &str, stages: &[String]) -> Result<Vec<ModelVersionRecord>> {
        let model = self.get_registered_model(name).await?.ok_or_else(|| model_not_found(name))?;
        Ok(model
            .latest_versions
            .into_iter()
            .filter(|v| stages.is_empty() || stages.contains(&v.current_stage))
            .collect())
    }

    // -----------------------------------------------------------------------------------
    // Model versions
    // -----------------------------------------------------------------------------------

    /// Register a new version (the model's next number, stage None, status READY). When it
    /// comes from a logged model, that model's `mlflow.modelVersions` tag lists it. NotFound
    /// if the registered model is absent.
    pub async fn create_model_version(&self, new: &NewModelVersion) -> Result<ModelVersionRecord> {
        let txn = self.begin_write().await?;
        let model = find_model(&txn, &new.name).await?;
        let version = model.last_version + 1;
        let now = now_ms();
        registered_model::Entity::update_many()
            .col_expr(registered_model::Column::LastVersion, Expr::value(version))
            .col_expr(registered_model::Column::LastUpdatedTimestamp, Expr::value(now))
            .filter(registered_model::Column::Id.eq(model.id))
            .exec(&txn)
            .await?;
        model_version::Entity::insert(model_version::ActiveModel {
            model_id: ActiveValue::Set(model.id),
            version: ActiveValue::Set(version),
            creation_timestamp: ActiveValue::Set(now),
            last_updated_timestamp: ActiveValue::Set(now),
            user_id: ActiveValue::Set(new.user_id.clone()),
            current_stage: ActiveValue::Set("None".to_owned()),
            description: ActiveValue::Set(new.description.clone()),
            source: ActiveValue::Set(new.source.clone()),
            storage_location: ActiveValue::Set(new.storage_location.clone()),
            run_id: ActiveValue::Set(new.run_id.clone()),
            run_link: ActiveValue::Set(new.run_link.clone()),
            status: ActiveValue::Set("READY".to_owned()),
            status_message: ActiveValue::Set(None),
            logged_model_id: ActiveValue::Set(new.model_id.clone()),
        })
        .exec_without_returning(&txn)
        .await?;
        let rows: Vec<model_version_tag::ActiveModel> = last_wins(&new.tags)
            .into_iter()
            .map(|(k, v)| model_version_tag::ActiveModel {
                model_id: ActiveValue::Set(model.id),
                version: ActiveValue::Set(version),
                key: ActiveValue::Set(k),
                value: ActiveValue::Set(v),
            })
            .collect();
        upsert_tags!(&txn, model_version_tag, rows, [ModelId, Version, Key]);
        if let Some(model_id) = &new.model_id {
            let existing = logged_model_tag::Entity::find_by_id((model_id.clone(), TAG_MODEL_VERSIONS.to_owned()))
                .one(&txn)
                .await?;
            if logged_model::Entity::find_by_id(model_id.clone()).one(&txn).await?.is_some() {
                let mut list: Vec<serde_json::Value> =
                    existing.and_then(|t| serde_json::from_str(&t.value).ok()).unwrap_or_default();
                let entry = serde_json::json!({ "name": new.name, "version": version });
                if !list.contains(&entry) {
                    list.push(entry);
                }
                upsert_logged_model_tags(
                    &txn,
                    model_id,
                    &[(TAG_MODEL_VERSIONS.to_owned(), serde_json::to_string(&list)?)],
                )
                .await?;
            }
        }
        let record =
            version_by_id(&txn, model.id, version).await?.ok_or_else(|| version_not_found(&new.name, version))?;
        txn.commit().await?;
        Ok(record)
    }

    /// One model version.
    pub async fn get_model_version(&self, name: &str, version: i64) -> Result<Option<ModelVersionRecord>> {
        let mut stmt = mv_select();
        stmt.and_where(col("rm", "name").eq(name)).and_where(col(MAIN, "version").eq(version));
        Ok(load_versions(&self.db, mv_rows(&self.db, &stmt).await?).await?.pop())
    }

    /// Set a version's description. NotFound if the model or version is absent.
    pub async fn update_model_version(
        &self,
        name: &str,
        version: i64,
        description: Option<&str>,
    ) -> Result<ModelVersionRecord> {
        let txn = self.begin_write().await?;
        let model = find_model(&txn, name).await?;
        let mv = find_version(&txn, &model, version).await?;
        let mut am = mv.into_active_model();
        am.description = ActiveValue::Set(description.map(str::to_owned));
        am.last_updated_timestamp = ActiveValue::Set(now_ms());
        am.update(&txn).await?;
        let record = version_by_id(&txn, model.id, version).await?.ok_or_else(|| version_not_found(name, version))?;
        txn.commit().await?;
        Ok(record)
    }

    /// Move a version to `stage` (canonical); with `archive_existing`, the model's other
    /// versions in that stage move to Archived. NotFound if the model or version is absent.
    pub async fn transition_model_version_stage(
        &self,
        name: &str,
        version: i64,
        stage: &str,
        archive_existing: bool,
    ) -> Result<ModelVersionRecord> {
        let txn = self.begin_write().await?;
        let model = find_model(&txn, name).await?;
        find_version(&txn, &model, version).await?;
        let now = now_ms();
        if archive_existing {
            model_version::Entity::update_many()
                .col_expr(model_version::Column::CurrentStage, Expr::value("Archived"))
                .col_expr(model_version::Column::LastUpdatedTimestamp, Expr::value(now))
                .filter(model_version::Column::ModelId.eq(model.id))
                .filter(model_version::Column::Version.ne(version))
                .filter(model_version::Column::CurrentStage.eq(stage))
                .exec(&txn)
                .await?;
        }
        model_version::Entity::update_many()
            .col_expr(model_version::Column::CurrentStage, Expr::value(stage))
            .col_expr(model_version::Column::LastUpdatedTimestamp, Expr::value(now))
            .filter(model_version::Column::ModelId.eq(model.id))
            .filter(model_version::Column::Version.eq(version))
            .exec(&txn)
            .await?;
        touch_model(&txn, model.id, now).await?;
        let record = version_by_id(&txn, model.id, version).await?.ok_or_else(|| version_not_found(name, version))?;
        txn.commit().await?;
        Ok(record)
    }

    /// Delete a version with its tags; aliases pointing to it are removed (and recorded, by
    /// `user`). Its number is not reused. NotFound if the model or version is absent.
    pub async fn delete_model_version(&self, name: &str, version: i64, user: &str) -> Result<()> {
        let txn = self.begin_write().await?;
        let model = find_model(&txn, name).await?;
        find_version(&txn, &model, version).await?;
        let now = now_ms();
        drop_aliases(&txn, &model, Some(version), user, now, "version deleted").await?;
        model_version::Entity::delete_by_id((model.id, version)).exec(&txn).await?;
        touch_model(&txn, model.id, now).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Set (or replace) a version tag. NotFound if the model or version is absent.
    pub async fn set_model_version_tag(&self, name: &str, version: i64, key: &str, value: &str) -> Result<()> {
        let txn = self.begin_write().await?;
        let model = find_model(&txn, name).await?;
        find_version(&txn, &model, version).await?;
        let rows = [model_version_tag::ActiveModel {
            model_id: ActiveValue::Set(model.id),
            version: ActiveValue::Set(version),
            key: ActiveValue::Set(key.to_owned()),
            value: ActiveValue::Set(value.to_owned()),
        }];
        upsert_tags!(&txn, model_version_tag, rows, [ModelId, Version, Key]);
        txn.commit().await?;
        Ok(())
    }

    /// Delete a version tag (absent: nothing to do). NotFound if the model or version is absent.
    pub async fn delete_model_version_tag(&self, name: &str, version: i64, key: &str) -> Result<()> {
        let txn = self.begin_write().await?;
        let model = find_model(&txn, name).await?;
        find_version(&txn, &model, version).await?;
        model_version_tag::Entity::delete_by_id((model.id, version, key.to_owned())).exec(&txn).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Search model versions (versions of prompts are left out unless the filter asks for
    /// prompts, as for registered models). Ordered by `order_by` (default: last_updated_timestamp DESC, name ASC,
    /// version_number DESC), then name, then version descending.
    pub async fn search_model_versions(&self, q: &RegistryQuery<'_>) -> Result<Page<ModelVersionRecord>> {
        let backend = self.db.get_database_backend();
        let mut stmt = mv_select();
        let (filter, no_prompts) = registry_filter(q.filter);
        if no_prompts {
            stmt.and_where(not_a_prompt(&KvTable {
                table: "registered_model_tags",
                link: &[("model_id", "model_id")],
                key: "key",
                value: "value",
                is_nan: None,
            }));
            if let Some(kv) = &MODEL_VERSION_SCHEMA.tags {
                stmt.and_where(not_a_prompt(kv));
            }
        }
        let mut exact = true;
        if let Some(filter) = &filter {
            let (cond, is_exact) = filter_sql(filter, &MODEL_VERSION_SCHEMA, backend);
            stmt.and_where(cond);
            exact = is_exact;
        }
        let default_order = [
            OrderBy { entity: Entity::Attribute, key: "last_updated_timestamp".into(), ascending: false },
            OrderBy { entity: Entity::Attribute, key: "name".into(), ascending: true },
            OrderBy { entity: Entity::Attribute, key: "version_number".into(), ascending: false },
        ];
        let order_by = if q.order_by.is_empty() { &default_order[..] } else { q.order_by };
        let (mut name_ordered, mut version_ordered) = (false, false);
        for o in order_by {
            if let AttrSql::Col(table, column) = model_version_attr(&o.key) {
                name_ordered |= o.key == "name";
                version_ordered |= o.key == "version_number";
                for (e, dir) in order_exprs(col(table, column), None, o.ascending) {
                    stmt.order_by_expr(e, dir);
                }
            }
        }
        if !name_ordered {
            stmt.order_by_expr(col("rm", "name"), Order::Asc);
        }
        if !version_ordered {
            stmt.order_by_expr(col(MAIN, "version"), Order::Desc);
        }
        let (rows, next_offset) =
            scan::<MvRow>(&self.db, &stmt, filter.as_ref(), exact, q.max_results, q.offset).await?;
        Ok(Page { items: load_versions(&self.db, rows).await?, next_offset })
    }

    // -----------------------------------------------------------------------------------
    // Aliases
    // -----------------------------------------------------------------------------------

    /// Point `alias` at a version (creating or moving it); a change is recorded with `user`.
    /// NotFound if the model or version is absent.
    pub async fn set_registered_model_alias(&self, name: &str, alias: &str, version: i64, user: &str) -> Result<()> {
        let txn = self.begin_write().await?;
        let model = find_model(&txn, name).await?;
        find_version(&txn, &model, version).await?;
        let existing = registered_model_alias::Entity::find_by_id((model.id, alias.to_owned())).one(&txn).await?;
        let from = existing.map(|a| a.version);
        if from != Some(version) {
            registered_model_alias::Entity::insert(registered_model_alias::ActiveModel {
                model_id: ActiveValue::Set(model.id),
                alias: ActiveValue::Set(alias.to_owned()),
                version: ActiveValue::Set(version),
            })
            .on_conflict(
                OnConflict::columns([registered_model_alias::Column::ModelId, registered_model_alias::Column::Alias])
                    .update_column(registered_model_alias::Column::Version)
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
            let now = now_ms();
            record_alias_event(&txn, &model, alias, from, Some(version), user, now, "set").await?;
            touch_model(&txn, model.id, now).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Remove an alias (absent: nothing to do); the removal is recorded with `user`.
    /// NotFound if the model is absent.
    pub async fn delete_registered_model_alias(&self, name: &str, alias: &str, user: &str) -> Result<()> {
        let txn = self.begin_write().await?;
        let model = find_model(&txn, name).await?;
        if let Some(a) = registered_model_alias::Entity::find_by_id((model.id, alias.to_owned())).one(&txn).await? {
            let now = now_ms();
            record_alias_event(&txn, &model, alias, Some(a.version), None, user, now, "deleted").await?;
            registered_model_alias::Entity::delete_by_id((model.id, alias.to_owned())).exec(&txn).await?;
            touch_model(&txn, model.id, now).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// The version an alias points to: Ok(None) if the model has no such alias. NotFound if
    /// the model is absent.
    pub async fn get_model_version_by_alias(&self, name: &str, alias: &str) -> Result<Option<ModelVersionRecord>> {
        let model = find_model(&self.db, name).await?;
        let Some(a) = registered_model_alias::Entity::find_by_id((model.id, alias.to_owned())).one(&self.db).await?
        else {
            return Ok(None);
        };
        version_by_id(&self.db, model.id, a.version).await
    }

    /// Every recorded change of the aliases of the model called `name`, oldest first. For a
    /// model that exists this follows it across renames; for a name no model has any more,
    /// it is the history recorded under that name. Empty when there is none.
    pub async fn alias_history(&self, name: &str) -> Result<Vec<AliasEvent>> {
        let model =
            registered_model::Entity::find().filter(registered_model::Column::Name.eq(name)).one(&self.db).await?;
        let query = match model {
            Some(m) => registered_model_alias_event::Entity::find()
                .filter(registered_model_alias_event::Column::ModelId.eq(m.id)),
            None => registered_model_alias_event::Entity::find()
                .filter(registered_model_alias_event::Column::ModelName.eq(name)),
        };
        Ok(query
            .order_by_asc(registered_model_alias_event::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|e| AliasEvent {
                model_name: e.model_name,
                alias: e.alias,
                from_version: e.from_version,
                to_version: e.to_version,
                user: e.user_name,
                timestamp: e.timestamp,
                reason: e.reason,
            })
            .collect())
    }

    // -----------------------------------------------------------------------------------
    // Logged models
    // -----------------------------------------------------------------------------------

    /// Create a logged model (status PENDING) in an experiment, with artifact location
    /// `<experiment artifact location>/models/<model_id>/artifacts`. NotFound if the
    /// experiment is absent.
    pub async fn create_logged_model(
        &self,
        experiment_id: &str,
        name: &str,
        model_type: Option<&str>,
        source_run_id: Option<&str>,
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<LoggedModelRecord> {
        let not_found = || StoreError::NotFound(format!("experiment {experiment_id}"));
        let exp_id = parse_experiment_id(experiment_id).ok_or_else(not_found)?;
        let txn = self.begin_write().await?;
        let experiment = experiment::Entity::find_by_id(exp_id).one(&txn).await?.ok_or_else(not_found)?;
        let model_id = format!("m-{}", uuid::Uuid::new_v4().simple());
        let now = now_ms();
        let root = experiment.artifact_location.trim_end_matches('/');
        logged_model::Entity::insert(logged_model::ActiveModel {
            model_id: ActiveValue::Set(model_id.clone()),
            experiment_id: ActiveValue::Set(exp_id),
            name: ActiveValue::Set(name.to_owned()),
            artifact_location: ActiveValue::Set(format!("{root}/models/{model_id}/artifacts")),
            creation_timestamp_ms: ActiveValue::Set(now),
            last_updated_timestamp_ms: ActiveValue::Set(now),
            status: ActiveValue::Set("LOGGED_MODEL_PENDING".to_owned()),
            lifecycle_stage: ActiveValue::Set("active".to_owned()),
            model_type: ActiveValue::Set(model_type.map(str::to_owned)),
            source_run_id: ActiveValue::Set(source_run_id.map(str::to_owned)),
            status_message: ActiveValue::Set(None),
        })
        .exec_without_returning(&txn)
        .await?;
        upsert_logged_model_tags(&txn, &model_id, tags).await?;
        insert_logged_model_params(&txn, &model_id, params).await?;
        let record = logged_model_by_id(&txn, &model_id).await?.ok_or_else(|| logged_model_not_found(&model_id))?;
        txn.commit().await?;
        Ok(record)
    }

    /// A logged model (deleted ones too: see `lifecycle_stage`).
    pub async fn get_logged_model(&self, model_id: &str) -> Result<Option<LoggedModelRecord>> {
        logged_model_by_id(&self.db, model_id).await
    }

    /// Set a logged model's status (LOGGED_MODEL_READY, ...). NotFound if absent.
    pub async fn finalize_logged_model(&self, model_id: &str, status: &str) -> Result<LoggedModelRecord> {
        let txn = self.begin_write().await?;
        let updated = logged_model::Entity::update_many()
            .col_expr(logged_model::Column::Status, Expr::value(status))
            .col_expr(logged_model::Column::LastUpdatedTimestampMs, Expr::value(now_ms()))
            .filter(logged_model::Column::ModelId.eq(model_id))
            .exec(&txn)
            .await?;
        if updated.rows_affected == 0 {
            return Err(logged_model_not_found(model_id));
        }
        let record = logged_model_by_id(&txn, model_id).await?.ok_or_else(|| logged_model_not_found(model_id))?;
        txn.commit().await?;
        Ok(record)
    }

    /// Set (or replace) tags of a logged model. NotFound if absent.
    pub async fn set_logged_model_tags(&self, model_id: &str, tags: &[(String, String)]) -> Result<LoggedModelRecord> {
        let txn = self.begin_write().await?;
        if logged_model::Entity::find_by_id(model_id.to_owned()).one(&txn).await?.is_none() {
            return Err(logged_model_not_found(model_id));
        }
        upsert_logged_model_tags(&txn, model_id, tags).await?;
        let record = logged_model_by_id(&txn, model_id).await?.ok_or_else(|| logged_model_not_found(model_id))?;
        txn.commit().await?;
        Ok(record)
    }

    /// Delete a logged model's tag. NotFound if the model or the tag is absent.
    pub async fn delete_logged_model_tag(&self, model_id: &str, key: &str) -> Result<()> {
        let txn = self.begin_write().await?;
        if logged_model::Entity::find_by_id(model_id.to_owned()).one(&txn).await?.is_none() {
            return Err(logged_model_not_found(model_id));
        }
        let deleted = logged_model_tag::Entity::delete_by_id((model_id.to_owned(), key.to_owned())).exec(&txn).await?;
        if deleted.rows_affected == 0 {
            return Err(StoreError::NotFound(format!("tag '{key}' of logged model {model_id}")));
        }
        txn.commit().await?;
        Ok(())
    }

    /// Add params to a logged model (a key already there keeps its value). NotFound if absent.
    pub async fn log_logged_model_params(&self, model_id: &str, params: &[(String, String)]) -> Result<()> {
        let txn = self.begin_write().await?;
        if logged_model::Entity::find_by_id(model_id.to_owned()).one(&txn).await?.is_none() {
            return Err(logged_model_not_found(model_id));
        }
        insert_logged_model_params(&txn, model_id, params).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Mark a logged model deleted. NotFound if absent.
    pub async fn delete_logged_model(&self, model_id: &str) -> Result<()> {
        let updated = logged_model::Entity::update_many()
            .col_expr(logged_model::Column::LifecycleStage, Expr::value("deleted"))
            .col_expr(logged_model::Column::LastUpdatedTimestampMs, Expr::value(now_ms()))
            .filter(logged_model::Column::ModelId.eq(model_id))
            .exec(&self.writer)
            .await?;
        if updated.rows_affected == 0 {
            return Err(logged_model_not_found(model_id));
        }
        Ok(())
    }

    /// Search the active logged models of experiments; the filter is checked in memory
    /// (logged models are few per experiment). Ordered by `order_by` (default creation time
    /// descending), then model id.
    pub async fn search_logged_models(&self, q: &LoggedModelQuery<'_>) -> Result<Page<LoggedModelRecord>> {
        let experiment_ids: Vec<i64> = q.experiment_ids.iter().filter_map(|id| parse_experiment_id(id)).collect();
        if experiment_ids.is_empty() {
            return Ok(Page { items: Vec::new(), next_offset: None });
        }
        let mut stmt = Query::select();
        stmt.columns(
            [
                logged_model::Column::ModelId,
                logged_model::Column::ExperimentId,
                logged_model::Column::Name,
                logged_model::Column::ArtifactLocation,
                logged_model::Column::CreationTimestampMs,
                logged_model::Column::LastUpdatedTimestampMs,
                logged_model::Column::Status,
                logged_model::Column::LifecycleStage,
                logged_model::Column::ModelType,
                logged_model::Column::SourceRunId,
                logged_model::Column::StatusMessage,
            ]
            .map(|c| (Alias::new(MAIN), c)),
        )
        .from_as(logged_model::Entity, Alias::new(MAIN))
        .and_where(col(MAIN, "experiment_id").is_in(experiment_ids))
        .and_where(col(MAIN, "lifecycle_stage").eq("active"));
        let default_order = [("creation_timestamp".to_owned(), false)];
        let order_by = if q.order_by.is_empty() { &default_order[..] } else { q.order_by };
        for (field, ascending) in order_by {
            let column = match field.as_str() {
                "creation_timestamp" => "creation_timestamp_ms",
                "last_updated_timestamp" => "last_updated_timestamp_ms",
                "name" | "model_id" | "status" | "model_type" | "source_run_id" => field.as_str(),
                _ => continue,
            };
            for (e, dir) in order_exprs(col(MAIN, column), None, *ascending) {
                stmt.order_by_expr(e, dir);
            }
        }
        stmt.order_by_expr(col(MAIN, "model_id"), Order::Asc);
        let (rows, next_offset) =
            scan::<logged_model::Model>(&self.db, &stmt, q.filter, q.filter.is_none(), q.max_results, q.offset).await?;
        Ok(Page { items: load_logged_models(&self.db, rows).await?, next_offset })
    }
}

async fn insert_logged_model_params(
    txn: &DatabaseTransaction,
    model_id: &str,
    params: &[(String, String)],
) -> Result<()> {
    let params: BTreeMap<&str, &str> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let params: Vec<(&str, &str)> = params.into_iter().collect();
    for chunk in params.chunks(CHUNK_ROWS) {
        logged_model_param::Entity::insert_many(chunk.iter().map(|&(k, v)| logged_model_param::ActiveModel {
            model_id: ActiveValue::Set(model_id.to_owned()),
            key: ActiveValue::Set(k.to_owned()),
            value: ActiveValue::Set(v.to_owned()),
        }))
        .on_conflict_do_nothing()
        .exec_without_returning(txn)
        .await?;
    }
    Ok(())
}
