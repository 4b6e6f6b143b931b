//! The web UI and the resource API's reads of `capstan server --kubernetes`: the thin kube
//! adapter behind [`capstan_server::cluster::ClusterResources`]. TrainingJobs, Queues,
//! ModelDeployments, Pipelines and PipelineRuns are read from the API server as untyped
//! objects and turned into the same [`StoredResource`] values the store gives ([`stored_of`],
//! pure); events are the events.k8s.io Events whose `regarding` is the object ([`event_of`],
//! pure); a replica's log is its pod's log (the pod labelled with the job's uid, the attempt
//! and the replica index by `capstan controller`). Nothing is written.

use axum::body::{Body, Bytes};
use capstan_controller::k8s::objects::{LABEL_ATTEMPT, LABEL_INDEX, LABEL_JOB_UID};
use capstan_crds::{ModelDeployment, Pipeline, PipelineRun, Queue, TrainingJob};
use capstan_server::cluster::{BoxFut, ClusterError, ClusterResources};
use capstan_store::{Event, StoredResource};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, ListParams, LogParams};
use kube::{Api, Client};
use serde_json::{json, Value};

/// The capstan.dev objects, events and pods of one cluster.
pub struct KubeResources {
    client: Client,
    /// Only this namespace's namespaced objects (None: every namespace).
    namespace: Option<String>,
}

/// The API resource of a kind the UI shows and whether it is namespaced; None for others.
pub fn api_resource(kind: &str) -> Option<(ApiResource, bool)> {
    Some(match kind {
        "TrainingJob" => (ApiResource::erase::<TrainingJob>(&()), true),
        "Queue" => (ApiResource::erase::<Queue>(&()), false),
        "ModelDeployment" => (ApiResource::erase::<ModelDeployment>(&()), true),
        "Pipeline" => (ApiResource::erase::<Pipeline>(&()), true),
        "PipelineRun" => (ApiResource::erase::<PipelineRun>(&()), true),
        _ => return None,
    })
}

/// An object of the cluster (as JSON: `metadata`, `spec`, `status`) as the store's value: the
/// same fields the pages read. A missing status is `{}`; a resourceVersion that is not a
/// number is 0.
pub fn stored_of(kind: &str, obj: &Value) -> StoredResource {
    let meta = &obj["metadata"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let map = |v: &Value| if v.is_object() { v.clone() } else { json!({}) };
    StoredResource {
        kind: kind.to_string(),
        namespace: text(&meta["namespace"]),
        name: text(&meta["name"]),
        uid: text(&meta["uid"]),
        generation: meta["generation"].as_i64().unwrap_or(0),
        resource_version: meta["resourceVersion"].as_str().and_then(|v| v.parse().ok()).unwrap_or(0),
        creation_timestamp: text(&meta["creationTimestamp"]),
        deletion_timestamp: meta["deletionTimestamp"].as_str().map(str::to_string),
        labels: map(&meta["labels"]),
        annotations: map(&meta["annotations"]),
        spec: map(&obj["spec"]),
        status: map(&obj["status"]),
    }
}

/// An events.k8s.io/v1 Event (as JSON) as the store's event: `note` is the message, a series'
/// count (else the deprecated count, else 1) the count, and the times fall back from the
/// series and the event time to the deprecated timestamps and the object's creation.
pub fn event_of(ev: &Value) -> Event {
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    let created = text(&ev["metadata"]["creationTimestamp"]);
    let event_time = text(&ev["eventTime"]);
    let first = text(&ev["deprecatedFirstTimestamp"]).or(event_time.clone()).or(created.clone());
    let last =
        text(&ev["series"]["lastObservedTime"]).or(text(&ev["deprecatedLastTimestamp"])).or(event_time).or(created);
    let count = ev["series"]["count"].as_i64().or(ev["deprecatedCount"].as_i64()).unwrap_or(1).max(1);
    Event {
        object_uid: text(&ev["regarding"]["uid"]).unwrap_or_default(),
        type_: text(&ev["type"]).unwrap_or_else(|| "Normal".into()),
        reason: text(&ev["reason"]).unwrap_or_default(),
        message: text(&ev["note"]).unwrap_or_default(),
        count,
        first_timestamp: first.clone().unwrap_or_default(),
        last_timestamp: last.or(first).unwrap_or_default(),
    }
}

/// The label selector of the pod of replica `replica` of attempt `attempt` of the job with
/// uid `uid` (the labels `capstan controller` puts on its pods).
pub fn pod_selector(uid: &str, attempt: u32, replica: u32) -> String {
    format!("{LABEL_JOB_UID}={uid},{LABEL_ATTEMPT}={attempt},{LABEL_INDEX}={replica}")
}

fn cluster_error(e: kube::Error) -> ClusterError {
    match &e {
        kube::Error::Api(s) if s.code == 403 || s.code == 401 => ClusterError::Forbidden(s.message.clone()),
        _ => ClusterError::Api(e.to_string()),
    }
}

fn unknown(kind: &str) -> ClusterError {
    ClusterError::Api(format!("{kind} is not a kind the server reads from the cluster"))
}

impl KubeResources {
    /// Over `client`, every namespace or only `namespace`.
    pub fn new(client: Client, namespace: Option<String>) -> KubeResources {
        KubeResources { client, namespace }
    }

    /// The namespace to read `asked` in: Some(Some(ns)) one, Some(None) all, None: outside
    /// the server's scope (nothing to read).
    fn scope<'a>(&'a self, asked: Option<&'a str>) -> Option<Option<&'a str>> {
        match (self.namespace.as_deref(), asked) {
            (None, a) => Some(a),
            (Some(mine), None) => Some(Some(mine)),
            (Some(mine), Some(a)) if a == mine => Some(Some(a)),
            (Some(_), Some(_)) => None,
        }
    }
}

fn json_of(o: &DynamicObject) -> Value {
    serde_json::to_value(o).unwrap_or_default()
}

impl ClusterResources for KubeResources {
    fn list<'a>(
        &'a self,
        kind: &'a str,
        namespace: Option<&'a str>,
    ) -> BoxFut<'a, Result<Vec<StoredResource>, ClusterError>> {
        Box::pin(async move {
            let (ar, namespaced) = api_resource(kind).ok_or_else(|| unknown(kind))?;
            let api: Api<DynamicObject> = if namespaced {
                match self.scope(namespace) {
                    None => return Ok(Vec::new()),
                    Some(Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &ar),
                    Some(None) => Api::all_with(self.client.clone(), &ar),
                }
            } else {
                Api::all_with(self.client.clone(), &ar)
            };
            let list = api.list(&ListParams::default()).await.map_err(cluster_error)?;
            Ok(list.items.iter().map(|o| stored_of(kind, &json_of(o))).collect())
        })
    }

    fn get<'a>(
        &'a self,
        kind: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<Option<StoredResource>, ClusterError>> {
        Box::pin(async move {
            let (ar, namespaced) = api_resource(kind).ok_or_else(|| unknown(kind))?;
            let api: Api<DynamicObject> = if namespaced {
                match self.scope(Some(namespace)) {
                    Some(Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &ar),
                    _ => return Ok(None),
                }
            } else {
                Api::all_with(self.client.clone(), &ar)
            };
            Ok(api.get_opt(name).await.map_err(cluster_error)?.map(|o| stored_of(kind, &json_of(&o))))
        })
    }

    fn events<'a>(&'a self, object: &'a StoredResource) -> BoxFut<'a, Result<Vec<Event>, ClusterError>> {
        Box::pin(async move {
            // kube's Recorder writes a cluster-scoped object's events into `default`.
            let ns = if object.namespace.is_empty() { "default" } else { object.namespace.as_str() };
            let ar = ApiResource::erase::<k8s_openapi::api::events::v1::Event>(&());
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &ar);
            let lp = ListParams::default().fields(&format!("regarding.uid={}", object.uid));
            let list = api.list(&lp).await.map_err(cluster_error)?;
            let mut events: Vec<Event> = list.items.iter().map(|e| event_of(&json_of(e))).collect();
            events.sort_by(|a, b| a.first_timestamp.cmp(&b.first_timestamp));
            Ok(events)
        })
    }

    fn log<'a>(
        &'a self,
        job: &'a StoredResource,
        attempt: u32,
        replica: u32,
        follow: bool,
    ) -> BoxFut<'a, Result<Option<Body>, ClusterError>> {
        Box::pin(async move {
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &job.namespace);
            let lp = ListParams::default().labels(&pod_selector(&job.uid, attempt, replica));
            let found = pods.list(&lp).await.map_err(cluster_error)?;
            let Some(pod) = found.items.first().and_then(|p| p.metadata.name.clone()) else { return Ok(None) };
            let reader =
                pods.log_stream(&pod, &LogParams { follow, ..Default::default() }).await.map_err(cluster_error)?;
            Ok(Some(Body::from_stream(chunks(reader))))
        })
    }
}

/// The bytes of `reader` in chunks of up to 64 KiB, ending after the first error.
fn chunks(
    reader: impl futures_util::AsyncRead + Send + 'static,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    use futures_util::AsyncReadExt;
    futures_util::stream::unfold(Some(Box::pin(reader)), |state| async move {
        let mut r = state?;
        let mut buf = vec![0u8; 64 * 1024];
        match r.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(r)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[test]
    fn a_cluster_object_becomes_the_stores_value() {
        let obj = json!({
            "apiVersion": "capstan.dev/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {
                "name": "train", "namespace": "ml", "uid": "u-1", "generation": 3,
                "resourceVersion": "4711", "creationTimestamp": "2026-11-28T09:00:00Z",
                "labels": {"team": "a"}
            },
            "spec": {"replicas": 2, "gpusPerReplica": 4, "queue": "research"},
            "status": {"phase": "Running", "replicaStatuses": [{"index": 0, "node": "gpu-node-1", "gpus": [0, 1]}]}
        });
        let r = stored_of("TrainingJob", &obj);
        assert_eq!(
            (r.kind.as_str(), r.namespace.as_str(), r.name.as_str(), r.uid.as_str()),
            ("TrainingJob", "ml", "train", "u-1")
        );
        assert_eq!((r.generation, r.resource_version), (3, 4711));
        assert_eq!(r.creation_timestamp, "2026-11-28T09:00:00Z");
        assert_eq!(r.deletion_timestamp, None);
        assert_eq!(r.labels, json!({"team": "a"}));
        assert_eq!(r.annotations, json!({}));
        assert_eq!(r.spec["gpusPerReplica"], 4);
        assert_eq!(r.status["replicaStatuses"][0]["node"], "gpu-node-1");
    }

    #[test]
    fn a_new_or_cluster_scoped_object_has_empty_status_and_namespace() {
        let obj = json!({
            "metadata": {"name": "q", "uid": "u-2", "resourceVersion": "opaque", "deletionTimestamp": "2026-11-28T10:00:00Z"},
            "spec": {"quotas": [{"product": "*", "nominal": 8}]}
        });
        let r = stored_of("Queue", &obj);
        assert_eq!(r.namespace, "");
        assert_eq!(r.resource_version, 0);
        assert_eq!(r.status, json!({}));
        assert_eq!(r.deletion_timestamp.as_deref(), Some("2026-11-28T10:00:00Z"));
    }

    #[test]
    fn events_take_note_series_and_fall_back_on_times() {
        let recorded = json!({
            "metadata": {"name": "e1", "creationTimestamp": "2026-11-28T09:00:01Z"},
            "eventTime": "2026-11-28T09:00:00.500000Z",
            "type": "Warning", "reason": "GpuUnhealthy", "note": "GPU 3 of gpu-node-1: XID 79",
            "regarding": {"uid": "u-1", "kind": "TrainingJob"},
            "series": {"count": 4, "lastObservedTime": "2026-11-28T09:05:00.000000Z"}
        });
        let e = event_of(&recorded);
        assert_eq!((e.object_uid.as_str(), e.type_.as_str(), e.reason.as_str()), ("u-1", "Warning", "GpuUnhealthy"));
        assert_eq!(e.message, "GPU 3 of gpu-node-1: XID 79");
        assert_eq!(e.count, 4);
        assert_eq!(e.first_timestamp, "2026-11-28T09:00:00.500000Z");
        assert_eq!(e.last_timestamp, "2026-11-28T09:05:00.000000Z");

        let old_style = json!({
            "metadata": {"creationTimestamp": "2026-11-28T08:00:00Z"},
            "reason": "Started", "deprecatedCount": 2,
            "deprecatedFirstTimestamp": "2026-11-28T07:00:00Z", "deprecatedLastTimestamp": "2026-11-28T07:30:00Z"
        });
        let e = event_of(&old_style);
        assert_eq!((e.type_.as_str(), e.count), ("Normal", 2));
        assert_eq!(
            (e.first_timestamp.as_str(), e.last_timestamp.as_str()),
            ("2026-11-28T07:00:00Z", "2026-11-28T07:30:00Z")
        );

        let bare =
            json!({"metadata": {"creationTimestamp": "2026-11-28T08:00:00Z"}, "reason": "X", "deprecatedCount": 0});
        let e = event_of(&bare);
        assert_eq!(e.count, 1, "a count of 0 means once");
        assert_eq!(
            (e.first_timestamp.as_str(), e.last_timestamp.as_str()),
            ("2026-11-28T08:00:00Z", "2026-11-28T08:00:00Z")
        );
    }

    #[test]
    fn the_pod_of_a_replica_is_found_by_the_controllers_labels() {
        assert_eq!(
            pod_selector("u-1", 2, 3),
            "capstan.dev/job-uid=u-1,capstan.dev/attempt=2,capstan.dev/replica-index=3"
        );
    }

    #[test]
    fn only_the_ui_kinds_are_read_and_queues_are_cluster_scoped() {
        assert_eq!(api_resource("Queue").map(|(a, n)| (a.plural, n)), Some(("queues".to_string(), false)));
        assert_eq!(api_resource("TrainingJob").map(|(a, n)| (a.plural, n)), Some(("trainingjobs".to_string(), true)));
        assert!(api_resource("Secret").is_none());
    }

    #[tokio::test]
    async fn a_log_reader_becomes_chunks_until_its_end() {
        let text: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let chunks: Vec<Bytes> =
            chunks(futures_util::io::Cursor::new(text.clone())).map(|c| c.expect("no error")).collect().await;
        assert!(chunks.len() >= 4, "64 KiB chunks: {}", chunks.len());
        assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= 64 * 1024));
        assert_eq!(chunks.concat(), text);
    }

    #[tokio::test]
    async fn a_log_reader_that_fails_ends_after_the_error() {
        struct Failing(u32);
        impl futures_util::AsyncRead for Failing {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.0 += 1;
                if self.0 == 1 {
                    buf[..2].copy_from_slice(b"ok");
                    std::task::Poll::Ready(Ok(2))
                } else {
                    std::task::Poll::Ready(Err(std::io::Error::other("connection reset")))
                }
            }
        }
        let items: Vec<Result<Bytes, std::io::Error>> = chunks(Failing(0)).collect().await;
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap().as_ref(), b"ok");
        assert!(items[1].is_err());
    }
}
