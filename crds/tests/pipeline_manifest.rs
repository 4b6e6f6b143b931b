//! Pipeline and PipelineRun manifests through the same loader `capstan apply` and the server
//! use: schema, CEL rules and the DAG / `when` checks, each error with its field path and line.

use capstan_crds::manifest::{load, ManifestError, Resource};

const GOOD: &str = r#"apiVersion: capstan.dev/v1alpha1
kind: Pipeline
metadata:
  name: iris
spec:
  triggers:
    - git:
        repo: https://github.com/acme/iris.git
        branches: [main]
        secretRef: {name: iris-hook}
  parameters:
    - name: threshold
      default: "0.9"
  steps:
    - name: train
      train:
        template:
          runtime: process
          command: [python3, train.py]
    - name: evaluate
      dependsOn: [train]
      evaluate:
        template:
          runtime: process
          command: [python3, eval.py]
    - name: register
      dependsOn: [evaluate]
      when: steps.evaluate.metrics.accuracy > double(params.threshold)
      register:
        model: iris
        fromStep: train
        alias: champion
"#;

fn errors(text: &str) -> Vec<capstan_crds::manifest::FieldError> {
    match load(text.as_bytes()) {
        Err(ManifestError::Invalid(e)) => e,
        other => panic!("expected field errors, got {other:?}"),
    }
}

#[test]
fn a_valid_pipeline_loads_typed() {
    let rs = load(GOOD.as_bytes()).expect("valid");
    let Resource::Pipeline(p) = &rs[0] else { panic!("not a pipeline") };
    assert_eq!(p.spec.steps.len(), 3);
    assert_eq!(rs[0].namespace(), Some("default"));
    assert_eq!(p.spec.triggers[0].git.secret_ref.as_ref().unwrap().key(), "secret");
}

#[test]
fn a_cycle_is_rejected_naming_the_step_and_line() {
    let text = GOOD.replace("    - name: train\n", "    - name: train\n      dependsOn: [register]\n");
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, "spec.steps[0].dependsOn");
    assert_eq!(e[0].line, Some(16));
    assert!(e[0].message.contains("train -> register -> evaluate -> train"), "{}", e[0].message);
}

#[test]
fn unknown_depends_on_names_the_step() {
    let text = GOOD.replace("dependsOn: [train]", "dependsOn: [trian]");
    let e = errors(&text);
    assert_eq!(e[0].path, "spec.steps[1].dependsOn[0]");
    assert!(e[0].message.contains("step \"evaluate\" depends on unknown step \"trian\""), "{}", e[0].message);
    assert!(e.iter().all(|e| e.line.is_some()));
}

#[test]
fn an_invalid_when_names_step_line_and_position() {
    let text = GOOD.replace("> double(params.threshold)", ">> 0.9");
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, "spec.steps[2].when");
    assert_eq!(e[0].line, Some(28));
    assert!(e[0].message.contains("step \"register\": invalid when expression: line 1, column"), "{}", e[0].message);
    assert!(e[0].to_string().starts_with("document 1, line 28: spec.steps[2].when: "), "{}", e[0]);
}

#[test]
fn a_step_needs_exactly_one_kind() {
    let text = GOOD.replace("      register:\n", "      container: {template: {image: x}}\n      register:\n");
    let e = errors(&text);
    assert!(e[0].message.contains("exactly one of train, evaluate, register, deploy and container"), "{e:?}");
    assert_eq!(e[0].path, "spec.steps[2]");
}

#[test]
fn reserved_env_in_a_template_is_rejected() {
    let text = GOOD.replace(
        "command: [python3, train.py]",
        "command: [python3, train.py]\n          env: [{name: RANK, value: '1'}]",
    );
    let e = errors(&text);
    assert!(e[0].path.starts_with("spec.steps[0].train.template.env"), "{e:?}");
    assert!(e[0].message.contains("reserved"), "{e:?}");
}

#[test]
fn a_pipeline_run_loads() {
    let text = r#"apiVersion: capstan.dev/v1alpha1
kind: PipelineRun
metadata: {name: iris-manual-1, namespace: ml}
spec:
  pipelineRef: iris
  parameters: {threshold: "0.95"}
"#;
    let rs = load(text.as_bytes()).expect("valid");
    let Resource::PipelineRun(r) = &rs[0] else { panic!("not a run") };
    assert_eq!(r.spec.parameters["threshold"], "0.95");
    assert_eq!(rs[0].namespace(), Some("ml"));
    let bad = text.replace("pipelineRef", "pipelineRefs");
    let e = errors(&bad);
    assert!(
        e.iter().any(|e| e.message.contains("unknown field \"pipelineRefs\"; did you mean \"pipelineRef\"")),
        "{e:?}"
    );
}
