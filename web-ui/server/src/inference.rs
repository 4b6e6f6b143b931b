//! The Open Inference Protocol v2 front of deployed models: `/v2/models/{name}/...` on the
//! Capstan server is forwarded to a ready replica of ModelDeployment `name`, chosen by the
//! traffic split the controller published ([`capstan_serving::route::RouteTable`]);
//! `/v2/models/{name}/versions/{v}/...` goes to version `v` only. Each infer answer is
//! recorded per version (outcome and latency) for the canary verdict, and counted while in
//! flight ([`LoadTable`]) for autoscaling; a replica refusing the connection (one leaving
//! after a scale down) hands the request to another ready replica of the version. `/v2/health/live`,
//! `/v2/health/ready` and `/v2` answer for the server itself, so protocol clients (tritonclient,
//! kserve) can be pointed at the Capstan server. Errors of the proxy
//! itself: 404 `{"error"}` when no deployment of that name is ready, 502 when the replica
//! cannot be reached.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use capstan_serving::autoscale::LoadTable;
use capstan_serving::route::RouteTable;
use serde_json::json;

use crate::AppState;

/// How long a replica may take to answer one request.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// The proxy routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/health/live", get(|| async { Json(json!({ "live": true })) }))
        .route("/v2/health/ready", get(|| async { Json(json!({ "ready": true })) }))
        .route(
            "/v2",
            get(|| async {
                Json(json!({ "name": "capstan", "version": env!("CARGO_PKG_VERSION"), "extensions": [] }))
            }),
        )
        .route("/v2/models/{name}", any(proxy_root))
        .route("/v2/models/{name}/{*rest}", any(proxy_rest))
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder().timeout(UPSTREAM_TIMEOUT).pool_max_idle_per_host(64).build().expect("HTTP client")
    })
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn proxy_root(
    Path(name): Path<String>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    forward(name, String::new(), method, query, headers, body).await
}

async fn proxy_rest(
    Path((name, rest)): Path<(String, String)>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    forward(name, rest, method, query, headers, body).await
}

/// The version a `versions/{v}/...` path names.
fn pinned_version(rest: &str) -> Option<&str> {
    rest.strip_prefix("versions/").map(|r| r.split('/').next().unwrap_or(r)).filter(|v| !v.is_empty())
}

async fn forward(
    name: String,
    rest: String,
    method: Method,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let table = RouteTable::global();
    let pinned = pinned_version(&rest);
    let Some(pick) = table.pick(&name, pinned) else {
        let why = match (table.backends(&name), pinned) {
            (None, _) => format!("model '{name}' is not deployed here (no ModelDeployment named '{name}' is ready)"),
            (Some(_), Some(v)) => format!("model '{name}' has no ready replica of version '{v}'"),
            (Some(_), None) => format!("model '{name}' has no ready replica"),
        };
        return error(StatusCode::NOT_FOUND, why);
    };
    let is_infer = method == Method::POST && rest.ends_with("infer");
    // The version's load (requests in flight, answered) for autoscaling, until answered.
    let _in_flight = is_infer.then(|| LoadTable::global().begin(&name, &pick.version));
    let send = |endpoint: &str| {
        let mut url = format!("http://{endpoint}/v2/models/{name}");
        if !rest.is_empty() {
            url.push('/');
            url.push_str(&rest);
        }
        if let Some(q) = &query {
            url.push('?');
            url.push_str(q);
        }
        let mut req = client().request(method.clone(), &url).body(body.clone());
        for h in
            [header::CONTENT_TYPE, header::ACCEPT, header::HeaderName::from_static("inference-header-content-length")]
        {
            if let Some(v) = headers.get(&h) {
                req = req.header(h, v);
            }
        }
        async {
            let resp = req.send().await?;
            let status = resp.status();
            let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
            let bytes = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, content_type, bytes))
        }
    };
    let started = Instant::now();
    let mut pick = pick;
    let mut answer = send(&pick.endpoint).await;
    // A replica leaving (scaled down, restarting) refuses connections: nothing was sent, so
    // another ready replica of the same version gets the request, once.
    if answer.as_ref().is_err_and(|e| e.is_connect()) {
        if let Some(other) = table.pick(&name, Some(&pick.version)).filter(|p| p.endpoint != pick.endpoint) {
            pick = other;
            answer = send(&pick.endpoint).await;
        }
    }
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match answer {
        Ok((status, content_type, bytes)) => {
            if is_infer {
                table.record(&name, &pick.version, latency_ms, status.is_success());
                capstan_ui::traffic::record(&name, &pick.version, latency_ms, status.is_success());
            }
            let mut out = Response::builder()
                .status(StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY))
                .header("x-capstan-model-version", pick.version.as_str());
            if let Some(ct) = content_type {
                out = out.header(header::CONTENT_TYPE, ct);
            }
            out.body(axum::body::Body::from(bytes)).unwrap_or_else(|e| {
                error(StatusCode::BAD_GATEWAY, format!("model '{name}': bad answer from {}: {e}", pick.endpoint))
            })
        }
        Err(e) => {
            if is_infer {
                table.record(&name, &pick.version, latency_ms, false);
                capstan_ui::traffic::record(&name, &pick.version, latency_ms, false);
            }
            error(
                StatusCode::BAD_GATEWAY,
                format!("model '{name}' version {}: replica {} did not answer: {e}", pick.version, pick.endpoint),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_pinned_from_the_path() {
        assert_eq!(pinned_version("versions/3/infer"), Some("3"));
        assert_eq!(pinned_version("versions/3"), Some("3"));
        assert_eq!(pinned_version("infer"), None);
        assert_eq!(pinned_version("versions/"), None);
    }

    #[tokio::test]
    async fn a_refused_connection_goes_to_another_replica_and_load_is_counted() {
        use capstan_serving::route::Backend;
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap().to_string();
        let app =
            Router::new().route("/v2/models/{name}/infer", axum::routing::post(|| async { Json(json!({"ok": 1})) }));
        tokio::spawn(async move { axum::serve(live, app).await });
        // A port nobody listens on: the replica that just left.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let model = "retry-test-model";
        RouteTable::global()
            .publish(model, vec![Backend { version: "1".into(), endpoints: vec![dead, live_addr], weight: 100 }]);
        for _ in 0..4 {
            let r =
                forward(model.into(), "infer".into(), Method::POST, None, HeaderMap::new(), Bytes::from_static(b"{}"))
                    .await;
            assert_eq!(r.status(), StatusCode::OK);
        }
        let load = LoadTable::global().load(model, "1", 60_000);
        assert!(load.rps > 0.0, "{load:?}");
        assert_eq!(RouteTable::global().stats(model, "1", 60_000).requests, 4);
        RouteTable::global().remove(model);
        LoadTable::global().remove(model);
    }
}
