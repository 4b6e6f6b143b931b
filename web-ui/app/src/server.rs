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
use capstan_store::runs_search::{RunsTable, RunsTableRow, TableCell, ViewType};
use capstan_store::Store;
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
    let data = Router::new()
        .route("/ui/data/runs", get(runs_data))
        .route("/ui/data/traffic", get(traffic_data))
        .route("/pkg/{*file}", get(static_file))
        .with_state(state);
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

/// All runs of an experiment that match a filter (at most [`MAX_TABLE_RUNS`]), as a compact
/// table: `keys` (every metric, param and tag key), `columns` (the ones asked for), `rows`
/// (`[run_id, run_name, status, start_time, value...]`). Only the asked columns are read
/// ([`Store::runs_table`]). A filter that does not parse is a 400 with its position.
async fn runs_data(State(st): State<UiState>, Query(q): Query<RunsDataQuery>) -> Response {
    let started = std::time::Instant::now();
    let filter = match capstan_search::parse_filter(&q.filter) {
        Ok(f) => f,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": e.to_string(), "position": e.position, "column": e.column}),
            )
        }
    };
    let asked: Option<Vec<String>> = match q.cols.as_deref().map(str::trim) {
        Some(c) if !c.is_empty() => {
            Some(c.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
        }
        _ => None,
    };
    let choose = |metrics: &[String], params: &[String], _tags: &[String]| {
        asked.unwrap_or_else(|| {
            let m: BTreeSet<&str> = metrics.iter().map(String::as_str).collect();
            let p: BTreeSet<&str> = params.iter().map(String::as_str).collect();
            logic::default_columns(&m, &p)
        })
    };
    let ids = [q.experiment.clone()];
    let table = match st.store.runs_table(&ids, filter.as_ref(), ViewType::ActiveOnly, MAX_TABLE_RUNS, choose).await {
        Ok(t) => t,
        Err(e) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({"error": e.to_string()})),
    };
    let read = started.elapsed();
    if q.format.as_deref() == Some("csv") {
        let mut header = vec!["run_id".to_string(), "run_name".into(), "status".into(), "start_time".into()];
        header.extend(table.columns.iter().cloned());
        let rows: Vec<Vec<serde_json::Value>> = table
            .rows
            .iter()
            .map(|r| {
                let mut row = vec![
                    serde_json::Value::from(r.run_id.clone()),
                    serde_json::Value::from(r.run_name.clone()),
                    serde_json::Value::from(r.status.clone()),
                    serde_json::Value::from(r.start_time),
                ];
                row.extend(r.cells.iter().map(|c| serde_json::to_value(JsonCell(c)).unwrap_or_default()));
                row
            })
            .collect();
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
    let body = serde_json::to_vec(&JsonTable(&table)).unwrap_or_default();
    tracing::debug!(
        experiment = %q.experiment,
        runs = table.rows.len(),
        columns = table.columns.len(),
        bytes = body.len(),
        read_ms = read.as_secs_f64() * 1e3,
        total_ms = started.elapsed().as_secs_f64() * 1e3,
        "runs table data"
    );
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// [`RunsTable`] as `/ui/data/runs` sends it, serialized straight from the store's rows.
struct JsonTable<'a>(&'a RunsTable);

impl serde::Serialize for JsonTable<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        #[derive(serde::Serialize)]
        struct Keys<'a> {
            metrics: &'a [String],
            params: &'a [String],
            tags: &'a [String],
        }
        let t = self.0;
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("columns", &t.columns)?;
        m.serialize_entry("keys", &Keys { metrics: &t.metric_keys, params: &t.param_keys, tags: &t.tag_keys })?;
        m.serialize_entry("rows", &JsonRows(&t.rows))?;
        m.end()
    }
}

struct JsonRows<'a>(&'a [RunsTableRow]);

impl serde::Serialize for JsonRows<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(JsonRow))
    }
}

struct JsonRow<'a>(&'a RunsTableRow);

impl serde::Serialize for JsonRow<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let r = self.0;
        let mut seq = s.serialize_seq(Some(4 + r.cells.len()))?;
        seq.serialize_element(&r.run_id)?;
        seq.serialize_element(&r.run_name)?;
        seq.serialize_element(&r.status)?;
        seq.serialize_element(&r.start_time)?;
        for c in &r.cells {
            seq.serialize_element(&JsonCell(c))?;
        }
        seq.end()
    }
}

/// A cell: a number (null when not finite: JSON has no NaN), a string, or null when missing.
struct JsonCell<'a>(&'a TableCell);

impl serde::Serialize for JsonCell<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            TableCell::Number(v) if v.is_finite() => s.serialize_f64(*v),
            TableCell::Text(t) => s.serialize_str(t),
            TableCell::Number(_) | TableCell::Missing => s.serialize_unit(),
        }
    }
}

/// Query of `/ui/data/traffic`.
#[derive(Debug, Deserialize)]
struct TrafficQuery {
    /// ModelDeployment name (the `/v2/models/{name}` the proxy routes).
    deployment: String,
    /// Seconds of history (10 to [`crate::traffic::KEEP_SECONDS`], default 600).
    #[serde(default)]
    window: Option<u64>,
    /// Seconds per point (1 to 60, default 5).
    #[serde(default)]
    step: Option<u64>,
}

/// Request rate and latency per version of a deployment, as the server's inference proxy
/// saw them ([`crate::traffic`]). Out-of-range `window` or `step`: 400 naming the field.
async fn traffic_data(Query(q): Query<TrafficQuery>) -> Response {
    let window = q.window.unwrap_or(600);
    let step = q.step.unwrap_or(5);
    if !(10..=crate::traffic::KEEP_SECONDS).contains(&window) {
        return json_error(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": format!("window: {window} is out of range (10 to {} seconds)", crate::traffic::KEEP_SECONDS)}),
        );
    }
    if !(1..=60).contains(&step) {
        return json_error(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": format!("step: {step} is out of range (1 to 60 seconds)")}),
        );
    }
    if q.deployment.trim().is_empty() {
        return json_error(StatusCode::BAD_REQUEST, serde_json::json!({"error": "deployment: must not be empty"}));
    }
    axum::Json(crate::traffic::series(&q.deployment, window, step)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runs_table_json_is_compact_rows_with_nulls_for_missing_and_non_finite() {
        let t = RunsTable {
            metric_keys: vec!["acc".into()],
            param_keys: vec!["lr".into()],
            tag_keys: vec![],
            columns: vec!["metrics.acc".into(), "params.lr".into(), "metrics.loss".into()],
            rows: vec![
                RunsTableRow {
                    run_id: "r1".into(),
                    run_name: "one".into(),
                    status: "FINISHED".into(),
                    start_time: 5,
                    cells: vec![TableCell::Number(0.5), TableCell::Text("0.1".into()), TableCell::Missing],
                },
                RunsTableRow {
                    run_id: "r2".into(),
                    run_name: "two \"q\"".into(),
                    status: "RUNNING".into(),
                    start_time: 6,
                    cells: vec![TableCell::Number(f64::INFINITY), TableCell::Missing, TableCell::Number(1.0)],
                },
            ],
        };
        assert_eq!(
            serde_json::to_string(&JsonTable(&t)).unwrap(),
            r#"{"columns":["metrics.acc","params.lr","metrics.loss"],"keys":{"metrics":["acc"],"params":["lr"],"tags":[]},"rows":[["r1","one","FINISHED",5,0.5,"0.1",null],["r2","two \"q\"","RUNNING",6,null,null,1.0]]}"#
        );
    }
}
