//! Capstan's resource types, group `capstan.dev`, version `v1alpha1`.
//!
//! These Rust types are the single source of truth: the CRD YAML in `helm/capstan/crds/`
//! is generated from them (`cargo run -p capstan-crds --bin crdgen`), their doc comments
//! become `kubectl explain` text, and [`manifest`] validates user manifests against the
//! very schema (types, ranges, unknown fields and CEL rules) the CRDs carry.

pub mod common;
pub mod manifest;
// kube's `printcolumn(type_ = ...)` repeats keys that clippy takes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
pub mod modeldeployment;
#[allow(clippy::duplicated_attributes)]
pub mod pipeline;
#[allow(clippy::duplicated_attributes)]
pub mod queue;
#[allow(clippy::duplicated_attributes)]
pub mod trainingjob;

pub use common::{Condition, EnvVar};
pub use modeldeployment::{ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus};
pub use pipeline::{Pipeline, PipelineRun, PipelineRunSpec, PipelineRunStatus, PipelineSpec};
pub use queue::{Queue, QueueSpec, QueueStatus};
pub use trainingjob::{TrainingJob, TrainingJobSpec, TrainingJobStatus};

/// API group of every Capstan resource.
pub const GROUP: &str = "capstan.dev";
/// The served version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every Capstan resource.
pub const API_VERSION: &str = "capstan.dev/v1alpha1";

use kube::CustomResourceExt;

/// Every CRD Capstan installs, in a stable order.
pub fn crds() -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> {
    vec![TrainingJob::crd(), Queue::crd(), Pipeline::crd(), PipelineRun::crd(), ModelDeployment::crd()]
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// Walks a schema, calling `visit(path, property_schema)` for every named property.
    fn walk_properties(schema: &Value, path: &str, visit: &mut dyn FnMut(&str, &Value)) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                let child = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
                visit(&child, prop);
                walk_properties(prop, &child, visit);
            }
        }
        if let Some(items) = schema.get("items") {
            walk_properties(items, &format!("{path}[]"), visit);
        }
        if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            walk_properties(extra, &format!("{path}{{}}"), visit);
        }
    }

    fn schemas() -> Vec<(String, Value)> {
        super::crds()
            .into_iter()
            .flat_map(|crd| {
                let kind = crd.spec.names.kind.clone();
                crd.spec.versions.into_iter().map(move |v| {
                    let schema = v.schema.and_then(|s| s.open_api_v3_schema).expect("every version has a schema");
                    (format!("{kind} {}", v.name), serde_json::to_value(schema).unwrap())
                })
            })
            .collect()
    }

    /// `kubectl explain` shows these: every field must say what it is for.
    #[test]
    fn every_property_has_a_description() {
        let mut missing = Vec::new();
        for (crd, schema) in schemas() {
            walk_properties(&schema, "", &mut |path, prop| {
                let ok = prop.get("description").and_then(Value::as_str).is_some_and(|d| !d.trim().is_empty());
                if !ok {
                    missing.push(format!("{crd}: {path}"));
                }
            });
        }
        assert!(missing.is_empty(), "properties without a description (add a doc comment):\n{}", missing.join("\n"));
    }

    /// A structural schema gives every field a type.
    #[test]
    fn every_property_has_a_type() {
        let mut missing = Vec::new();
        for (crd, schema) in schemas() {
            walk_properties(&schema, "", &mut |path, prop| {
                let exempt = prop.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
                    || prop.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
                if prop.get("type").is_none() && !exempt {
                    missing.push(format!("{crd}: {path}"));
                }
            });
        }
        assert!(missing.is_empty(), "properties without a type:\n{}", missing.join("\n"));
    }

    #[test]
    fn the_walk_reaches_nested_list_and_map_properties() {
        let schema = serde_json::json!({"properties": {
            "a": {"description": "A", "items": {"properties": {"b": {}}}},
            "m": {"description": "M", "additionalProperties": {"properties": {"c": {"description": " "}}}},
        }});
        let mut seen = Vec::new();
        walk_properties(&schema, "", &mut |path, prop| {
            if prop.get("description").and_then(Value::as_str).is_none_or(|d| d.trim().is_empty()) {
                seen.push(path.to_string());
            }
        });
        assert_eq!(seen, ["a[].b", "m{}.c"]);
    }

    #[test]
    fn crds_are_in_the_capstan_group() {
        let crds = super::crds();
        let names: Vec<_> = crds.iter().map(|c| c.metadata.name.clone().unwrap()).collect();
        assert_eq!(
            names,
            [
                "trainingjobs.capstan.dev",
                "queues.capstan.dev",
                "pipelines.capstan.dev",
                "pipelineruns.capstan.dev",
                "modeldeployments.capstan.dev"
            ]
        );
        for crd in &crds {
            assert_eq!(crd.spec.group, super::GROUP);
            assert!(crd.spec.versions.iter().any(|v| v.name == super::VERSION && v.served && v.storage));
        }
    }
}
