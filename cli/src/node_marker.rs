//! The agent's Kubernetes half: keep its own Node's GPU facts current (`capstan agent
//! --kubernetes`, which the chart's DaemonSet passes). The values come from
//! `capstan_agent::node::node_state` (GPU Feature Discovery labels, the unhealthy-GPU
//! annotation the controller's scheduler reads, a condition, a taint); this module only
//! applies them: labels and annotation by server-side apply (field manager
//! `capstan-agent`), the taint by a merge patch guarded by the resourceVersion it read, the
//! condition by a strategic merge patch of the Node's status. Runs whenever a GPU's health
//! changes, and every 30 s.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use capstan_agent::node::{self, NodeGpuState};
use capstan_agent::telemetry::Telemetry;
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Patch, PatchParams};
use kube::Api;
use serde_json::json;
use tokio::sync::watch;

/// Field manager of the agent's writes.
pub const FIELD_MANAGER: &str = "capstan-agent";

/// Apply `state` to the Node `name`.
pub async fn apply(api: &Api<Node>, name: &str, state: &NodeGpuState) -> Result<()> {
    let meta = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": state.labels,
            "annotations": { node::ANNOTATION_UNHEALTHY: state.unhealthy },
        }
    });
    api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&meta))
        .await
        .with_context(|| format!("labelling node {name}"))?;

    let current = api.get(name).await.with_context(|| format!("reading node {name}"))?;
    let taints: Vec<Taint> = current.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let mut wanted: Vec<Taint> = taints.iter().filter(|t| t.key != node::TAINT).cloned().collect();
    if let Some((key, value, effect)) = &state.taint {
        wanted.push(Taint { key: key.clone(), value: Some(value.clone()), effect: effect.clone(), time_added: None });
    }
    if wanted != taints {
        let patch =
            json!({"metadata": {"resourceVersion": current.metadata.resource_version}, "spec": {"taints": wanted}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("tainting node {name}"))?;
    }

    let (status, reason, message) = &state.condition;
    let previous = current
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == node::CONDITION));
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let transition = match previous {
        Some(p) if &p.status == status => {
            p.last_transition_time.as_ref().map(|t| t.0.to_string()).unwrap_or(now.clone())
        }
        _ => now.clone(),
    };
    let cond = json!({"status": {"conditions": [{
        "type": node::CONDITION, "status": status, "reason": reason, "message": message,
        "lastHeartbeatTime": now, "lastTransitionTime": transition,
    }]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Strategic(&cond))
        .await
        .with_context(|| format!("setting the {} condition of node {name}", node::CONDITION))?;
    Ok(())
}

/// Keep the Node current until `shutdown`.
pub async fn run(client: kube::Client, name: String, tel: Arc<Telemetry>, mut shutdown: watch::Receiver<bool>) {
    let api: Api<Node> = Api::all(client);
    let changed = tel.health_changed();
    let mut last: Option<NodeGpuState> = None;
    let mut since_write = std::time::Instant::now();
    loop {
        let state = node::node_state(tel.gpus(), &tel.health());
        // Rewrite when something changed, and every 30 s (the condition's heartbeat).
        if last.as_ref() != Some(&state) || since_write.elapsed() >= Duration::from_secs(30) {
            match apply(&api, &name, &state).await {
                Ok(()) => {
                    if last.as_ref() != Some(&state) {
                        tracing::info!(node = %name, unhealthy = %state.unhealthy, "node GPU state written");
                    }
                    last = Some(state);
                    since_write = std::time::Instant::now();
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "updating the node failed; retrying"),
            }
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.changed() => { if *shutdown.borrow() { return; } }
        }
    }
}
