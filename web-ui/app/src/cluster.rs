//! Where the jobs, queues, deployments and pipelines the pages show live (feature `ssr`).
//!
//! Under `capstan up` they are rows of the server's own store. Under `capstan server
//! --kubernetes` they are objects of the cluster (TrainingJob, Queue, ModelDeployment,
//! Pipeline and PipelineRun of `capstan.dev/v1alpha1`, events.k8s.io Events, pods' logs):
//! the `capstan` binary implements [`ClusterResources`] with kube and puts it in every
//! request's extensions ([`ClusterView`]); the pages read through [`Resources`], which picks
//! the cluster when the request carries one and the store otherwise. The values are the same
//! either way ([`StoredResource`], [`capstan_store::Event`]), so the pages do not know which.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use capstan_store::{Event, Store, StoredResource};

/// A boxed future of a [`ClusterResources`] call.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why reading the cluster failed.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterError {
    /// The API server refused the server's ServiceAccount (the Helm chart grants get and list
    /// on the capstan.dev kinds, pods, pods/log and events).
    Forbidden(String),
    /// The API server could not be reached or failed the call.
    Api(String),
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterError::Forbidden(m) => write!(f, "the Kubernetes API refused the server's ServiceAccount: {m}"),
            ClusterError::Api(m) => write!(f, "the Kubernetes API failed: {m}"),
        }
    }
}

impl std::error::Error for ClusterError {}

/// The cluster's objects as the pages read them. Kinds are `TrainingJob`, `Queue`,
/// `ModelDeployment`, `Pipeline` and `PipelineRun`; objects come back as
/// [`StoredResource`]s (metadata, spec and status as the cluster has them; `resource_version`
/// 0 when it is not a number).
pub trait ClusterResources: Send + Sync {
    /// Every object of `kind` in `namespace` (None: every namespace the server may read; a
    /// cluster-scoped kind ignores it).
    fn list<'a>(
        &'a self,
        kind: &'a str,
        namespace: Option<&'a str>,
    ) -> BoxFut<'a, Result<Vec<StoredResource>, ClusterError>>;
    /// One object; None when it does not exist. `namespace` is ignored for cluster-scoped
    /// kinds.
    fn get<'a>(
        &'a self,
        kind: &'a str,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<Option<StoredResource>, ClusterError>>;
    /// The events about `object` (matched by uid), oldest first.
    fn events<'a>(&'a self, object: &'a StoredResource) -> BoxFut<'a, Result<Vec<Event>, ClusterError>>;
    /// The log of replica `replica` of TrainingJob `job` in attempt `attempt` (its pod's
    /// log), followed while the pod runs when `follow`; None when there is no such pod.
    fn log<'a>(
        &'a self,
        job: &'a StoredResource,
        attempt: u32,
        replica: u32,
        follow: bool,
    ) -> BoxFut<'a, Result<Option<axum::body::Body>, ClusterError>>;
}

/// The cluster of a server whose resources live on Kubernetes, carried in each request's
/// extensions (absent: the store).
#[derive(Clone)]
pub struct ClusterView(pub Arc<dyn ClusterResources>);

impl std::fmt::Debug for ClusterView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterView")
    }
}

/// What a read of resources failed with, from either home.
#[derive(Debug)]
pub enum ReadError {
    /// The store failed.
    Store(capstan_store::StoreError),
    /// The cluster failed.
    Cluster(ClusterError),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Store(e) => e.fmt(f),
            ReadError::Cluster(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReadError {}

impl ReadError {
    /// The HTTP status to answer with: 503 when the cluster failed, 404 for a missing object
    /// of the store, 500 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            ReadError::Cluster(_) => 503,
            ReadError::Store(capstan_store::StoreError::NotFound(_)) => 404,
            ReadError::Store(_) => 500,
        }
    }
}

/// Where the resources of this request are read: the cluster, else the store.
#[derive(Clone, Copy)]
pub enum Resources<'a> {
    /// The server's own store (`capstan up`).
    Store(&'a Store),
    /// A Kubernetes cluster (`capstan server --kubernetes`).
    Cluster(&'a dyn ClusterResources),
}

impl<'a> Resources<'a> {
    /// The cluster when `view` is given, else `store`.
    pub fn of(store: &'a Store, view: Option<&'a ClusterView>) -> Resources<'a> {
        match view {
            Some(v) => Resources::Cluster(v.0.as_ref()),
            None => Resources::Store(store),
        }
    }

    /// True on a cluster.
    pub fn on_cluster(&self) -> bool {
        matches!(self, Resources::Cluster(_))
    }

    /// Every object of `kind` (in `namespace`, or all).
    pub async fn list(&self, kind: &str, namespace: Option<&str>) -> Result<Vec<StoredResource>, ReadError> {
        match self {
            Resources::Store(s) => s.list_resources(kind, namespace).await.map_err(ReadError::Store),
            Resources::Cluster(c) => c.list(kind, namespace).await.map_err(ReadError::Cluster),
        }
    }

    /// One object.
    pub async fn get(&self, kind: &str, namespace: &str, name: &str) -> Result<Option<StoredResource>, ReadError> {
        match self {
            Resources::Store(s) => s.get_resource(kind, namespace, name).await.map_err(ReadError::Store),
            Resources::Cluster(c) => c.get(kind, namespace, name).await.map_err(ReadError::Cluster),
        }
    }

    /// The events about `object`, oldest first.
    pub async fn events(&self, object: &StoredResource) -> Result<Vec<Event>, ReadError> {
        match self {
            Resources::Store(s) => s.list_events(&object.uid).await.map_err(ReadError::Store),
            Resources::Cluster(c) => c.events(object).await.map_err(ReadError::Cluster),
        }
    }
}

/// The cluster this request carries ([`ClusterView`] in its extensions), if any. Inside a
/// page's rendering or a server function only.
pub fn cluster_of_request() -> Option<ClusterView> {
    leptos::prelude::use_context::<axum::http::request::Parts>()
        .and_then(|p| p.extensions.get::<ClusterView>().cloned())
}
