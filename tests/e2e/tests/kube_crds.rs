//! The generated CRDs against a real kube-apiserver (tests/cluster/up.sh: etcd, kube-apiserver
//! 1.34 and kwok built from Go modules): they install, the API server enforces their schema
//! and CEL rules with messages naming the fields, `kubectl explain` shows the field docs, and
//! the printer columns show. Fails (never skips) without the control plane.
//!
//!     eval "$(tests/cluster/up.sh /tmp/capstan-cluster)"   # sets KUBECONFIG
//!     CAPSTAN_TEST_KUBECONFIG=$KUBECONFIG cargo test -p capstan-e2e --test kube_crds

use std::process::Output;
use std::sync::Once;

use capstan_e2e::kube::{kubeconfig, kubectl_with, text};
use capstan_e2e::workspace_root;

fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    kubectl_with(&kubeconfig(), args, stdin)
}

static CRDS: Once = Once::new();

/// Install the checked-in CRDs once and wait until they are served.
fn install_crds() {
    CRDS.call_once(|| {
        let dir = workspace_root().join("helm/capstan/crds");
        let o = kubectl(&["apply", "--server-side", "--force-conflicts", "-f", dir.to_str().unwrap()], None);
        assert!(o.status.success(), "the API server refused the CRDs:\n{}", text(&o));
        let o = kubectl(
            &[
                "wait",
                "--for",
                "condition=established",
                "--timeout=60s",
                "crd/trainingjobs.capstan.dev",
                "crd/queues.capstan.dev",
            ],
            None,
        );
        assert!(o.status.success(), "{}", text(&o));
        // Discovery of the new group can lag the Established condition a moment.
        for _ in 0..50 {
            if kubectl(&["get", "tj", "-A"], None).status.success() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        panic!("trainingjobs never appeared in discovery");
    });
}

fn manifest(name: &str, spec: &str) -> String {
    format!("apiVersion: capstan.dev/v1alpha1\nkind: TrainingJob\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n{spec}")
}

#[test]
fn crds_install_and_the_examples_apply() {
    install_crds();
    let root = workspace_root();
    for example in ["hello-distributed.yaml", "torchrun-ddp.yaml", "deepspeed.yaml", "lora-finetune.yaml", "queue.yaml"]
    {
        let path = root.join("examples").join(example);
        let o = kubectl(&["apply", "--dry-run=server", "-f", path.to_str().unwrap()], None);
        assert!(o.status.success(), "{example} refused by the API server:\n{}", text(&o));
    }
    let o = kubectl(&["apply", "-f", root.join("examples/hello-distributed.yaml").to_str().unwrap()], None);
    assert!(o.status.success(), "{}", text(&o));
    let o = kubectl(&["get", "tj", "hello-distributed"], None);
    let out = text(&o);
    for column in ["QUEUE", "PHASE", "REPLICAS", "GPUS", "RESTARTS", "AGE"] {
        assert!(out.contains(column), "printer column {column} missing:\n{out}");
    }
    let o = kubectl(&["delete", "tj", "hello-distributed", "--wait=false"], None);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn the_api_server_enforces_schema_and_cel_rules_naming_fields() {
    install_crds();
    let cases: &[(&str, &str, &[&str])] = &[
        ("bad-replicas", "  image: x\n  replicas: 0\n", &["spec.replicas", "greater than or equal to 1"]),
        ("bad-env", "  image: x\n  env:\n    - name: MASTER_ADDR\n      value: a\n", &["spec.env", "reserved"]),
        ("bad-env-name", "  image: x\n  env:\n    - name: 1BAD\n", &["spec.env[0].name"]),
        ("bad-priority", "  image: x\n  priority: 1\n  priorityClassName: high\n", &["spec.priority", "not both"]),
        ("bad-image", "  replicas: 1\n", &["spec.image", "image is required"]),
        ("bad-type", "  image: x\n  replicas: two\n", &["spec.replicas"]),
        ("bad-field", "  image: x\n  replicaz: 2\n", &["replicaz"]),
    ];
    for (name, spec, needles) in cases {
        let o = kubectl(&["apply", "--validate=strict", "-f", "-"], Some(&manifest(name, spec)));
        let out = text(&o);
        assert!(!o.status.success(), "{name} was accepted:\n{out}");
        for n in *needles {
            assert!(out.contains(n), "{name}: the error does not name {n:?}:\n{out}");
        }
    }
    let q = "apiVersion: capstan.dev/v1alpha1\nkind: Queue\nmetadata:\n  name: dup\nspec:\n  quotas:\n    - product: a\n      nominal: 1\n    - product: a\n      nominal: 2\n      lendingLimit: 5\n";
    let o = kubectl(&["apply", "-f", "-"], Some(q));
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("each product may appear once") && out.contains("lendingLimit"), "{out}");
}

#[test]
fn kubectl_explain_shows_the_field_docs() {
    install_crds();
    // The API server publishes a new CRD's OpenAPI a little after it is Established.
    let explain = |field: &str| {
        let mut last = String::new();
        for _ in 0..150 {
            let o = kubectl(&["explain", field], None);
            last = text(&o);
            if o.status.success() {
                return last;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        panic!("kubectl explain {field} never succeeded:\n{last}");
    };
    let out = explain("trainingjob.spec.runPolicy.backoffLimit");
    // kubectl re-wraps the text: compare with whitespace folded.
    let folded = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        folded.contains(
            "Gang restarts allowed before the job is marked Failed. Preemptions and GPU faults do not count."
        ),
        "explain lacks the doc comment:\n{out}"
    );
    let folded = explain("queue.spec.quotas.lendingLimit").split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(folded.contains("Most of its nominal GPUs it lends to the cohort."), "{folded}");
}
