//! Pure readers of the stored ModelDeployment, Pipeline and PipelineRun objects (their JSON
//! spec and status) for the deployments, pipelines and registry pages: what a model reference
//! or a step says in words, which pipeline run produced which model version, and which
//! deployments serve a version. No IO.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// A model reference in words: `NAME v2`, `NAME@alias` or the URI.
pub fn describe_model_ref(r: &Value) -> String {
    if let Some(u) = r.get("uri").and_then(Value::as_str) {
        return u.to_string();
    }
    let name = s(r, "registeredModel");
    match (r.get("version").and_then(Value::as_i64), r.get("alias").and_then(Value::as_str)) {
        (Some(v), _) => format!("{name} v{v}"),
        (None, Some(a)) => format!("{name}@{a}"),
        (None, None) => name.to_string(),
    }
}

/// A trigger in words: `git push to REPO (branches main, release/*; paths ...) via github`,
/// with `, polled every Ns` when it polls.
pub fn describe_trigger(t: &Value) -> String {
    let Some(g) = t.get("git") else { return "unknown trigger".into() };
    let list = |k: &str| -> Vec<String> {
        g.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default()
    };
    let mut out = format!("git push to {}", s(g, "repo"));
    let branches = list("branches");
    out.push_str(&if branches.is_empty() {
        " (any branch".to_string()
    } else {
        format!(" (branches {}", branches.join(", "))
    });
    let paths = list("paths");
    if !paths.is_empty() {
        out.push_str(&format!("; paths {}", paths.join(", ")));
    }
    out.push(')');
    let provider = s(g, "provider");
    out.push_str(&format!(" via {} webhook", if provider.is_empty() { "github" } else { provider }));
    if let Some(p) = g.get("pollIntervalSeconds").and_then(Value::as_u64) {
        out.push_str(&format!(", polled every {p} s"));
    }
    out
}

/// A step's kind (`train`, `evaluate`, `register`, `deploy`, `container`) and what it does in
/// words.
pub fn describe_step(step: &Value) -> (String, String) {
    for kind in ["train", "evaluate", "container"] {
        if let Some(j) = step.get(kind) {
            let t = j.get("template").cloned().unwrap_or_default();
            let runtime = t.get("runtime").and_then(Value::as_str).unwrap_or("container");
            let what = match t.get("image").and_then(Value::as_str) {
                Some(img) => format!("image {img}"),
                None => {
                    let cmd: Vec<&str> = t
                        .get("command")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    cmd.join(" ")
                }
            };
            return (kind.to_string(), format!("{runtime} job: {what}"));
        }
    }
    if let Some(r) = step.get("register") {
        let mut d = format!("register {} from step {}", s(r, "model"), s(r, "fromStep"));
        if let Some(p) = r.get("artifactPath").and_then(Value::as_str) {
            d.push_str(&format!(" (artifact {p})"));
        }
        if let Some(a) = r.get("alias").and_then(Value::as_str) {
            d.push_str(&format!(", alias @{a}"));
        }
        return ("register".into(), d);
    }
    if let Some(r) = step.get("deploy") {
        let what = match (r.get("fromStep").and_then(Value::as_str), r.get("alias").and_then(Value::as_str)) {
            (Some(f), _) => format!("the version of step {f}"),
            (None, Some(a)) => format!("alias @{a}"),
            (None, None) => "?".into(),
        };
        return ("deploy".into(), format!("point ModelDeployment {} at {what}", s(r, "deployment")));
    }
    ("unknown".into(), String::new())
}

/// A PipelineRun as stored: namespace, name, status.
#[derive(Debug, Clone, Copy)]
pub struct RunRef<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// Its status.
    pub status: &'a Value,
}

/// Which pipeline run (namespace, name) registered each model version `(model, version)`,
/// from the register steps' `modelVersion`.
pub fn produced_versions(runs: &[RunRef<'_>]) -> BTreeMap<(String, i64), (String, String)> {
    let mut out = BTreeMap::new();
    for r in runs {
        for step in r.status.get("steps").and_then(Value::as_array).into_iter().flatten() {
            let Some(mv) = step.get("modelVersion") else { continue };
            let (Some(name), Some(version)) =
                (mv.get("name").and_then(Value::as_str), mv.get("version").and_then(Value::as_i64))
            else {
                continue;
            };
            out.entry((name.to_string(), version)).or_insert_with(|| (r.namespace.to_string(), r.name.to_string()));
        }
    }
    out
}

/// A ModelDeployment as stored: namespace, name, spec, status.
#[derive(Debug, Clone, Copy)]
pub struct DeploymentRef<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// Its spec.
    pub spec: &'a Value,
    /// Its status.
    pub status: &'a Value,
}

/// A deployment serving a model version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Serving {
    /// Namespace of the ModelDeployment.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Stable or Canary.
    pub role: String,
    /// Share of requests (percent).
    pub traffic_percent: u64,
    /// Ready replicas of that version.
    pub ready_replicas: u64,
}

/// The registered model a deployment serves (its stable model's, else its canary's).
pub fn deployment_model(spec: &Value) -> Option<String> {
    spec.get("model")
        .and_then(|m| m.get("registeredModel"))
        .or_else(|| spec.get("canary").and_then(|c| c.get("model")).and_then(|m| m.get("registeredModel")))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The deployments whose status lists a version of registered model `model`, per version.
pub fn serving_versions(model: &str, deployments: &[DeploymentRef<'_>]) -> BTreeMap<i64, Vec<Serving>> {
    let mut out: BTreeMap<i64, Vec<Serving>> = BTreeMap::new();
    for d in deployments {
        if deployment_model(d.spec).as_deref() != Some(model) {
            continue;
        }
        for v in d.status.get("versions").and_then(Value::as_array).into_iter().flatten() {
            let Some(version) = v.get("version").and_then(Value::as_str).and_then(|x| x.parse::<i64>().ok()) else {
                continue;
            };
            out.entry(version).or_default().push(Serving {
                namespace: d.namespace.to_string(),
                name: d.name.to_string(),
                role: s(v, "role").to_string(),
                traffic_percent: v.get("trafficPercent").and_then(Value::as_u64).unwrap_or(0),
                ready_replicas: v.get("readyReplicas").and_then(Value::as_u64).unwrap_or(0),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn model_refs_in_words() {
        assert_eq!(describe_model_ref(&json!({"registeredModel": "iris", "version": 2})), "iris v2");
        assert_eq!(describe_model_ref(&json!({"registeredModel": "iris", "alias": "champion"})), "iris@champion");
        assert_eq!(describe_model_ref(&json!({"uri": "s3://b/m.onnx"})), "s3://b/m.onnx");
    }

    #[test]
    fn triggers_and_steps_in_words() {
        let t = json!({"git": {"repo": "https://x/r", "branches": ["main"], "provider": "generic", "pollIntervalSeconds": 5}});
        assert_eq!(
            describe_trigger(&t),
            "git push to https://x/r (branches main) via generic webhook, polled every 5 s"
        );
        assert_eq!(describe_trigger(&json!({"git": {"repo": "r"}})), "git push to r (any branch) via github webhook");
        let step = json!({"name": "reg", "register": {"model": "m", "fromStep": "train", "alias": "champion"}});
        assert_eq!(describe_step(&step), ("register".into(), "register m from step train, alias @champion".into()));
        let step = json!({"name": "t", "train": {"template": {"runtime": "process", "command": ["python3", "t.py"]}}});
        assert_eq!(describe_step(&step), ("train".into(), "process job: python3 t.py".into()));
        let step = json!({"name": "d", "deploy": {"deployment": "srv", "fromStep": "reg"}});
        assert_eq!(describe_step(&step).1, "point ModelDeployment srv at the version of step reg");
    }

    #[test]
    fn lineage_from_runs_and_deployments() {
        let st1 = json!({"steps": [{"name": "train", "runId": "r1"}, {"name": "reg", "modelVersion": {"name": "m", "version": 1}}]});
        let st2 = json!({"steps": [{"name": "reg", "modelVersion": {"name": "m", "version": 2}}, {"name": "x"}]});
        let runs = [
            RunRef { namespace: "default", name: "p-1", status: &st1 },
            RunRef { namespace: "default", name: "p-2", status: &st2 },
        ];
        let made = produced_versions(&runs);
        assert_eq!(made.get(&("m".into(), 1)), Some(&("default".into(), "p-1".into())));
        assert_eq!(made.get(&("m".into(), 2)), Some(&("default".into(), "p-2".into())));
        assert_eq!(made.len(), 2);

        let spec = json!({"model": {"registeredModel": "m", "version": 1}, "canary": {"model": {"registeredModel": "m", "version": 2}, "canaryPercent": 30}});
        let status = json!({"versions": [
            {"version": "1", "role": "Stable", "trafficPercent": 70, "readyReplicas": 1},
            {"version": "2", "role": "Canary", "trafficPercent": 30, "readyReplicas": 1}]});
        let other_spec = json!({"model": {"registeredModel": "n", "alias": "a"}});
        let other_status = json!({"versions": [{"version": "1", "role": "Stable", "trafficPercent": 100}]});
        let deps = [
            DeploymentRef { namespace: "default", name: "srv", spec: &spec, status: &status },
            DeploymentRef { namespace: "default", name: "other", spec: &other_spec, status: &other_status },
        ];
        let serving = serving_versions("m", &deps);
        assert_eq!(serving.len(), 2);
        assert_eq!(serving[&1][0].name, "srv");
        assert_eq!(serving[&1][0].traffic_percent, 70);
        assert_eq!(serving[&2][0].role, "Canary");
        assert!(serving_versions("zzz", &deps).is_empty());
    }
}
