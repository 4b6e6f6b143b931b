//! The pipeline triggers of `capstan server --kubernetes` on a cluster: the thin kube adapter
//! behind [`capstan_server::webhooks::ClusterPipelines`]. Pipelines are listed from the API
//! server on each delivery (as untyped objects, so one that does not parse is skipped rather
//! than failing the list), a trigger's key is read from a Kubernetes Secret of the Pipeline's
//! namespace, and a PipelineRun object is created (409 AlreadyExists: a replayed delivery).
//! What to create is decided by `capstan_server::webhooks`, the same as for the store.

use capstan_crds::pipeline::{Pipeline, PipelineRun, PipelineSpec};
use capstan_server::webhooks::{ClusterError, ClusterPipelines, CreateOutcome, NewRun, PipelineObject};
use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};

/// Pipelines, Secrets and PipelineRuns of one cluster.
pub struct KubePipelines {
    client: Client,
    /// Only this namespace (None: every namespace).
    namespace: Option<String>,
}

impl KubePipelines {
    /// Over `client`, every namespace or only `namespace`.
    pub fn new(client: Client, namespace: Option<String>) -> KubePipelines {
        KubePipelines { client, namespace }
    }

    fn pipelines_api(&self) -> Api<DynamicObject> {
        let ar = ApiResource::erase::<Pipeline>(&());
        match &self.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    fn in_scope(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }

    /// Fails with the API server's answer when the Pipelines cannot be listed (no CRD, no
    /// permission): checked once at start so a misconfigured server says so at once.
    pub async fn check(&self) -> Result<(), ClusterError> {
        self.pipelines_api().list(&ListParams::default().limit(1)).await.map(|_| ()).map_err(cluster_error)
    }
}

fn cluster_error(e: kube::Error) -> ClusterError {
    match &e {
        kube::Error::Api(s) if s.code == 403 || s.code == 401 => ClusterError::Forbidden(s.message.clone()),
        _ => ClusterError::Api(e.to_string()),
    }
}

fn pipeline_object(o: DynamicObject) -> Option<PipelineObject> {
    if o.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let namespace = o.namespace().unwrap_or_default();
    let name = o.name_any();
    match serde_json::from_value::<PipelineSpec>(o.data.get("spec").cloned().unwrap_or_default()) {
        Ok(spec) => Some(PipelineObject { namespace, name, spec }),
        Err(e) => {
            tracing::warn!(%namespace, pipeline = %name, error = %e, "skipping a Pipeline whose spec does not parse");
            None
        }
    }
}

impl ClusterPipelines for KubePipelines {
    fn list_pipelines(&self) -> BoxFuture<'_, Result<Vec<PipelineObject>, ClusterError>> {
        Box::pin(async move {
            let list = self.pipelines_api().list(&ListParams::default()).await.map_err(cluster_error)?;
            Ok(list.items.into_iter().filter_map(pipeline_object).collect())
        })
    }

    fn get_pipeline<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<PipelineObject>, ClusterError>> {
        Box::pin(async move {
            if !self.in_scope(namespace) {
                return Ok(None);
            }
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), namespace, &ApiResource::erase::<Pipeline>(&()));
            Ok(api.get_opt(name).await.map_err(cluster_error)?.and_then(pipeline_object))
        })
    }

    fn secret_value<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ClusterError>> {
        Box::pin(async move {
            if !self.in_scope(namespace) {
                return Ok(None);
            }
            let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
            let Some(secret) = api.get_opt(name).await.map_err(cluster_error)? else { return Ok(None) };
            let value = secret.data.as_ref().and_then(|d| d.get(key)).map(|b| String::from_utf8(b.0.clone()));
            match value {
                None => Ok(None),
                Some(Ok(v)) => Ok(Some(v)),
                Some(Err(_)) => {
                    tracing::warn!(%namespace, secret = %name, %key, "webhook secret is not UTF-8: ignored");
                    Ok(None)
                }
            }
        })
    }

    fn create_run<'a>(&'a self, run: &'a NewRun) -> BoxFuture<'a, Result<CreateOutcome, ClusterError>> {
        Box::pin(async move {
            let api: Api<PipelineRun> = Api::namespaced(self.client.clone(), &run.namespace);
            let obj = PipelineRun {
                metadata: ObjectMeta {
                    name: Some(run.name.clone()),
                    namespace: Some(run.namespace.clone()),
                    labels: Some(run.labels.clone()),
                    ..Default::default()
                },
                spec: run.spec.clone(),
                status: None,
            };
            match api.create(&PostParams::default(), &obj).await {
                Ok(_) => Ok(CreateOutcome::Created),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(CreateOutcome::AlreadyExists),
                Err(e) => Err(cluster_error(e)),
            }
        })
    }
}
