//! Harness of the Kubernetes suites (`tests/kube_*.rs`), which run against the real control
//! plane of tests/cluster/ (etcd, kube-apiserver 1.34, kube-controller-manager, kwok nodes).
//!
//! - [`kubeconfig`] finds the cluster (`$CAPSTAN_TEST_KUBECONFIG`, written by
//!   `tests/cluster/up.sh`) and panics, never skips, when it is not set; [`tool`] finds the
//!   kubectl and helm that script puts next to it.
//! - [`run_tool`], [`kubectl`], [`kubectl_with`], [`kubectl_ok`] and [`get_json`] run kubectl
//!   (or helm) as the cluster's admin or as another kubeconfig.
//! - [`install_crds`], [`chart_docs`], [`apply_docs`], [`write_impersonating`] and [`can_i`]
//!   install the CRDs and the Helm chart's RBAC, and make kubeconfigs that impersonate the
//!   chart's ServiceAccounts (so a suite passing proves the chart's RBAC sufficient).
//! - [`create_namespace`] / [`delete_namespace`] give each test its own namespace;
//!   [`KubeEnv`] bundles one with the processes a test starts and cleans both up on drop;
//!   [`model_deployment_env`] is the ModelDeployment suites' whole setup.
//! - [`spawn_controller`], [`spawn_server`] and [`serve_model`] start `capstan controller`,
//!   `capstan server --kubernetes` and `capstan serve` as child processes; [`Kill`] kills a
//!   child on drop.
//! - [`wait_for`] polls (bounded) until a value shows, failing with what it saw.
//!
//! Tests never assert wall-clock times: every wait is bounded and fails with what it saw.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{capstan_bin, free_port, unique_name, workspace_root};

/// Namespace of the Helm chart's ServiceAccounts (and of the controllers' leader-election Leases).
pub const CHART_NS: &str = "capstan-system";
/// The chart's controller ServiceAccount, as a user name to impersonate.
pub const CONTROLLER_SA: &str = "system:serviceaccount:capstan-system:capstan-controller";
/// The chart's agent ServiceAccount, as a user name to impersonate.
pub const AGENT_SA: &str = "system:serviceaccount:capstan-system:capstan-agent";
/// The chart's server ServiceAccount, as a user name to impersonate.
pub const SERVER_SA: &str = "system:serviceaccount:capstan-system:capstan-server";

/// The test cluster's admin kubeconfig: `$CAPSTAN_TEST_KUBECONFIG`. Panics with how to start
/// the control plane when it is not set (the suites fail, never skip, without it).
pub fn kubeconfig() -> PathBuf {
    let k = std::env::var("CAPSTAN_TEST_KUBECONFIG").unwrap_or_else(|_| {
        panic!("CAPSTAN_TEST_KUBECONFIG is not set: start the test control plane with `eval \"$(tests/cluster/up.sh DIR)\"` and export CAPSTAN_TEST_KUBECONFIG=$KUBECONFIG (scripts/test.sh does this)")
    });
    PathBuf::from(k)
}

/// kubectl or helm, next to the kubeconfig (tests/cluster/up.sh writes them there); panics
/// when missing.
pub fn tool(name: &str) -> PathBuf {
    let bin = kubeconfig().parent().unwrap().join("bin").join(name);
    assert!(bin.exists(), "{} is missing: tests/cluster/up.sh writes it", bin.display());
    bin
}

/// Runs [`tool`] `name` with `KUBECONFIG=kubeconfig` and `args`, feeding it `stdin` (else
/// an empty stdin); its captured output.
pub fn run_tool(name: &str, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(tool(name));
    cmd.env("KUBECONFIG", kubeconfig).args(args);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

/// Standard output then standard error of a command, as text (for failure messages).
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    s.lines().rev().take(n).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// The last `n` lines of the file at `path` ("" when unreadable).
pub fn file_tail(path: &Path, n: usize) -> String {
    tail(&std::fs::read_to_string(path).unwrap_or_default(), n)
}

/// kubectl as the cluster's admin; its output whatever the exit status.
pub fn kubectl(args: &[&str]) -> Output {
    run_tool("kubectl", &kubeconfig(), args, None)
}

/// kubectl with another kubeconfig (e.g. one of [`write_impersonating`]) and `stdin`.
pub fn kubectl_with(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    run_tool("kubectl", kubeconfig, args, stdin)
}

/// kubectl as the admin, which must succeed (else panics with its output); its stdout.
#[track_caller]
pub fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> String {
    let o = run_tool("kubectl", &kubeconfig(), args, stdin);
    assert!(o.status.success(), "kubectl {args:?} failed:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `kubectl get ARGS -o json` as the admin: None when it fails or does not print JSON.
pub fn get_json(args: &[&str]) -> Option<Value> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    let o = kubectl(&a);
    if !o.status.success() {
        return None;
    }
    serde_json::from_slice(&o.stdout).ok()
}

/// Polls `f` every `poll` until it gives Some, or panics after `timeout` with `what` and
/// the last state `describe` shows. (A guard against hanging, not a timing assertion.)
#[track_caller]
pub fn wait_for_every<T>(
    poll: Duration,
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}\n{}", describe());
        }
        std::thread::sleep(poll);
    }
}

/// [`wait_for_every`] polling every 200 ms ([`crate::POLL`]).
#[track_caller]
pub fn wait_for<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>, describe: impl Fn() -> String) -> T {
    wait_for_every(crate::POLL, timeout, what, f, describe)
}

/// Applies the checked-in CRDs (helm/capstan/crds, server-side) as the admin and waits until
/// each of `established` (e.g. `trainingjobs.capstan.dev`) is Established, one
/// `kubectl wait` for all of them.
#[track_caller]
pub fn install_crds(established: &[&str]) {
    let crds = workspace_root().join("helm/capstan/crds");
    kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", crds.to_str().unwrap()], None);
    let names: Vec<String> = established.iter().map(|c| format!("crd/{c}")).collect();
    let mut args = vec!["wait", "--for", "condition=established", "--timeout=60s"];
    args.extend(names.iter().map(String::as_str));
    kubectl_ok(&args, None);
}

/// Which documents of the chart [`chart_docs`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartDocs {
    /// Every document but the Deployments and DaemonSets (they would need a real image and
    /// kubelet).
    WithoutWorkloads,
    /// The ServiceAccounts, ClusterRoles, Roles and RoleBindings only.
    RbacOnly,
}

/// Creates the chart's namespace ([`CHART_NS`]; already there is fine) and renders the chart
/// (`helm template capstan helm/capstan --namespace capstan-system --show-only T...` for each
/// of `templates`, e.g. `templates/controller.yaml`), keeping the documents `keep` says.
#[track_caller]
pub fn chart_docs(templates: &[&str], keep: ChartDocs) -> Vec<String> {
    let _ = kubectl(&["create", "namespace", CHART_NS]);
    let chart = workspace_root().join("helm/capstan");
    let mut args = vec!["template", "capstan", chart.to_str().unwrap(), "--namespace", CHART_NS];
    for t in templates {
        args.extend(["--show-only", t]);
    }
    let o = run_tool("helm", &kubeconfig(), &args, None);
    assert!(o.status.success(), "helm template failed:\n{}", text(&o));
    let rbac = ["kind: ServiceAccount", "kind: ClusterRole", "kind: Role", "kind: RoleBinding"];
    std::str::from_utf8(&o.stdout)
        .unwrap()
        .split("\n---")
        .filter(|d| match keep {
            ChartDocs::WithoutWorkloads => !d.contains("kind: Deployment") && !d.contains("kind: DaemonSet"),
            ChartDocs::RbacOnly => d.lines().any(|l| rbac.iter().any(|k| l.starts_with(k))),
        })
        .map(str::to_string)
        .collect()
}

/// `kubectl apply -f -` of the documents as the admin (must succeed).
#[track_caller]
pub fn apply_docs(docs: &[String]) {
    kubectl_ok(&["apply", "-f", "-"], Some(&docs.join("\n---\n")));
}

/// Writes at `path` the admin kubeconfig made to impersonate `user` (e.g. [`CONTROLLER_SA`]).
#[track_caller]
pub fn write_impersonating(path: &Path, user: &str) {
    let kc = std::fs::read_to_string(kubeconfig()).unwrap();
    assert!(kc.contains("    token: "), "unexpected kubeconfig layout:\n{kc}");
    std::fs::write(path, kc.replace("    token: ", &format!("    as: {user}\n    token: "))).unwrap();
}

/// `kubectl auth can-i VERB RESOURCE -A [--subresource=SUB]` with `kubeconfig`: whether it
/// says yes.
pub fn can_i(kubeconfig: &Path, verb: &str, resource: &str, subresource: Option<&str>) -> bool {
    let mut args = vec!["auth", "can-i", verb, resource, "-A"];
    let sub = subresource.map(|s| format!("--subresource={s}"));
    if let Some(s) = &sub {
        args.push(s);
    }
    let o = kubectl_with(kubeconfig, &args, None);
    String::from_utf8_lossy(&o.stdout).trim() == "yes"
}

/// A fresh namespace named after `prefix` ([`unique_name`]), created as the admin.
#[track_caller]
pub fn create_namespace(prefix: &str) -> String {
    let ns = unique_name(prefix);
    kubectl_ok(&["create", "namespace", &ns], None);
    ns
}

/// Deletes the namespace and waits (up to 90 s) until it is gone; errors are ignored (for
/// drops). Run it while the test's controller still runs: it removes its finalizers.
pub fn delete_namespace(ns: &str) {
    let _ = kubectl(&["delete", "namespace", ns, "--wait=true", "--timeout=90s"]);
}

/// A child process killed (and waited for) on drop.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `capstan controller --kubeconfig KC` watching namespace `ns`, leader-elected on the
/// Lease `lease-<ns>` of [`CHART_NS`] with identity `<ns>-<identity>`, its metrics on a free
/// port, `extra` arguments after those; stdout and stderr go to `log`.
pub fn spawn_controller(kubeconfig: &Path, ns: &str, identity: &str, extra: &[&str], log: File) -> Child {
    Command::new(capstan_bin())
        .arg("controller")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--watch-namespace", ns])
        .args(["--leader-election-namespace", CHART_NS])
        .args(["--leader-election-lease", &format!("lease-{ns}")])
        .args(["--identity", &format!("{ns}-{identity}")])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(extra)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn capstan controller")
}

/// Starts `capstan server --kubernetes --kubeconfig KC` on a free loopback port with its
/// data in `data_dir` and its output in `log` (truncated), and waits (60 s at most) for
/// `/healthz`; retries another port when it lost the port race (5 tries). Returns the child
/// and the server's URL; panics with its log when it exits or never turns healthy.
pub fn spawn_server(kubeconfig: &Path, data_dir: &Path, log: &Path) -> (Child, String) {
    let read_log = || std::fs::read_to_string(log).unwrap_or_default();
    for _try in 0..5 {
        let port = free_port();
        let f = File::create(log).unwrap();
        let mut child = Command::new(capstan_bin())
            .args(["server", "--kubernetes", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data_dir)
            .env_remove("KUBECONFIG")
            .env_remove("CAPSTAN_API_TOKEN")
            .env_remove("CAPSTAN_DATABASE_URL")
            .env_remove("CAPSTAN_ARTIFACTS_DESTINATION")
            .env_remove("CAPSTAN_LISTEN")
            .env_remove("CAPSTAN_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn capstan server");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::new();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let log = read_log();
                if log.contains("Address already in use") {
                    break;
                }
                panic!("capstan server --kubernetes exited ({status}):\n{log}");
            }
            if http.get(format!("{url}/healthz")).send().is_ok_and(|r| r.status().as_u16() == 200) {
                return (child, url);
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("capstan server --kubernetes did not become healthy:\n{}", read_log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("capstan server could not bind a port in 5 tries:\n{}", read_log());
}

/// Builds the ONNX classifier of tests/e2e/python/onnx_models.py at `path` (needs python3
/// with onnx, which scripts/install-deps.sh installs; panics saying so otherwise).
#[track_caller]
pub fn build_onnx_classifier(path: &Path) {
    let out = Command::new("python3")
        .arg(workspace_root().join("tests/e2e/python/onnx_models.py"))
        .args(["classifier", path.to_str().unwrap()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "building the ONNX model needs python3 with onnx (scripts/install-deps.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `capstan serve --model MODEL --name iris --listen ip:port` (output in `log`) and
/// waits (60 s at most, `what` naming the wait) until `/v2/health/ready` answers 2xx, each
/// probe bounded by `probe_timeout` when given. Killed when the returned [`Kill`] drops.
#[track_caller]
pub fn serve_model(model: &Path, ip: &str, port: u16, log: &Path, what: &str, probe_timeout: Option<Duration>) -> Kill {
    let f = File::create(log).unwrap();
    let s = Kill(
        Command::new(capstan_bin())
            .args(["serve", "--model", model.to_str().unwrap(), "--name", "iris"])
            .args(["--listen", &format!("{ip}:{port}")])
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("spawn capstan serve"),
    );
    let mut http = reqwest::blocking::Client::builder();
    if let Some(t) = probe_timeout {
        http = http.timeout(t);
    }
    let http = http.build().unwrap();
    wait_for(
        Duration::from_secs(60),
        what,
        || {
            http.get(format!("http://{ip}:{port}/v2/health/ready"))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        },
        || std::fs::read_to_string(log).unwrap_or_default(),
    );
    s
}

/// Plays the kubelet for the live, Running pods of ModelDeployment `iris` in `ns`: each gets
/// the podIP `ip_of(pod)` says (where a real server listens) and the Ready condition (kwok's
/// own Ready can be withdrawn by the node lifecycle controller when its heartbeats lapse on
/// a loaded machine). Patch errors are ignored (the next pass retries).
pub fn point_pods_at(ns: &str, ip_of: impl Fn(&Value) -> &'static str) {
    let Some(pods) = get_json(&["pods", "-n", ns, "-l", "capstan.dev/model-deployment=iris"]) else { return };
    for p in pods["items"].as_array().cloned().unwrap_or_default() {
        let ip = ip_of(&p);
        let ready = p["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        if !p["metadata"]["deletionTimestamp"].is_null()
            || p["status"]["phase"] != "Running"
            || (p["status"]["podIP"] == ip && ready)
        {
            continue;
        }
        let name = p["metadata"]["name"].as_str().unwrap();
        let status = |kind: &str, patch: &str| {
            let _ = kubectl(&[
                "patch",
                "pod",
                name,
                "-n",
                ns,
                "--subresource=status",
                &format!("--type={kind}"),
                "-p",
                patch,
            ]);
        };
        if p["status"]["podIP"] != ip {
            status("merge", &format!(r#"{{"status":{{"podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}]}}}}"#));
        }
        if !ready {
            status("strategic", r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#);
        }
    }
}

/// One test's namespace on the cluster, with a scratch directory for logs and data, the
/// processes it started (`capstan server --kubernetes`, `capstan controller`) and the
/// cluster-scoped objects it made. On drop: the namespace is deleted (and waited for) while
/// the processes still run (the controller removes its finalizers), then the cluster-scoped
/// objects (without waiting), then the processes are killed.
pub struct KubeEnv {
    /// The namespace (a [`unique_name`] of the prefix).
    pub ns: String,
    dir: tempfile::TempDir,
    children: Vec<Child>,
    cluster_scoped: Vec<(String, String)>,
}

impl KubeEnv {
    /// Creates a namespace named after `prefix`, and a scratch directory named after
    /// `dir_prefix` (e.g. `capstan-kp-`).
    #[track_caller]
    pub fn new(prefix: &str, dir_prefix: &str) -> KubeEnv {
        let ns = create_namespace(prefix);
        let dir = tempfile::Builder::new().prefix(dir_prefix).tempdir().unwrap();
        KubeEnv { ns, dir, children: Vec::new(), cluster_scoped: Vec::new() }
    }

    /// The scratch directory (removed with the environment).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `kubectl apply -n NS -f -` of `yaml` as the admin (must succeed).
    #[track_caller]
    pub fn apply(&self, yaml: &str) {
        kubectl_ok(&["apply", "-n", &self.ns, "-f", "-"], Some(yaml));
    }

    /// Where the process `what` (`server`, `controller`) writes its output.
    pub fn log_path(&self, what: &str) -> PathBuf {
        self.dir.path().join(format!("{what}.log"))
    }

    /// Everything the process `what` wrote ("" when it wrote nothing).
    pub fn log(&self, what: &str) -> String {
        std::fs::read_to_string(self.log_path(what)).unwrap_or_default()
    }

    /// [`spawn_server`] with `kubeconfig`, its data in the scratch directory and its output
    /// in `log("server")`; its URL. Killed on drop.
    pub fn start_server(&mut self, kubeconfig: &Path) -> String {
        let data = self.dir.path().join("server-data");
        let (child, url) = spawn_server(kubeconfig, &data, &self.log_path("server"));
        self.children.push(child);
        url
    }

    /// [`spawn_controller`] for this namespace with `kubeconfig`, identity `<ns>-0` and the
    /// `extra` arguments, its output in `log("controller")`. Killed on drop.
    pub fn start_controller(&mut self, kubeconfig: &Path, extra: &[&str]) {
        let log = File::create(self.log_path("controller")).unwrap();
        let child = spawn_controller(kubeconfig, &self.ns, "0", extra, log);
        self.children.push(child);
    }

    /// `kubectl get KINDS -n NS -o wide` (its stdout) and the last 30 lines of the
    /// controller's log, for failure messages.
    pub fn describe_wide(&self, kinds: &str) -> String {
        let o = kubectl(&["get", kinds, "-n", &self.ns, "-o", "wide"]);
        format!(
            "{}\ncontroller log (tail):\n{}",
            String::from_utf8_lossy(&o.stdout),
            file_tail(&self.log_path("controller"), 30)
        )
    }

    /// Deletes the cluster-scoped object `kind`/`name` (e.g. a Queue) on drop.
    pub fn delete_on_drop(&mut self, kind: &str, name: &str) {
        self.cluster_scoped.push((kind.to_string(), name.to_string()));
    }
}

impl Drop for KubeEnv {
    fn drop(&mut self) {
        // Delete the namespace while the controller runs (it removes its finalizers).
        delete_namespace(&self.ns);
        for (kind, name) in &self.cluster_scoped {
            let _ = kubectl(&["delete", kind, name, "--wait=false"]);
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The environment of the ModelDeployment suites: the CRDs (waiting for
/// `modeldeployments.capstan.dev`), the chart's controller RBAC, a kubeconfig impersonating
/// the controller's ServiceAccount (`capstan-kubeconfig-<suite>-<pid>` in the temp dir), and
/// a namespace named after `prefix` with a `capstan controller` watching it.
#[track_caller]
pub fn model_deployment_env(suite: &str, prefix: &str) -> KubeEnv {
    install_crds(&["modeldeployments.capstan.dev"]);
    apply_docs(&chart_docs(&["templates/controller.yaml"], ChartDocs::WithoutWorkloads));
    let kc = std::env::temp_dir().join(format!("capstan-kubeconfig-{suite}-{}", std::process::id()));
    write_impersonating(&kc, CONTROLLER_SA);
    let mut env = KubeEnv::new(prefix, &format!("capstan-{suite}-"));
    env.start_controller(&kc, &[]);
    env
}
