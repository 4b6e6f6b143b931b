//! ModelDeployment manifests through the loader `capstan apply` and the server share:
//! schema (types, ranges, unknown fields) and CEL rules, each error with its field path.

use capstan_crds::manifest::{load, ManifestError, Resource};

const GOOD: &str = r#"apiVersion: capstan.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: iris
spec:
  model:
    registeredModel: iris
    alias: champion
  minReplicas: 1
  maxReplicas: 4
  autoscaling:
    metric: concurrency
    target: 8
  resources: {cpu: "1", memory: 1Gi}
  canary:
    model:
      registeredModel: iris
      version: 3
    canaryPercent: 20
    windowSeconds: 120
    maxErrorRate: 0.02
    maxP99LatencyRatio: 1.5
    minRequests: 200
"#;

fn errors(text: &str) -> Vec<capstan_crds::manifest::FieldError> {
    match load(text.as_bytes()) {
        Err(ManifestError::Invalid(e)) => e,
        other => panic!("expected field errors, got {other:?}"),
    }
}

fn has(errors: &[capstan_crds::manifest::FieldError], needle: &str) -> bool {
    errors.iter().any(|e| e.to_string().contains(needle))
}

#[test]
fn a_valid_deployment_loads_typed() {
    let rs = load(GOOD.as_bytes()).expect("valid");
    let Resource::ModelDeployment(d) = &rs[0] else { panic!("not a ModelDeployment") };
    assert_eq!(rs[0].kind(), "ModelDeployment");
    assert_eq!(rs[0].namespace(), Some("default"));
    assert_eq!(d.spec.model.source().unwrap(), "models:/iris@champion");
    let canary = d.spec.canary.as_ref().unwrap();
    assert_eq!(canary.canary_percent, 20);
    assert_eq!(canary.model.source().unwrap(), "models:/iris/3");
    assert_eq!(canary.max_error_rate, Some(0.02));
}

#[test]
fn model_ref_needs_exactly_one_selector() {
    let e = errors(&GOOD.replace("    alias: champion\n", "    alias: champion\n    version: 2\n"));
    assert!(has(&e, "exactly one of version or alias"), "{e:?}");
    let e = errors(&GOOD.replace("    alias: champion\n", ""));
    assert!(has(&e, "exactly one of version or alias"), "{e:?}");
    let e = errors(
        &GOOD.replace("    registeredModel: iris\n    alias: champion\n", "    uri: s3://b/m.onnx\n    alias: x\n"),
    );
    assert!(has(&e, "registeredModel only"), "{e:?}");
    let e = errors(&GOOD.replace("    alias: champion\n", "    alias: champion\n    uri: /m.onnx\n"));
    assert!(has(&e, "not both"), "{e:?}");
}

#[test]
fn ranges_and_unknown_fields_name_the_field() {
    let e = errors(&GOOD.replace("canaryPercent: 20", "canaryPercent: 100"));
    assert!(e.iter().any(|x| x.path == "spec.canary.canaryPercent"), "{e:?}");
    let e = errors(&GOOD.replace("maxErrorRate: 0.02", "maxErrorRate: 2"));
    assert!(e.iter().any(|x| x.path == "spec.canary.maxErrorRate"), "{e:?}");
    let e = errors(&GOOD.replace("maxReplicas: 4", "maxReplicas: 4\n  replicas: 3"));
    assert!(e.iter().any(|x| x.path == "spec.replicas"), "{e:?}");
    let e = errors(&GOOD.replace("minReplicas: 1", "minReplicas: 5"));
    assert!(has(&e, "minReplicas cannot exceed maxReplicas"), "{e:?}");
    let e = errors(&GOOD.replace("metric: concurrency", "metric: cpu"));
    assert!(e.iter().any(|x| x.path == "spec.autoscaling.metric"), "{e:?}");
    let e = errors(&GOOD.replace("maxP99LatencyRatio: 1.5", "maxP99LatencyRatio: 0.5"));
    assert!(has(&e, "maxP99LatencyRatio"), "{e:?}");
}

#[test]
fn image_runtime_needs_image_and_port() {
    let with = |rt: &str| GOOD.replace("  minReplicas: 1\n", &format!("  runtime:\n{rt}  minReplicas: 1\n"));
    let e = errors(&with("    type: image\n    image: nvcr.io/nvidia/tritonserver:25.01-py3\n"));
    assert!(has(&e, "needs image and port"), "{e:?}");
    let e = errors(&with("    image: x\n"));
    assert!(has(&e, "image applies to runtime type image only"), "{e:?}");
    load(with("    type: image\n    image: triton\n    port: 8000\n").as_bytes())
        .expect("an image runtime with a port");
    load(with("    args: [--max-batch, \"16\"]\n").as_bytes()).expect("builtin with args");
}
