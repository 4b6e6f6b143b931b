//! Helpers of the git-triggered pipeline suites (tests/pipelines.rs, tests/kube_pipelines.rs):
//! GitHub's own example payloads, signatures made by an implementation independent of the
//! server's, and the real git CLI.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// GitHub's examples of one event (`push`, `ping`...), from the npm package
/// @octokit/webhooks-examples in `$CAPSTAN_WEBHOOK_EXAMPLES`. Panics, never skips, with how to
/// install it when that is not set.
pub fn github_examples(event: &str) -> Vec<Value> {
    let dir = std::env::var("CAPSTAN_WEBHOOK_EXAMPLES").unwrap_or_else(|_| {
        panic!(
            "CAPSTAN_WEBHOOK_EXAMPLES is not set: run `eval \"$(scripts/webhook-examples-setup.sh)\"` (installs npm \
             @octokit/webhooks-examples into the cache)"
        )
    });
    let path = Path::new(&dir).join("index.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let all: Vec<Value> = serde_json::from_str(&text).expect("index.json is JSON");
    let entry = all.iter().find(|e| e["name"] == event).unwrap_or_else(|| panic!("no {event} examples"));
    entry["examples"].as_array().expect("examples").clone()
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` keyed by `secret`, by Python's hmac module (an
/// implementation independent of the server's).
pub fn python_hmac_sha256(secret: &str, body: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, body).unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            "import hmac, hashlib, sys; print('sha256=' + hmac.new(sys.argv[1].encode(), open(sys.argv[2], 'rb').read(), hashlib.sha256).hexdigest())",
            secret,
            file.to_str().unwrap(),
        ])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "python3 hmac failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs `git ARGS` in `dir` as the author `user_name` <ada@example.com> (`main` as the
/// default branch), which must succeed (else panics with its output); its stdout, trimmed.
#[track_caller]
pub fn git_as(user_name: &str, dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .current_dir(dir)
        .arg("-c")
        .arg(format!("user.name={user_name}"))
        .args(["-c", "user.email=ada@example.com", "-c", "init.defaultBranch=main"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        o.status.success(),
        "git {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}
