//! Nodes and their GPUs, as their agents report them:
//!
//! - `POST /api/v1/nodes/{node}/samples`: an agent's push (batch of readings, GPU identity
//!   and health, runs' system metrics, drop counts); answers `{"accepted_samples": n,
//!   "commands": [...], "unknown_runs": [...]}` with the commands that waited for the node.
//!   The runs' system metrics (`system/gpu_0_utilization_percentage`, ...) are logged to
//!   the runs like any MLflow metric (with the tag `capstan.dev/simulated-gpus: true` when
//!   they come from simulated GPUs).
//! - `GET /api/v1/nodes`, `GET /api/v1/nodes/{node}`: nodes, their GPU counts, unhealthy
//!   counts, last push, drops.
//! - `GET /api/v1/nodes/{node}/gpus`: every GPU with its health (reason, message, since) and
//!   latest reading and job; `simulated` on each.
//! - `GET /api/v1/nodes/{node}/gpus/{index}/samples?from_ms=&to_ms=&limit=`: the history of
//!   one GPU (1 s for the last hour, 1-minute roll-ups for the day before).
//! - `POST /api/v1/nodes/{node}/gpus/{index}/faults` with exactly one of `{"xid": 79}`,
//!   `{"ecc_dbe": 1}`, `{"overheat": true|false}`: inject a fault into a *simulated* GPU
//!   (409 for a real one); the agent applies it at its next push (202).
//! - `DELETE /api/v1/nodes/{node}/gpus/{index}/health`: forget a GPU's unhealthy verdict
//!   (after a reset or repair), at the agent's next push (202).
//! - `GET /metrics` ([`metrics_router`], mounted by `capstan up`): the embedded agent's
//!   Prometheus series.
//!
//! All of them sit behind the API token when the server has one, `/metrics` included: like
//! dcgm-exporter behind kube-rbac-proxy, give Prometheus the token
//! (`authorization: {credentials: ...}` in its scrape config).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use capstan_store::gpus::{
    GpuDeviceRecord, GpuDeviceUpdate, GpuNodeRecord, GpuNodeUpdate, GpuSampleIn, Retention, Values,
};
use capstan_store::{MetricPoint, Store, StoreError};
use serde_json::{json, Map, Value};

use crate::{ApiError, AppState};

/// Path prefix.
pub const PREFIX: &str = "/api/v1/nodes";
/// GPUs per push at most.
pub const MAX_GPUS: usize = 64;
/// Readings per push at most.
pub const MAX_SAMPLES: usize = 20_000;
/// Run metric points per push at most.
pub const MAX_RUN_METRICS: usize = 10_000;
/// Numeric values of a reading that are stored (the agent's `GpuReading` fields).
pub const VALUE_FIELDS: [&str; 17] = [
    "gpu_util",
    "mem_copy_util",
    "fb_used_mib",
    "fb_free_mib",
    "fb_total_mib",
    "gpu_temp_c",
    "memory_temp_c",
    "power_w",
    "energy_mj",
    "sm_clock_mhz",
    "mem_clock_mhz",
    "throttle_reasons",
    "pcie_tx_kbps",
    "pcie_rx_kbps",
    "pcie_replay",
    "ecc_sbe_volatile",
    "ecc_dbe_volatile",
];

/// Tag set on a run whose system metrics come from simulated GPUs.
pub const SIMULATED_TAG: &str = "capstan.dev/simulated-gpus";

/// The Prometheus exposition of the embedded agent: (content type, body).
pub type MetricsRender = Arc<dyn Fn() -> (String, String) + Send + Sync>;

/// Routes under `/api/v1/nodes`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(PREFIX, get(list_nodes))
        .route(&format!("{PREFIX}/{{node}}"), get(get_node))
        .route(&format!("{PREFIX}/{{node}}/samples"), post(push))
        .route(&format!("{PREFIX}/{{node}}/gpus"), get(list_gpus))
        .route(&format!("{PREFIX}/{{node}}/gpus/{{index}}/samples"), get(gpu_samples))
        .route(&format!("{PREFIX}/{{node}}/gpus/{{index}}/faults"), post(inject_fault))
        .route(&format!("{PREFIX}/{{node}}/gpus/{{index}}/health"), delete(clear_health))
}

/// `GET /metrics` serving `render`, behind the API token when the server has one.
pub fn metrics_router(state: AppState, render: MetricsRender) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let render = render.clone();
                async move {
                    let (content_type, body) = render();
                    ([(header::CONTENT_TYPE, content_type)], body).into_response()
                }
            }),
        )
        .layer(axum::middleware::from_fn_with_state(state, crate::auth::require_token))
}

/// A 400 naming the field.
fn bad(field: &str, message: impl std::fmt::Display) -> ApiError {
    let field = if field.is_empty() { "body" } else { field };
    ApiError { status: StatusCode::BAD_REQUEST, body: json!({"error": format!("{field}: {message}"), "field": field}) }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reading a JSON object field by field, each error naming its path.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    fn of(v: &'a Value, path: &str) -> Result<Obj<'a>, ApiError> {
        match v {
            Value::Object(map) => Ok(Obj { map, path: path.to_string() }),
            other => Err(bad(path, format!("expected an object, got {}", type_name(other)))),
        }
    }

    fn field(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn req(&self, name: &str) -> Result<&'a Value, ApiError> {
        self.get(name).ok_or_else(|| bad(&self.field(name), "required"))
    }

    fn string(&self, name: &str) -> Result<String, ApiError> {
        match self.req(name)? {
            Value::String(s) => Ok(s.clone()),
            other => Err(bad(&self.field(name), format!("expected a string, got {}", type_name(other)))),
        }
    }

    fn opt_string(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(bad(&self.field(name), format!("expected a string, got {}", type_name(other)))),
        }
    }

    fn boolean(&self, name: &str) -> Result<bool, ApiError> {
        match self.req(name)? {
            Value::Bool(b) => Ok(*b),
            other => Err(bad(&self.field(name), format!("expected a boolean, got {}", type_name(other)))),
        }
    }

    fn u64_in(&self, name: &str, max: u64) -> Result<u64, ApiError> {
        let v = self.req(name)?;
        match v.as_u64() {
            Some(n) if n <= max => Ok(n),
            Some(n) => Err(bad(&self.field(name), format!("{n} is larger than {max}"))),
            None => Err(bad(&self.field(name), format!("expected a whole number from 0 to {max}, got {v}"))),
        }
    }

    fn opt_u64(&self, name: &str, max: u64) -> Result<Option<u64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(_) => self.u64_in(name, max).map(Some),
        }
    }

    fn i64(&self, name: &str) -> Result<i64, ApiError> {
        let v = self.req(name)?;
        v.as_i64().ok_or_else(|| bad(&self.field(name), format!("expected a whole number, got {v}")))
    }

    fn opt_f64(&self, name: &str) -> Result<Option<f64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x)),
                _ => Err(bad(&self.field(name), format!("expected a number, got {}", type_name(v)))),
            },
        }
    }

    fn array(&self, name: &str, max: usize) -> Result<&'a [Value], ApiError> {
        match self.get(name) {
            None => Ok(&[]),
            Some(Value::Array(items)) if items.len() <= max => Ok(items),
            Some(Value::Array(items)) => {
                Err(bad(&self.field(name), format!("{} items; at most {max} per push", items.len())))
            }
            Some(other) => Err(bad(&self.field(name), format!("expected an array, got {}", type_name(other)))),
        }
    }
}

/// A push, validated.
struct Push {
    node: GpuNodeUpdate,
    devices: Vec<GpuDeviceUpdate>,
    samples: Vec<GpuSampleIn>,
    run_metrics: Vec<(String, MetricPoint)>,
}

fn parse_job(v: &Value, path: &str) -> Result<Value, ApiError> {
    let o = Obj::of(v, path)?;
    let mut job = json!({
        "namespace": o.string("namespace")?,
        "name": o.string("name")?,
        "uid": o.string("uid")?,
        "replica": o.u64_in("replica", u64::from(u32::MAX))?,
        "attempt": o.u64_in("attempt", u64::from(u32::MAX))?,
    });
    if let Some(run) = o.opt_string("run_id")? {
        job["run_id"] = json!(run);
    }
    Ok(job)
}

fn parse_push(path_node: &str, body: &Value) -> Result<Push, ApiError> {
    let o = Obj::of(body, "")?;
    let node = o.string("node")?;
    if node != path_node {
        return Err(bad("node", format!("{node:?} does not match the node in the path ({path_node:?})")));
    }
    let source = o.string("source")?;
    if !matches!(source.as_str(), "nvml" | "simulated" | "none") {
        return Err(bad("source", format!("{source:?} is not one of nvml, simulated, none")));
    }
    let mut devices = Vec::new();
    for (i, g) in o.array("gpus", MAX_GPUS)?.iter().enumerate() {
        let path = format!("gpus[{i}]");
        let g = Obj::of(g, &path)?;
        let h = Obj::of(g.req("health")?, &g.field("health"))?;
        let index = g.u64_in("index", 1023)? as u32;
        if devices.iter().any(|d: &GpuDeviceUpdate| d.index == index) {
            return Err(bad(&g.field("index"), format!("GPU {index} is listed twice")));
        }
        devices.push(GpuDeviceUpdate {
            index,
            uuid: g.string("uuid")?,
            product: g.string("product")?,
            memory_mib: g.u64_in("memory_mib", i64::MAX as u64)? as i64,
            pci_bus_id: g.opt_string("pci_bus_id")?.unwrap_or_default(),
            simulated: g.boolean("simulated")?,
            healthy: h.boolean("healthy")?,
            health_reason: h.opt_string("reason")?.unwrap_or_default(),
            health_message: h.opt_string("message")?.unwrap_or_default(),
            health_since_ms: h.get("since_ms").map(|_| h.i64("since_ms")).transpose()?.unwrap_or(0),
            last_xid: g.opt_u64("last_xid", i64::MAX as u64)?.unwrap_or(0) as i64,
        });
    }
    let mut samples = Vec::new();
    for (i, s) in o.array("samples", MAX_SAMPLES)?.iter().enumerate() {
        let s = Obj::of(s, &format!("samples[{i}]"))?;
        let index = s.u64_in("index", 1023)? as u32;
        if !devices.iter().any(|d| d.index == index) {
            return Err(bad(&s.field("index"), format!("GPU {index} is not among this push's gpus")));
        }
        let timestamp_ms = s.i64("timestamp_ms")?;
        let mut values = Values::new();
        for name in VALUE_FIELDS {
            if let Some(x) = s.opt_f64(name)? {
                values.insert(name.to_string(), x);
            }
        }
        if let Some(x) = s.opt_u64("last_xid", i64::MAX as u64)? {
            values.insert("last_xid".into(), x as f64);
        }
        if let Some(p) = s.get("processes") {
            if !p.is_array() {
                return Err(bad(&s.field("processes"), format!("expected an array, got {}", type_name(p))));
            }
        }
        let job = s.get("job").map(|j| parse_job(j, &s.field("job"))).transpose()?;
        samples.push(GpuSampleIn { index, timestamp_ms, values, job });
    }
    let mut run_metrics = Vec::new();
    for (i, m) in o.array("run_metrics", MAX_RUN_METRICS)?.iter().enumerate() {
        let m = Obj::of(m, &format!("run_metrics[{i}]"))?;
        let run_id = m.string("run_id")?;
        let key = m.string("key")?;
        if !key.starts_with("system/") || key.len() > 250 {
            return Err(bad(
                &m.field("key"),
                format!("{key:?}: system metrics start with system/ (at most 250 characters)"),
            ));
        }
        let value = m.opt_f64("value")?.ok_or_else(|| bad(&m.field("value"), "required"))?;
        run_metrics.push((run_id, MetricPoint { key, value, timestamp: m.i64("timestamp_ms")?, step: m.i64("step")? }));
    }
    Ok(Push {
        node: GpuNodeUpdate {
            node,
            source,
            driver_version: o.opt_string("driver_version")?.unwrap_or_default(),
            sample_interval_ms: o.opt_u64("sample_interval_ms", i64::MAX as u64)?.unwrap_or(0) as i64,
            dropped_samples: o.opt_u64("dropped_samples", i64::MAX as u64)?.unwrap_or(0) as i64,
            dropped_run_metrics: o.opt_u64("dropped_run_metrics", i64::MAX as u64)?.unwrap_or(0) as i64,
        },
        devices,
        samples,
        run_metrics,
    })
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// When the GPU history was last compacted (ms); compaction runs at most once a minute.
static LAST_COMPACTION: AtomicI64 = AtomicI64::new(0);

fn compact_soon(store: &Store, now: i64) {
    let last = LAST_COMPACTION.load(Ordering::Acquire);
    if now - last < 60_000 || LAST_COMPACTION.compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire).is_err()
    {
        return;
    }
    let store = store.clone();
    tokio::spawn(async move {
        if let Err(e) = store.compact_gpu_samples(now, Retention::default()).await {
            tracing::warn!(error = %e, "compacting the GPU history failed; retrying in a minute");
        }
    });
}

/// Store one push (the HTTP handler's work, also called in-process by `capstan up`'s
/// embedded agent). Returns the reply.
pub async fn ingest(store: &Store, node: &str, body: &Value) -> Result<Value, ApiError> {
    let push = parse_push(node, body)?;
    let now = now_ms();
    let (commands, accepted) =
        store.put_gpu_batch(&push.node, &push.devices, &push.samples, now, Retention::default()).await?;
    // The runs' system metrics, one log_batch per run; an unknown run is reported, not fatal.
    let mut by_run: std::collections::BTreeMap<String, Vec<MetricPoint>> = Default::default();
    for (run, point) in push.run_metrics {
        by_run.entry(run).or_default().push(point);
    }
    // A run measured on simulated GPUs says so (a tag the MLflow UI shows).
    let tags: Vec<(String, String)> = if push.node.source == "simulated" {
        vec![(SIMULATED_TAG.to_string(), "true".to_string())]
    } else {
        Vec::new()
    };
    let mut unknown_runs = Vec::new();
    for (run, points) in by_run {
        for chunk in points.chunks(1000) {
            match store.log_batch(&run, chunk, &[], &tags).await {
                Ok(()) => {}
                Err(StoreError::NotFound(_)) => {
                    unknown_runs.push(run.clone());
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    compact_soon(store, now);
    Ok(json!({"accepted_samples": accepted, "commands": commands, "unknown_runs": unknown_runs}))
}

async fn push(State(st): State<AppState>, Path(node): Path<String>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let value: Value = serde_json::from_slice(&body).map_err(|e| bad("body", format!("not valid JSON: {e}")))?;
    Ok(Json(ingest(&st.store, &node, &value).await?))
}

fn node_json(n: &GpuNodeRecord, now: i64) -> Value {
    json!({
        "name": n.node,
        "source": n.source,
        "simulated": n.source == "simulated",
        "driver_version": n.driver_version,
        "sample_interval_ms": n.sample_interval_ms,
        "last_seen_ms": n.last_seen_ms,
        "seconds_since_seen": ((now - n.last_seen_ms).max(0) as f64) / 1000.0,
        "gpus": n.gpus,
        "unhealthy_gpus": n.unhealthy,
        "dropped_samples": n.dropped_samples,
        "dropped_run_metrics": n.dropped_run_metrics,
    })
}

fn gpu_json(g: &GpuDeviceRecord) -> Value {
    let mut latest = json!({"timestamp_ms": g.latest_ms});
    for (k, v) in &g.latest {
        latest[k] = json!(v);
    }
    json!({
        "index": g.index,
        "uuid": g.uuid,
        "product": g.product,
        "memory_mib": g.memory_mib,
        "pci_bus_id": g.pci_bus_id,
        "simulated": g.simulated,
        "health": {
            "healthy": g.healthy,
            "reason": g.health_reason,
            "message": g.health_message,
            "since_ms": if g.healthy { Value::Null } else { json!(g.health_since_ms) },
        },
        "last_xid": g.last_xid,
        "latest": latest,
        "job": g.job,
    })
}

async fn list_nodes(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let now = now_ms();
    let nodes: Vec<Value> = st.store.gpu_nodes().await?.iter().map(|n| node_json(n, now)).collect();
    Ok(Json(json!({ "nodes": nodes })))
}

async fn get_node(State(st): State<AppState>, Path(node): Path<String>) -> Result<Json<Value>, ApiError> {
    match st.store.gpu_node(&node).await? {
        Some(n) => Ok(Json(node_json(&n, now_ms()))),
        None => Err(unknown_node(&node)),
    }
}

fn unknown_node(node: &str) -> ApiError {
    ApiError::not_found(format!("node {node} has not reported to this server"))
}

async fn list_gpus(State(st): State<AppState>, Path(node): Path<String>) -> Result<Json<Value>, ApiError> {
    let Some(gpus) = st.store.gpu_devices(&node).await? else { return Err(unknown_node(&node)) };
    let simulated = gpus.iter().any(|g| g.simulated);
    Ok(Json(json!({
        "node": node,
        "simulated": simulated,
        "gpus": gpus.iter().map(gpu_json).collect::<Vec<_>>(),
    })))
}

fn parse_index(text: &str) -> Result<u32, ApiError> {
    text.parse::<u32>().map_err(|_| bad("index", format!("{text:?} is not a GPU index (a whole number)")))
}

/// The GPU, or 404.
async fn find_gpu(store: &Store, node: &str, index: &str) -> Result<GpuDeviceRecord, ApiError> {
    let index = parse_index(index)?;
    let Some(gpus) = store.gpu_devices(node).await? else { return Err(unknown_node(node)) };
    gpus.into_iter()
        .find(|g| g.index == index)
        .ok_or_else(|| ApiError::not_found(format!("node {node} has no GPU {index}")))
}

async fn gpu_samples(
    State(st): State<AppState>,
    Path((node, index)): Path<(String, String)>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let gpu = find_gpu(&st.store, &node, &index).await?;
    let mut from = now_ms() - 3_600_000;
    let mut to = i64::MAX;
    let mut limit = 3600u64;
    for (k, v) in &q {
        let parsed = v.parse::<i64>().map_err(|_| bad(k, format!("{v:?} is not a whole number")));
        match k.as_str() {
            "from_ms" => from = parsed?,
            "to_ms" => to = parsed?,
            "limit" => {
                let n = parsed?;
                if !(1..=100_000).contains(&n) {
                    return Err(bad("limit", format!("{n} is not between 1 and 100000")));
                }
                limit = n as u64;
            }
            other => return Err(bad(other, "unknown parameter (from_ms, to_ms, limit)")),
        }
    }
    let samples = st.store.gpu_samples(&node, gpu.index, from, to, limit).await?;
    Ok(Json(json!({"node": node, "index": gpu.index, "simulated": gpu.simulated, "samples": samples})))
}

/// A fault body: exactly one of `xid`, `ecc_dbe`, `overheat`.
fn parse_fault(body: &Value) -> Result<Value, ApiError> {
    let o = Obj::of(body, "")?;
    if let Some(unknown) = o.map.keys().find(|k| !matches!(k.as_str(), "xid" | "ecc_dbe" | "overheat")) {
        return Err(bad(unknown, "unknown field: give exactly one of xid, ecc_dbe, overheat"));
    }
    let given: Vec<&String> = o.map.keys().collect();
    if given.len() != 1 {
        return Err(bad("body", "give exactly one of xid, ecc_dbe, overheat"));
    }
    match given[0].as_str() {
        "xid" => {
            let xid = o.u64_in("xid", u64::from(u32::MAX))?;
            if xid == 0 {
                return Err(bad("xid", "XIDs start at 1"));
            }
            Ok(json!({ "xid": xid }))
        }
        "ecc_dbe" => {
            let n = o.u64_in("ecc_dbe", 1000)?;
            if n == 0 {
                return Err(bad("ecc_dbe", "inject at least 1 error"));
            }
            Ok(json!({ "ecc_dbe": n }))
        }
        _ => Ok(json!({ "overheat": o.boolean("overheat")? })),
    }
}

async fn inject_fault(
    State(st): State<AppState>,
    Path((node, index)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let value: Value = serde_json::from_slice(&body).map_err(|e| bad("body", format!("not valid JSON: {e}")))?;
    let fault = parse_fault(&value)?;
    let gpu = find_gpu(&st.store, &node, &index).await?;
    if !gpu.simulated {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("GPU {} of node {node} is a real GPU: faults can only be injected into simulated GPUs", gpu.index),
        ));
    }
    st.store.add_gpu_command(&node, json!({"gpu": gpu.index, "fault": fault})).await?;
    let body = json!({"queued": true, "node": node, "gpu": gpu.index, "fault": fault,
        "note": "the agent applies it with its next push"});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn clear_health(
    State(st): State<AppState>,
    Path((node, index)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let gpu = find_gpu(&st.store, &node, &index).await?;
    st.store.add_gpu_command(&node, json!({"gpu": gpu.index, "clear_health": true})).await?;
    let body =
        json!({"queued": true, "node": node, "gpu": gpu.index, "note": "the agent clears it with its next push"});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_body() -> Value {
        json!({
            "node": "n1", "source": "simulated", "driver_version": "simulated", "sample_interval_ms": 1000,
            "gpus": [{"index": 0, "uuid": "GPU-sim-n1-0", "product": "NVIDIA-H100-80GB-HBM3", "memory_mib": 81559,
                      "simulated": true, "pci_bus_id": "00000000:18:00.0", "minor": 0, "power_limit_w": 700.0,
                      "health": {"healthy": true, "reason": "", "message": "", "since_ms": 0}, "last_xid": 0}],
            "samples": [{"index": 0, "timestamp_ms": 1, "gpu_util": 50.0, "fb_used_mib": null, "processes": [],
                         "last_xid": 0, "job": {"namespace": "default", "name": "j", "uid": "u", "replica": 0, "attempt": 1}}],
            "run_metrics": [{"run_id": "r", "key": "system/gpu_0_utilization_percentage", "value": 50.0, "timestamp_ms": 1, "step": 0}],
            "dropped_samples": 0, "dropped_run_metrics": 0
        })
    }

    fn field_of(e: ApiError) -> String {
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        e.body["field"].as_str().unwrap().to_string()
    }

    #[test]
    fn a_good_push_parses() {
        let p = parse_push("n1", &push_body()).unwrap();
        assert_eq!(p.devices.len(), 1);
        assert_eq!(p.samples[0].values.get("gpu_util"), Some(&50.0));
        assert!(!p.samples[0].values.contains_key("fb_used_mib"));
        assert_eq!(p.samples[0].job.as_ref().unwrap()["uid"], "u");
        assert_eq!(p.run_metrics[0].0, "r");
    }

    type Change = Box<dyn Fn(&mut Value)>;

    #[test]
    fn bad_pushes_name_the_field() {
        let cases: Vec<(&str, Change)> = vec![
            ("node", Box::new(|b| b["node"] = json!("other"))),
            ("source", Box::new(|b| b["source"] = json!("cuda"))),
            ("gpus", Box::new(|b| b["gpus"] = json!({}))),
            ("gpus[0].index", Box::new(|b| b["gpus"][0]["index"] = json!(-1))),
            (
                "gpus[0].health",
                Box::new(|b| b["gpus"][0].as_object_mut().unwrap().remove("health").map(|_| ()).unwrap()),
            ),
            ("gpus[0].health.healthy", Box::new(|b| b["gpus"][0]["health"]["healthy"] = json!("yes"))),
            ("samples[0].index", Box::new(|b| b["samples"][0]["index"] = json!(5))),
            ("samples[0].timestamp_ms", Box::new(|b| b["samples"][0]["timestamp_ms"] = json!("now"))),
            ("samples[0].gpu_util", Box::new(|b| b["samples"][0]["gpu_util"] = json!("high"))),
            ("samples[0].job.uid", Box::new(|b| b["samples"][0]["job"]["uid"] = json!(3))),
            ("samples[0].processes", Box::new(|b| b["samples"][0]["processes"] = json!(3))),
            ("run_metrics[0].key", Box::new(|b| b["run_metrics"][0]["key"] = json!("loss"))),
            ("run_metrics[0].value", Box::new(|b| b["run_metrics"][0]["value"] = json!(null))),
        ];
        for (field, change) in cases {
            let mut b = push_body();
            change(&mut b);
            let e = parse_push("n1", &b).err().unwrap_or_else(|| panic!("{field}: accepted"));
            assert_eq!(field_of(e), field);
        }
        assert_eq!(field_of(parse_push("n1", &json!([1])).err().unwrap()), "body");
    }

    #[test]
    fn faults_parse_strictly() {
        assert_eq!(parse_fault(&json!({"xid": 79})).unwrap(), json!({"xid": 79}));
        assert_eq!(parse_fault(&json!({"ecc_dbe": 1})).unwrap(), json!({"ecc_dbe": 1}));
        assert_eq!(parse_fault(&json!({"overheat": false})).unwrap(), json!({"overheat": false}));
        for (body, field) in [
            (json!({"xid": "79"}), "xid"),
            (json!({"xid": 0}), "xid"),
            (json!({"xid": -3}), "xid"),
            (json!({"ecc_dbe": 0}), "ecc_dbe"),
            (json!({"ecc_dbe": 5000}), "ecc_dbe"),
            (json!({"overheat": 1}), "overheat"),
            (json!({"temperature": 99}), "temperature"),
            (json!({}), "body"),
            (json!({"xid": 79, "overheat": true}), "body"),
            (json!("xid"), "body"),
        ] {
            assert_eq!(field_of(parse_fault(&body).err().unwrap()), field, "{body}");
        }
    }
}
