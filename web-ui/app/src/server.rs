//! The server side of the UI (feature `ssr`): the axum router capstan-server merges, the
//! state the server functions read, the embedded browser bundle, and the JSON/CSV data
//! endpoints the runs table reads.
//!
//! Where the browser bundle comes from: `build.rs` embeds every file of the site directory
//! (`<target>/site`, made by `scripts/build-ui.sh`; `CAPSTAN_UI_SITE_DIR` overrides) into the
//! binary with `include_bytes!`, so `capstan up` needs nothing beside itself. A binary built
//! before the bundle existed looks for it at run time ([`site_dir_on_disk`]: the `site` folder
//! of its target directory, or `CAPSTAN_UI_SITE_DIR`); without one it serves the same pages
//! server-rendered, without hydration, and says so in a banner.

use std::collections::BTreeSet;
use std::path::PathBuf;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use capstan_store::artifacts::ArtifactStore;
use capstan_store::runs_search::{RunQuery, ViewType};
use capstan_store::{RunRecord, Store};
use leptos::prelude::*;
use leptos_axum::{generate_route_list, handle_server_fns_with_context, LeptosRoutes};
use serde::Deserialize;

use crate::app::{shell, App};
use crate::logic;

mod site {
    include!(concat!(env!("OUT_DIR"), "/site.rs"));
}

/// Prefix of the server functions' endpoints.
pub const FN_PREFIX: &str = "/ui/fn";
/// Most runs the runs table loads for one experiment.
pub const MAX_TABLE_RUNS: usize = 50_000;

/// What the UI's server side reads: the server's own store and artifact store, and where
/// replica logs are.
#[derive(Clone, Debug)]
pub struct UiState {
    /// Durable state (experiments, runs, registry, resources, GPUs).
    pub store: Store,
    /// Run artifacts.
    pub artifacts: ArtifactStore,
    /// Root of the server's data (replica logs live below it).
    pub data_dir: PathBuf,
}

/// True when the browser bundle was embedded at compile time or is found on disk
/// ([`site_dir_on_disk`]).
pub fn bundle_embedded() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        site::FILES.iter().any(|(name, _)| *name == "pkg/capstan_ui.js")
            || site_dir_on_disk().is_some_and(|d| d.join("pkg/capstan_ui.js").is_file())
    })
}

/// Where a binary built without the bundle looks for it at run time: `CAPSTAN_UI_SITE_DIR`,
/// else `site` in the target directory the binary sits in (`target/<profile>/../site`, what
/// `scripts/build-ui.sh` writes).
pub fn site_dir_on_disk() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("CAPSTAN_UI_SITE_DIR") {
        return Some(PathBuf::from(d));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.join("site"))
}

/// The Leptos options the pages render with (output name `capstan_ui`, files under `/pkg`).
pub fn leptos_options() -> LeptosOptions {
    LeptosOptions::builder().output_name("capstan_ui").site_pkg_dir("pkg").site_root("target/site").build()
}

/// The UI's routes: the pages, the server functions under [`FN_PREFIX`], the bundle under
/// `/pkg/`, and `/ui/data/runs` (JSON or CSV). None of them overlaps the API's paths.
pub fn router(state: UiState) -> Router {
    let options = leptos_options();
    let routes = generate_route_list(App);
    let ctx_state = state.clone();
    let fn_state = state.clone();
    let pages: Router<LeptosOptions> =
        Router::new().leptos_routes_with_context(&options, routes, move || provide_context(ctx_state.clone()), {
            let options = options.clone();
            move || shell(options.clone())
        });
    let fns = Router::new().route(
        &format!("{FN_PREFIX}/{{*fn_name}}"),
        get(move |req| {
            let s = fn_state.clone();
            handle_server_fns_with_context(move || provide_context(s.clone()), req)
        })
        .post({
            let s = state.clone();
            move |req| {
                let s = s.clone();
                handle_server_fns_with_context(move || provide_context(s.clone()), req)
            }
        }),
    );
    let data =
        Router::new().route("/ui/data/runs", get(runs_data)).route("/pkg/{*file}", get(static_file)).with_state(state);
    // leptos_routes also routes each server function's own path: the layer covers both.
    pages.with_state(options).merge(fns).merge(data).layer(axum::middleware::map_response(bad_arguments_are_400))
}

/// Leptos answers a server function call whose arguments do not deserialize with a 500;
/// it is the caller's mistake, so make it a 400 (the body names the field).
async fn bad_arguments_are_400(res: Response) -> Response {
    if res.status() != StatusCode::INTERNAL_SERVER_ERROR {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    if [&b"Args|"[..], b"Deserialization|", b"MissingArg|"].iter().any(|p| bytes.starts_with(p)) {
        parts.status = StatusCode::BAD_REQUEST;
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

async fn static_file(Path(file): Path<String>) -> Response {
    let name = format!("pkg/{file}");
    let found = site::FILES.iter().find(|(n, _)| *n == name).map(|(_, b)| std::borrow::Cow::Borrowed(*b));
    let on_disk = || {
        if file.split('/').any(|seg| seg.is_empty() || seg == "." || seg == ".." || seg.contains('\\')) {
            return None;
        }
        std::fs::read(site_dir_on_disk()?.join(&name)).ok().map(std::borrow::Cow::Owned)
    };
    let body: std::borrow::Cow<'static, [u8]> = match (found, file.as_str()) {
        (Some(b), _) => b,
        (None, "capstan.js") => std::borrow::Cow::Borrowed(crate::assets::SCRIPT.as_bytes()),
        (None, "capstan.css") => std::borrow::Cow::Borrowed(crate::assets::STYLE.as_bytes()),
        (None, _) => match on_disk() {
            Some(b) => b,
            None => {
                return (StatusCode::NOT_FOUND, format!("no file pkg/{file}: run scripts/build-ui.sh")).into_response()
            }
        },
    };
    let mime = match file.rsplit('.').next() {
        Some("js") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        _ => "application/octet-stream",
    };
    ([(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// Query of `/ui/data/runs`.
#[derive(Debug, Deserialize)]
struct RunsDataQuery {
    experiment: String,
    #[serde(default)]
    filter: String,
    /// Comma-separated columns (`metrics.x`, `params.y`, `tags.z`); empty: a default set.
    #[serde(default)]
    cols: Option<String>,
    /// `json` (default) or `csv`.
    #[serde(default)]
    format: Option<String>,
}

fn json_error(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// All runs of an experiment that match a filter, as a compact table: `keys` (every metric,
/// param and tag key), `columns` (the ones asked for), `rows` (`[run_id, run_name, status,
/// start_time, value...]`). A filter that does not parse is a 400 with its position.
async fn runs_data(State(st): State<UiState>, Query(q): Query<RunsDataQuery>) -> Response {
    let filter = match capstan_search::parse_filter(&q.filter) {
        Ok(f) => f,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": e.to_string(), "position": e.position, "column": e.column}),
            )
        }
    };
    let runs = match all_runs(&st.store, &q.experiment, filter.as_ref()).await {
        Ok(runs) => runs,
        Err(e) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({"error": e.to_string()})),
    };
    let mut metric_keys = BTreeSet::new();
    let mut param_keys = BTreeSet::new();
    let mut tag_keys = BTreeSet::new();
    for r in &runs {
        metric_keys.extend(r.metrics.iter().map(|m| m.key.as_str()));
        param_keys.extend(r.params.iter().map(|(k, _)| k.as_str()));
        tag_keys.extend(r.tags.iter().filter(|(k, _)| !k.starts_with("mlflow.")).map(|(k, _)| k.as_str()));
    }
    let columns: Vec<String> = match q.cols.as_deref().map(str::trim) {
        Some(c) if !c.is_empty() => c.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        _ => logic::default_columns(&metric_keys, &param_keys),
    };
    let rows: Vec<Vec<serde_json::Value>> = runs
        .iter()
        .map(|r| {
            let mut row = vec![
                serde_json::Value::from(r.run_id.clone()),
                serde_json::Value::from(r.run_name.clone()),
                serde_json::Value::from(r.status.clone()),
                serde_json::Value::from(r.start_time),
            ];
            for c in &columns {
                row.push(column_value(r, c));
            }
            row
        })
        .collect();
    if q.format.as_deref() == Some("csv") {
        let mut header = vec!["run_id".to_string(), "run_name".into(), "status".into(), "start_time".into()];
        header.extend(columns.iter().cloned());
        let body = logic::csv(&header, &rows);
        return (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (header::CONTENT_DISPOSITION, format!("attachment; filename=\"runs-{}.csv\"", q.experiment)),
            ],
            body,
        )
            .into_response();
    }
    axum::Json(serde_json::json!({
        "keys": {"metrics": metric_keys, "params": param_keys, "tags": tag_keys},
        "columns": columns,
        "rows": rows,
    }))
    .into_response()
}

/// Runs read per query by [`all_runs`].
const CHUNK: usize = 2_500;

/// Every run of an experiment matching `filter` (at most [`MAX_TABLE_RUNS`]), in the store's
/// default order: the first chunk, then the rest in chunks read concurrently (the read pool
/// and WAL let them run side by side).
pub async fn all_runs(
    store: &Store,
    experiment: &str,
    filter: Option<&capstan_search::Expr>,
) -> Result<Vec<RunRecord>, capstan_store::StoreError> {
    let ids = [experiment.to_string()];
    let page = |offset: u64| {
        let ids = ids.clone();
        let filter = filter.cloned();
        let store = store.clone();
        async move {
            let q = RunQuery {
                experiment_ids: &ids,
                filter: filter.as_ref(),
                order_by: &[],
                view: ViewType::ActiveOnly,
                max_results: CHUNK,
                offset,
            };
            store.search_runs(&q).await
        }
    };
    let first = page(0).await?;
    let mut runs: Vec<RunRecord> = first.items.into_iter().map(|(r, _)| r).collect();
    let Some(mut next) = first.next_offset else { return Ok(runs) };
    while runs.len() < MAX_TABLE_RUNS {
        // Four chunks at a time.
        let offsets: Vec<u64> = (0..4).map(|i| next + i * CHUNK as u64).collect();
        let tasks: Vec<_> = offsets.iter().map(|&o| tokio::spawn(page(o))).collect();
        let mut more = false;
        for t in tasks {
            let p = t.await.map_err(|e| capstan_store::StoreError::NotFound(format!("runs chunk task: {e}")))??;
            more = p.next_offset.is_some();
            runs.extend(p.items.into_iter().map(|(r, _)| r));
            if !more {
                break;
            }
        }
        if !more {
            break;
        }
        next += 4 * CHUNK as u64;
    }
    runs.truncate(MAX_TABLE_RUNS);
    Ok(runs)
}

fn column_value(r: &RunRecord, col: &str) -> serde_json::Value {
    let (kind, key) = col.split_once('.').unwrap_or(("", col));
    match kind {
        "metrics" => r
            .metrics
            .iter()
            .find(|m| m.key == key)
            .and_then(|m| serde_json::Number::from_f64(m.value))
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        "params" => r.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone().into()).unwrap_or_default(),
        "tags" => r.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone().into()).unwrap_or_default(),
        _ => serde_json::Value::Null,
    }
}
