//! Python helpers of the serving suites (tests/serving.rs, tests/serving_image.rs): the
//! scripts of tests/e2e/python/ run with the real mlflow, onnx, onnxruntime, tritonclient and
//! kserve packages.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::{run_bounded, workspace_root};

/// Path of a script of tests/e2e/python/ (e.g. `onnx_models.py`).
pub fn python_script(name: &str) -> PathBuf {
    workspace_root().join("tests/e2e/python").join(name)
}

/// Panics, never skips, unless python3 imports mlflow, onnx, onnxruntime, tritonclient.http
/// and kserve (scripts/install-deps.sh installs them).
pub fn require_python_packages() {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import mlflow, onnx, onnxruntime, tritonclient.http, kserve")
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "the serving tests need python3 with mlflow-skinny, onnx, onnxruntime, tritonclient[http] and kserve \
         (run scripts/install-deps.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `python3 ARGS` with the extra environment `env` (bounded to 180 s), which must exit
/// 0; the last line of its stdout that starts with `{`, parsed as JSON. `what` names it in
/// failure messages.
pub fn python(args: &[&str], env: &[(&str, &str)], what: &str) -> Value {
    let mut cmd = Command::new("python3");
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run_bounded(cmd, Duration::from_secs(180), what);
    assert_eq!(out.code, 0, "{what} failed:\nstdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    let last = out
        .stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("{what} printed no JSON:\nstdout:\n{}\nstderr:\n{}", out.stdout, out.stderr));
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{what}: {e}: {last}"))
}
