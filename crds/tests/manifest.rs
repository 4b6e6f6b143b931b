//! Tests of manifest loading and validation: every error names its exact path and line.

use capstan_crds::manifest::{self, load, parse_bytes, parse_documents, validate, FieldError, ManifestError, Resource};
use proptest::prelude::*;

/// The field errors of a manifest that must parse but not validate.
fn invalid(text: &str) -> Vec<FieldError> {
    match load(text.as_bytes()) {
        Err(ManifestError::Invalid(errors)) => errors,
        other => panic!("expected field errors for\n{text}\ngot {other:?}"),
    }
}

/// The single field error of a manifest.
fn one_error(text: &str) -> FieldError {
    let errors = invalid(text);
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    errors.into_iter().next().unwrap()
}

/// (line, column, message) of a syntax error.
fn syntax(text: &str) -> (usize, usize, String) {
    match parse_documents(text) {
        Err(ManifestError::Syntax { line, column, message }) => (line, column, message),
        other => panic!("expected a syntax error for\n{text}\ngot {other:?}"),
    }
}

fn job(spec: &str) -> String {
    format!("apiVersion: capstan.dev/v1alpha1\nkind: TrainingJob\nmetadata:\n  name: demo\nspec:\n{spec}")
}

const VALID_JOB: &str = r#"# A complete job.
apiVersion: capstan.dev/v1alpha1
kind: TrainingJob
metadata:
  name: llama-finetune
  namespace: research
  labels:
    team: nlp
    app.kubernetes.io/name: llama
  annotations:
    note: "first try"
  uid: 0b5f7c1e-0000-0000-0000-000000000000
  resourceVersion: "12345"
  creationTimestamp: null
spec:
  image: ghcr.io/acme/train:1.2
  command: [torchrun, train.py]
  args: ["--epochs", "3"]
  env:
    - name: HF_HOME
      value: /cache/hf
    - name: NCCL_DEBUG
  replicas: 4
  gpusPerReplica: 8
  nprocPerReplica: 8
  gpuProduct: nvidia-h100-80gb-hbm3
  resources: {cpu: "32", memory: 256Gi}
  launcher: torchrun
  queue: research
  priority: 100
  runPolicy:
    backoffLimit: 5
    restartPolicy: ExitCode
    activeDeadlineSeconds: 86400
    suspend: false
  checkpoint:
    uri: s3://ckpt/llama
    resume: latest
  scratch: {size: 500Gi, medium: disk}
  experiment: llama
  masterPort: 29500
status:
  phase: Running
  whatever: ignored
"#;

const VALID_QUEUE: &str = r#"apiVersion: capstan.dev/v1alpha1
kind: Queue
metadata:
  name: research
spec:
  quotas:
    - product: nvidia-h100-80gb-hbm3
      nominal: 16
      borrowingLimit: 8
      lendingLimit: 4
    - product: "*"
      nominal: 2
  cohort: lab
  preemption:
    withinQueue: Never
    reclaimWithinCohort: LowerPriority
  weight: 2
"#;

#[test]
fn valid_training_job_round_trips() {
    let resources = load(VALID_JOB.as_bytes()).unwrap();
    assert_eq!(resources.len(), 1);
    let r = &resources[0];
    assert_eq!(r.kind(), "TrainingJob");
    assert_eq!(r.name(), "llama-finetune");
    assert_eq!(r.namespace(), Some("research"));
    let Resource::TrainingJob(j) = r else { panic!("not a job") };
    assert_eq!(j.spec.image.as_deref(), Some("ghcr.io/acme/train:1.2"));
    assert_eq!(j.spec.command, ["torchrun", "train.py"]);
    assert_eq!(j.spec.args, ["--epochs", "3"]);
    assert_eq!(j.spec.env.len(), 2);
    assert_eq!(j.spec.env[1].name, "NCCL_DEBUG");
    assert_eq!(j.spec.env[1].value, "");
    assert_eq!(j.spec.replicas, 4);
    assert_eq!(j.spec.gpus_per_replica, Some(8));
    assert_eq!(j.spec.launcher, capstan_crds::trainingjob::Launcher::Torchrun);
    assert_eq!(j.spec.priority, Some(100));
    assert_eq!(j.spec.run_policy.backoff_limit(), 5);
    assert_eq!(j.spec.run_policy.restart_policy(), capstan_crds::trainingjob::RestartPolicy::ExitCode);
    assert_eq!(j.spec.checkpoint.as_ref().unwrap().uri, "s3://ckpt/llama");
    assert_eq!(j.spec.master_port, Some(29500));
    assert_eq!(j.spec.resources.as_ref().unwrap().cpu.as_deref(), Some("32"));
    let labels = j.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["app.kubernetes.io/name"], "llama");
    // Server-owned metadata and status are ignored.
    assert_eq!(j.metadata.uid, None);
    assert_eq!(j.metadata.resource_version, None);
    assert!(j.status.is_none());

    // Serializing the typed job and loading it again gives the same job.
    let again = serde_json::to_string(j).unwrap();
    let Resource::TrainingJob(j2) = &load(again.as_bytes()).unwrap()[0] else { panic!() };
    assert_eq!((&j.metadata, &j.spec), (&j2.metadata, &j2.spec));
}

#[test]
fn valid_queue_round_trips() {
    let resources = load(VALID_QUEUE.as_bytes()).unwrap();
    let r = &resources[0];
    assert_eq!(r.kind(), "Queue");
    assert_eq!(r.name(), "research");
    assert_eq!(r.namespace(), None);
    let Resource::Queue(q) = r else { panic!("not a queue") };
    assert_eq!(q.spec.quotas.len(), 2);
    assert_eq!(q.spec.quotas[0].nominal, 16);
    assert_eq!(q.spec.quotas[0].lending_limit, Some(4));
    assert_eq!(q.spec.quotas[1].product, "*");
    assert_eq!(q.spec.cohort.as_deref(), Some("lab"));
    assert_eq!(q.spec.preemption.within_queue, Some(capstan_crds::queue::WithinQueue::Never));
    assert_eq!(q.spec.weight, Some(2));
}

#[test]
fn minimal_job_gets_defaults_and_default_namespace() {
    let r = &load(job("  image: busybox\n").as_bytes()).unwrap()[0];
    assert_eq!(r.namespace(), Some("default"));
    let Resource::TrainingJob(j) = r else { panic!() };
    assert_eq!(j.spec.replicas, 1);
    assert_eq!(j.spec.launcher, capstan_crds::trainingjob::Launcher::None);
}

#[test]
fn unknown_field_in_spec() {
    let e = one_error(&job("  image: busybox\n  replica: 2\n"));
    assert_eq!(e.path, "spec.replica");
    assert_eq!(e.line, Some(7));
    assert_eq!(e.document, 0);
    assert!(e.message.starts_with(r#"unknown field "replica""#), "{}", e.message);
    assert!(e.message.contains(r#"did you mean "replicas""#), "{}", e.message);
}

#[test]
fn unknown_field_nested() {
    let e = one_error(&job("  image: busybox\n  runPolicy:\n    backoffLimit: 2\n    retries: 3\n"));
    assert_eq!(e.path, "spec.runPolicy.retries");
    assert_eq!(e.line, Some(9));
    assert_eq!(e.message, r#"unknown field "retries""#);

    let e = one_error(&job("  image: busybox\n  env:\n  - name: A\n  - name: B\n    valeu: x\n"));
    assert_eq!(e.path, "spec.env[1].valeu");
    assert_eq!(e.line, Some(10));
    assert!(e.message.starts_with(r#"unknown field "valeu""#));
}

#[test]
fn unknown_top_level_and_snake_case_suggestions() {
    let errors = invalid(&job("  image: busybox\n  gpus_per_replica: 2\n").replace("spec:", "specs: {}\nspec:"));
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_eq!(errors[0].path, "specs");
    assert_eq!(errors[0].line, Some(5));
    assert_eq!(errors[1].path, "spec.gpus_per_replica");
    assert!(errors[1].message.contains(r#"did you mean "gpusPerReplica""#), "{}", errors[1].message);
}

#[test]
fn wrong_type() {
    let e = one_error(&job("  image: busybox\n  replicas: \"two\"\n"));
    assert_eq!(e.path, "spec.replicas");
    assert_eq!(e.line, Some(7));
    assert_eq!(e.message, r#"must be an integer, not a string ("two")"#);

    let e = one_error(&job("  image: busybox\n  replicas: 1.5\n"));
    assert_eq!(e.message, "must be an integer, not a number (1.5)");

    // A number where a string is expected gets a hint.
    let e = one_error(&job("  image: busybox\n  resources:\n    cpu: 4\n"));
    assert_eq!(e.path, "spec.resources.cpu");
    assert_eq!(e.line, Some(8));
    assert!(e.message.starts_with("must be a string, not an integer (4); quote it"), "{}", e.message);
}

#[test]
fn whole_floats_are_integers() {
    let Resource::TrainingJob(j) = &load(job("  image: busybox\n  replicas: 2.0\n").as_bytes()).unwrap()[0] else {
        panic!()
    };
    assert_eq!(j.spec.replicas, 2);
}

#[test]
fn ranges() {
    let e = one_error(&job("  image: busybox\n  replicas: 0\n"));
    assert_eq!((e.path.as_str(), e.line, e.message.as_str()), ("spec.replicas", Some(7), "must be at least 1"));

    let e = one_error(&job("  image: busybox\n  gpusPerReplica: 65\n"));
    assert_eq!((e.path.as_str(), e.line, e.message.as_str()), ("spec.gpusPerReplica", Some(7), "must be at most 64"));

    // Integer formats bound values the schema gives no range for.
    let e = one_error(&job("  image: busybox\n  priority: 3000000000\n"));
    assert_eq!((e.path.as_str(), e.message.as_str()), ("spec.priority", "must be at most 2147483647"));
    let e = one_error(&job("  image: busybox\n  runPolicy:\n    ttlSecondsAfterFinished: -1\n"));
    assert_eq!(
        (e.path.as_str(), e.line, e.message.as_str()),
        ("spec.runPolicy.ttlSecondsAfterFinished", Some(8), "must be at least 0")
    );
}

#[test]
fn enums_list_allowed_values() {
    let e = one_error(&job("  image: busybox\n  launcher: pytorch\n"));
    assert_eq!(e.path, "spec.launcher");
    assert_eq!(e.line, Some(7));
    assert_eq!(e.message, r#"must be one of "none", "torchrun", "deepspeed", "mpi", not a string ("pytorch")"#);
}

#[test]
fn required_and_null() {
    let e = one_error(&job("  image: busybox\n  checkpoint:\n    resume: latest\n"));
    assert_eq!((e.path.as_str(), e.line, e.message.as_str()), ("spec.checkpoint.uri", Some(7), "required"));

    // null in a field with a default is dropped; in one without, it is an error.
    load(job("  image: busybox\n  launcher:\n  runPolicy:\n").as_bytes()).unwrap();
    let e = one_error(&job("  image: busybox\n  command:\n"));
    assert_eq!((e.path.as_str(), e.line, e.message.as_str()), ("spec.command", Some(7), "must be a list, not null"));
    // nullable fields take null.
    load(job("  image: busybox\n  queue: null\n").as_bytes()).unwrap();

    let text = "apiVersion: capstan.dev/v1alpha1\nkind: TrainingJob\nmetadata:\n  name: x\n";
    let e = one_error(text);
    assert_eq!((e.path.as_str(), e.line, e.message.as_str()), ("spec", Some(1), "required"));
}

#[test]
fn reserved_env_name_names_its_index() {
    let e = one_error(&job(
        "  image: busybox\n  env:\n    - name: HF_HOME\n      value: /x\n    - name: MASTER_ADDR\n      value: 10.0.0.1\n",
    ));
    assert_eq!(e.path, "spec.env[1].name");
    assert_eq!(e.line, Some(10));
    assert_eq!(e.message, "MASTER_ADDR is reserved: Capstan sets the rendezvous variables itself");
}

#[test]
fn env_name_schema_pattern() {
    let e = one_error(&job("  image: busybox\n  env:\n    - name: 1BAD\n"));
    assert_eq!(e.path, "spec.env[0].name");
    assert_eq!(e.line, Some(8));
    assert_eq!(e.message, "a string (\"1BAD\") must match the pattern ^[A-Za-z_][A-Za-z0-9_]*$");
}

#[test]
fn malformed_yaml_unclosed_bracket() {
    let text = "apiVersion: capstan.dev/v1alpha1\nkind: TrainingJob\nmetadata:\n  name: demo\nspec:\n  command: [python, train.py\n  replicas: 2\n";
    let (line, column, message) = syntax(text);
    assert_eq!((line, column), (7, 11));
    assert!(message.contains("the '[' at line 6, column 12 is not closed"), "{message}");

    let (line, _, message) = syntax("a: [1, 2\n");
    assert_eq!(line, 2);
    assert!(message.contains("the '[' at line 1, column 4 is not closed"), "{message}");
}

#[test]
fn tabs_are_rejected_with_their_line() {
    let text = "apiVersion: capstan.dev/v1alpha1\nkind: TrainingJob\nmetadata:\n\tname: demo\n";
    let (line, column, message) = syntax(text);
    assert_eq!((line, column), (4, 2));
    assert!(message.contains("tabs"), "{message}");
}

#[test]
fn duplicate_keys_are_rejected() {
    let (line, column, message) = syntax(&job("  image: busybox\n  replicas: 1\n  replicas: 2\n"));
    assert_eq!((line, column), (8, 3));
    assert_eq!(message, r#"duplicate key "replicas" (first set at line 7)"#);

    let (line, _, message) = syntax(r#"{"a": 1, "a": 2}"#);
    assert_eq!(line, 1);
    assert!(message.contains(r#"duplicate key "a""#));
}

#[test]
fn missing_name() {
    let text = "apiVersion: capstan.dev/v1alpha1\nkind: Queue\nmetadata:\n  labels: {a: b}\nspec: {}\n";
    let e = one_error(text);
    assert_eq!((e.path.as_str(), e.line, e.message.as_str()), ("metadata.name", Some(3), "required"));

    let text = "apiVersion: capstan.dev/v1alpha1\nkind: Queue\nspec: {}\n";
    let e = one_error(text);
    assert_eq!((e.path.as_str(), e.line), ("metadata.name", Some(1)));
}

#[test]
fn bad_name() {
    let e = one_error(&job("  image: busybox\n").replace("name: demo", "name: Hello_World"));
    assert_eq!(e.path, "metadata.name");
    assert_eq!(e.line, Some(4));
    assert!(e.message.starts_with(r#""Hello_World" is not a valid name"#), "{}", e.message);

    let long = "a".repeat(64);
    let e = one_error(&job("  image: busybox\n").replace("name: demo", &format!("name: {long}")));
    assert_eq!(e.path, "metadata.name");
    for bad in ["-a", "a-", "a.b", "\"\""] {
        let e = one_error(&job("  image: busybox\n").replace("name: demo", &format!("name: {bad}")));
        assert_eq!(e.path, "metadata.name", "{bad}");
    }
    load(job("  image: busybox\n").replace("name: demo", &format!("name: {}", "a".repeat(63))).as_bytes()).unwrap();
}

#[test]
fn metadata_rules() {
    let e = one_error(&VALID_QUEUE.replace("  name: research\n", "  name: research\n  namespace: default\n"));
    assert_eq!((e.path.as_str(), e.line), ("metadata.namespace", Some(5)));
    assert!(e.message.contains("cluster-scoped"), "{}", e.message);

    let e = one_error(&job("  image: busybox\n").replace("  name: demo\n", "  name: demo\n  generateName: demo-\n"));
    assert_eq!((e.path.as_str(), e.line), ("metadata.generateName", Some(5)));

    let e = one_error(&job("  image: busybox\n").replace("  name: demo\n", "  name: demo\n  color: blue\n"));
    assert_eq!((e.path.as_str(), e.line, e.message.as_str()), ("metadata.color", Some(5), r#"unknown field "color""#));

    let e = one_error(
        &job("  image: busybox\n")
            .replace("  name: demo\n", "  name: demo\n  labels:\n    app.kubernetes.io/managed: true\n"),
    );
    assert_eq!(e.path, r#"metadata.labels["app.kubernetes.io/managed"]"#);
    assert_eq!(e.line, Some(6));
    assert!(e.message.starts_with("must be a string, not a boolean (true)"), "{}", e.message);

    let e = one_error(&job("  image: busybox\n").replace("  name: demo\n", "  name: demo\n  namespace: My_NS\n"));
    assert_eq!((e.path.as_str(), e.line), ("metadata.namespace", Some(5)));
}

#[test]
fn wrong_api_version_and_kind() {
    let e = one_error(&job("  image: busybox\n").replace("capstan.dev/v1alpha1", "batch/v1"));
    assert_eq!((e.path.as_str(), e.line), ("apiVersion", Some(1)));
    assert_eq!(e.message, r#"must be "capstan.dev/v1alpha1", not a string ("batch/v1")"#);

    let e = one_error(&job("  image: busybox\n").replace("kind: TrainingJob", "kind: Job"));
    assert_eq!((e.path.as_str(), e.line), ("kind", Some(2)));
    assert!(e.message.contains("TrainingJob, Queue"), "{}", e.message);

    let e = one_error("- a\n- b\n");
    assert_eq!((e.path.as_str(), e.line), ("", Some(1)));
}

#[test]
fn error_only_in_second_document() {
    let text = format!("{VALID_QUEUE}---\n# the job\n{}", job("  image: busybox\n  replicas: 0\n"));
    let errors = invalid(&text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let e = &errors[0];
    assert_eq!(e.document, 1);
    assert_eq!(e.path, "spec.replicas");
    let queue_lines = VALID_QUEUE.lines().count();
    assert_eq!(e.line, Some(queue_lines + 2 + 7));
    assert_eq!(e.to_string(), format!("document 2, line {}: spec.replicas: must be at least 1", queue_lines + 9));

    let docs = parse_documents(&text).unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[1].index, 1);
    assert_eq!(docs[1].start_line, queue_lines + 3);
}

#[test]
fn all_documents_errors_are_collected() {
    let text = format!(
        "{}\n---\n{}",
        job("  image: busybox\n  replicas: 0\n  launcher: x\n"),
        VALID_QUEUE.replace("weight: 2", "weight: 0")
    );
    let errors = invalid(&text);
    let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.document, e.path.as_str())).collect();
    assert_eq!(got, [(0, "spec.replicas"), (0, "spec.launcher"), (1, "spec.weight")]);
    let shown = ManifestError::Invalid(errors).to_string();
    assert!(shown.starts_with("3 errors:\n  document 1, line 7: spec.replicas: must be at least 1\n"), "{shown}");
}

#[test]
fn cel_priority_and_class_are_exclusive() {
    let e = one_error(&job("  image: busybox\n  priorityClassName: high\n  priority: 5\n"));
    assert_eq!(e.path, "spec.priority");
    assert_eq!(e.line, Some(8));
    assert!(e.message.contains("priority") && e.message.contains("priorityClassName"), "{}", e.message);
}

#[test]
fn cel_container_runtime_needs_image() {
    let e = one_error(&job("  runtime: container\n  command: [python]\n"));
    assert_eq!(e.path, "spec.image");
    assert_eq!(e.line, Some(5)); // spec.image is absent: its parent's line
    assert_eq!(e.message, "image is required unless runtime is process");

    // The process runtime needs none.
    load(job("  runtime: process\n  command: [python]\n").as_bytes()).unwrap();
}

#[test]
fn cel_rules_of_queue() {
    let text = VALID_QUEUE.replace("lendingLimit: 4", "lendingLimit: 40");
    let e = one_error(&text);
    assert_eq!((e.path.as_str(), e.line), ("spec.quotas[0].lendingLimit", Some(10)));
    assert_eq!(e.message, "lendingLimit cannot exceed nominal");

    let text = VALID_QUEUE.replace("product: \"*\"", "product: nvidia-h100-80gb-hbm3");
    let e = one_error(&text);
    assert_eq!((e.path.as_str(), e.line), ("spec.quotas", Some(6)));
}

#[test]
fn status_is_ignored() {
    let text = job("  image: busybox\nstatus:\n  phase: 12\n  nonsense: [1]\n");
    load(text.as_bytes()).unwrap();
}

#[test]
fn json_manifests() {
    let text = r#"{
	"apiVersion": "capstan.dev/v1alpha1",
	"kind": "TrainingJob",
	"metadata": {"name": "j"},
	"spec": {"image": "busybox", "replicas": -1}
}"#;
    let e = one_error(text);
    assert_eq!((e.path.as_str(), e.line), ("spec.replicas", Some(5)));
}

#[test]
fn scalars_resolve_like_yaml_1_2() {
    let docs = parse_documents(
        "a: 0x1F\nb: 0o17\nc: 1.5e3\nd: .5\ne: -12\nf: +12\ng: 1_000\nh: yes\ni: '1'\nj: ~\nk: null\nl: !!str 12\nm: True\nn: \"true\"\no: |\n  text\n",
    )
    .unwrap();
    let v = &docs[0].value;
    assert_eq!(v["a"], 31);
    assert_eq!(v["b"], 15);
    assert_eq!(v["c"], 1500.0);
    assert_eq!(v["d"], 0.5);
    assert_eq!(v["e"], -12);
    assert_eq!(v["f"], 12);
    assert_eq!(v["g"], "1_000");
    assert_eq!(v["h"], "yes");
    assert_eq!(v["i"], "1");
    assert!(v["j"].is_null() && v["k"].is_null());
    assert_eq!(v["l"], "12");
    assert_eq!(v["m"], true);
    assert_eq!(v["n"], "true");
    assert_eq!(v["o"], "text\n");
}

#[test]
fn infinity_and_nan_are_rejected() {
    for (text, line) in [("a: 1\nb: .inf\n", 2), ("a: -.Inf\n", 1), ("x:\n  - .nan\n", 2), ("a: 1e999\n", 1)] {
        let (l, _, message) = syntax(text);
        assert_eq!(l, line, "{text}");
        assert!(message.contains("JSON"), "{message}");
    }
}

#[test]
fn anchors_aliases_and_merge_keys() {
    let docs = parse_documents("base: &b {x: 1, y: [2, 3]}\ncopy: *b\nmerged:\n  <<: *b\n  y: 4\n").unwrap();
    let v = &docs[0].value;
    assert_eq!(v["copy"], serde_json::json!({"x": 1, "y": [2, 3]}));
    assert_eq!(v["merged"], serde_json::json!({"x": 1, "y": 4}));
    assert_eq!(docs[0].line_of("merged.x"), Some(4));

    let (line, _, message) = syntax("a: &a [1, *a]\n");
    assert_eq!(line, 1);
    assert!(message.contains("recursive"), "{message}");
}

#[test]
fn billion_laughs_is_stopped() {
    let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let (line, _, message) = syntax(&text);
    assert!((6..=8).contains(&line), "line {line}");
    assert!(message.contains("nodes"), "{message}");
}

#[test]
fn deep_nesting_is_an_error() {
    // 64 levels are fine, 65 are not (block style: the parser, not the scanner, sees it).
    let nest =
        |n: usize| (0..n).map(|i| format!("{}k:\n", "  ".repeat(i))).collect::<String>() + &"  ".repeat(n) + "v\n";
    parse_documents(&nest(64)).unwrap();
    let (line, _, message) = syntax(&nest(65));
    assert_eq!(line, 65);
    assert!(message.contains("nested deeper than 64"), "{message}");
}

#[test]
fn mapping_keys_must_be_scalars() {
    let (line, _, message) = syntax("a: 1\n? [x]\n: y\n");
    assert_eq!(line, 2);
    assert!(message.contains("key must be a scalar"), "{message}");
}

#[test]
fn empty_input() {
    for text in ["", "   \n", "# only a comment\n", "---\n---\n", "null\n", "---\n...\n"] {
        assert!(matches!(parse_documents(text), Err(ManifestError::Empty)), "{text:?}");
        assert!(matches!(load(text.as_bytes()), Err(ManifestError::Empty)), "{text:?}");
    }
}

#[test]
fn empty_documents_are_skipped_and_not_counted() {
    let docs = parse_documents("---\n---\na: 1\n---\n# c\n---\nb: 2\n").unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!((docs[0].index, docs[0].start_line), (0, 3));
    assert_eq!((docs[1].index, docs[1].start_line), (1, 7));
}

#[test]
fn invalid_utf8_names_line_and_column() {
    let mut bytes = b"a: 1\nb: h\xc3\xa9llo\xff\n".to_vec();
    match parse_bytes(&bytes) {
        Err(ManifestError::Syntax { line, column, message }) => {
            assert_eq!((line, column), (2, 9));
            assert!(message.contains("UTF-8"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // A byte-order mark is fine.
    bytes = b"\xef\xbb\xbfa: 1\n".to_vec();
    assert_eq!(parse_bytes(&bytes).unwrap()[0].value["a"], 1);
}

#[test]
fn line_of_falls_back_to_parents() {
    let docs = parse_documents(&job("  image: busybox\n  env:\n    - name: A\n    - name: B\n")).unwrap();
    let d = &docs[0];
    assert_eq!(d.line_of("spec"), Some(5));
    assert_eq!(d.line_of("spec.env"), Some(7));
    assert_eq!(d.line_of("spec.env[1]"), Some(9));
    assert_eq!(d.line_of("spec.env[1].name"), Some(9));
    assert_eq!(d.line_of("spec.env[1].value"), Some(9));
    assert_eq!(d.line_of("spec.env[7].name"), Some(7));
    assert_eq!(d.line_of("spec.nothing.deeper[3]"), Some(5));
    assert_eq!(d.line_of("nothing"), Some(1));
    assert_eq!(d.line_of(""), Some(1));
    assert_eq!(d.line_of(r#"metadata["odd.key"].x"#), Some(3));
}

#[test]
fn validate_works_on_parsed_documents() {
    let docs = parse_documents(&format!("{VALID_QUEUE}---\n{VALID_JOB}")).unwrap();
    assert_eq!(validate(&docs[0]).unwrap().kind(), "Queue");
    assert_eq!(validate(&docs[1]).unwrap().kind(), "TrainingJob");
}

#[test]
fn display_formats() {
    let e =
        FieldError { document: 0, path: "spec.replicas".into(), line: Some(12), message: "must be at least 1".into() };
    assert_eq!(e.to_string(), "document 1, line 12: spec.replicas: must be at least 1");
    let e = FieldError { document: 2, path: String::new(), line: None, message: "bad".into() };
    assert_eq!(e.to_string(), "document 3: bad");
    let e = ManifestError::Syntax { line: 3, column: 4, message: "oops".into() };
    assert_eq!(e.to_string(), "line 3, column 4: oops");
}

// ---- hostile input -----------------------------------------------------------------------

/// Deterministic pseudo-random bytes (a 64-bit LCG).
fn lcg_bytes(len: usize, mut seed: u64, map: impl Fn(u8) -> u8) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            map((seed >> 33) as u8)
        })
        .collect()
}

/// Loads hostile bytes, which must fail with a line (or be all comment). Tests assert no
/// wall-clock time; the parse is linear (the depth and node caps bound the work), and a
/// hang or a stack overflow would fail the test run itself.
fn assert_error_with_line(bytes: &[u8]) -> ManifestError {
    let result = load(bytes);
    match result {
        Err(e @ ManifestError::Syntax { .. }) => e,
        // One long line that starts a comment.
        Err(ManifestError::Empty) if bytes[0] == b'#' => ManifestError::Empty,
        Err(ManifestError::Invalid(errors)) => {
            assert!(errors.iter().all(|e| e.line.is_some()), "{errors:?}");
            ManifestError::Invalid(errors)
        }
        other => panic!("expected an error with a line, got {other:?}"),
    }
}

#[test]
fn random_bytes_fail_with_a_position() {
    for seed in [1, 2, 3] {
        let bytes = lcg_bytes(4 << 20, seed, |b| b);
        let e = assert_error_with_line(&bytes);
        assert!(matches!(e, ManifestError::Syntax { .. }));
    }
}

#[test]
fn random_printable_ascii_fails_with_a_line() {
    for seed in [1, 2, 3] {
        let bytes = lcg_bytes(4 << 20, seed, |b| b' ' + b % 95);
        assert_error_with_line(&bytes);
    }
}

#[test]
fn random_yaml_like_text_fails_with_a_line() {
    const ALPHABET: &[u8] = b"ab: -[]{},&*!|>'\"#%@`?\n\n\t  01.~";
    for seed in [1, 2, 3, 4] {
        let bytes = lcg_bytes(4 << 20, seed, |b| ALPHABET[b as usize % ALPHABET.len()]);
        assert_error_with_line(&bytes);
    }
}

#[test]
fn deeply_nested_brackets_fail_with_a_position() {
    for text in
        ["[".repeat(100_000), "{".repeat(100_000), "a: ".to_string() + &"[{".repeat(50_000), "- ".repeat(100_000)]
    {
        let (line, column, message) = syntax(&text);
        assert_eq!(line, 1);
        assert!(column > 1);
        assert!(message.contains("nested deeper than 64"), "{message}");
    }
    // Block nesting, one level per line.
    let text: String = (0..100_000).map(|i| format!("{}- \n", " ".repeat(i % 200))).collect();
    let _ = parse_documents(&text);
    let text: String = (0..10_000).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
    let (line, _, message) = syntax(&text);
    assert_eq!(line, 65);
    assert!(message.contains("nested deeper than 64"), "{message}");
}

#[test]
fn node_limit_applies_without_aliases() {
    // 1.1 M scalars: over the node limit. (yaml-rust2 alone needs about a second for this in
    // a debug build, so no timing is asserted.)
    let text = format!("[{}]", "1,".repeat(1_100_000));
    let (line, _, message) = syntax(&text);
    assert_eq!(line, 1);
    assert!(message.contains("more than 1000000 nodes"), "{message}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        let _ = parse_documents(&text);
        let _ = load(text.as_bytes());
    }

    #[test]
    fn yaml_like_strings_never_panic(text in "[a-z0-9:\\-\\[\\]{},&*!|>'\"#? \n\t.~<]{0,200}") {
        let _ = parse_documents(&text);
        let _ = load(text.as_bytes());
    }

    #[test]
    fn mutated_manifests_never_panic(pos in 0usize..2000, insert in "[\\[\\]{}:\\-\n \t\"'&*!#|>]{1,4}") {
        let mut text = VALID_JOB.to_string();
        let pos = pos % text.len();
        let pos = (0..=pos).rev().find(|&p| text.is_char_boundary(p)).unwrap_or(0);
        text.insert_str(pos, &insert);
        let _ = load(text.as_bytes());
    }
}

#[test]
fn max_constants_are_public() {
    assert_eq!(manifest::MAX_DEPTH, 64);
    assert_eq!(manifest::MAX_NODES, 1_000_000);
}

/// The schema's `pattern` and length bounds are checked client-side, as the API server
/// checks them (`spec.env[i].name` must look like a shell variable name).
#[test]
fn env_name_pattern_and_bounds() {
    let text = "apiVersion: capstan.dev/v1alpha1\nkind: TrainingJob\nmetadata:\n  name: j\nspec:\n  image: x\n  env:\n    - name: OK_1\n    - name: 1BAD\n";
    let errors = match load(text.as_bytes()) {
        Err(ManifestError::Invalid(e)) => e,
        other => panic!("expected field errors, got {other:?}"),
    };
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "spec.env[1].name");
    assert_eq!(errors[0].line, Some(9));
    assert!(errors[0].message.contains("pattern"), "{}", errors[0].message);

    let long = format!("apiVersion: capstan.dev/v1alpha1\nkind: Queue\nmetadata:\n  name: q\nspec:\n  quotas:\n    - product: {}\n      nominal: 1\n", "p".repeat(129));
    let errors = match load(long.as_bytes()) {
        Err(ManifestError::Invalid(e)) => e,
        other => panic!("expected field errors, got {other:?}"),
    };
    assert_eq!(errors[0].path, "spec.quotas[0].product");
    assert!(errors[0].message.contains("at most 128"), "{}", errors[0].message);
}
