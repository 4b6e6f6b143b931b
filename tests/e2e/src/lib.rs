//! Harness of the end-to-end suites: starts the real `capstan` binary (`capstan up`) in a
//! temporary data directory on a free loopback port and drives it as a user would, through
//! its CLI and its HTTP API.
//!
//! - [`capstan_bin`] finds the binary (`$CAPSTAN_BIN`, else `<workspace>/target/debug/capstan`;
//!   build it with `cargo build -p capstan`).
//! - [`Capstan::start`] / [`Capstan::start_with_containers`] run `capstan up` and wait for
//!   `/healthz`; [`Capstan::stop`], [`Capstan::kill9`] and [`Capstan::restart`] take it down and
//!   bring it back on the same data directory; dropping it stops it (SIGTERM, then SIGKILL) and
//!   kills whatever replica it left behind.
//! - [`Capstan::cli`] runs `capstan --server URL ...`; [`Capstan::job`] and
//!   [`Capstan::wait_job`] read a TrainingJob's JSON and wait (bounded, polling every 200 ms)
//!   until a predicate holds, failing with the last state seen and the server's log.
//! - [`procs_with_env`] scans `/proc/*/environ` for live processes carrying environment
//!   variables (replicas carry `CAPSTAN_JOB_NAME` and `CAPSTAN_REPLICA_INDEX`).
//! - [`podman`] runs the podman CLI against the engine `scripts/podman-setup.sh` set up.
//!
//! Tests never assert wall-clock times: every wait is bounded and fails with what it saw.

pub mod kube;
pub mod python;
pub mod webhooks;

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// Poll interval of every wait.
pub const POLL: Duration = Duration::from_millis(200);
/// How long a job may take to reach a state a test waits for.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `capstan up` may take to answer `/healthz`.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one CLI invocation may take (unless a test says otherwise).
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// Environment variable the harness sets on `capstan up` (and so on every process replica,
/// which inherit its environment) to find and kill leftovers of one instance.
pub const INSTANCE_ENV: &str = "CAPSTAN_E2E_INSTANCE";

/// Root of the workspace.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// The `capstan` binary under test: `$CAPSTAN_BIN`, else `<workspace>/target/debug/capstan`
/// (or `$CARGO_TARGET_DIR/debug/capstan`). Panics with instructions when it is missing.
pub fn capstan_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CAPSTAN_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "CAPSTAN_BIN={} does not exist: build it with `cargo build -p capstan`", p.display());
        return p;
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|p| !p.is_empty()) {
        Some(t) => {
            let t = PathBuf::from(t);
            if t.is_absolute() {
                t
            } else {
                workspace_root().join(t)
            }
        }
        None => workspace_root().join("target"),
    };
    let p = target.join("debug").join("capstan");
    assert!(
        p.is_file(),
        "the capstan binary is missing at {}: run `cargo build -p capstan` first (or set CAPSTAN_BIN)",
        p.display()
    );
    p
}

/// A file of the workspace (e.g. `examples/hello-distributed.yaml`), read as text.
pub fn workspace_file(rel: &str) -> String {
    let p = workspace_root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// A name no other test (or earlier run) uses: `<prefix>-<pid>-<n>`, a valid DNS label.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{n}-{:x}", std::process::id(), nanos & 0xfff)
}

/// A free loopback port (bound then released: a later bind may race, [`Capstan`] retries).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0").local_addr().unwrap().port()
}

/// Outcome of one CLI invocation.
#[derive(Debug, Clone)]
pub struct CliOut {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliOut {
    /// Panics unless it exited 0.
    #[track_caller]
    pub fn ok(self) -> CliOut {
        assert_eq!(self.code, 0, "command failed:\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

/// Runs `cmd` with a bound on its duration (killed past `timeout`, which then panics),
/// capturing its output through files so that nothing blocks on a full pipe.
pub fn run_bounded(mut cmd: Command, timeout: Duration, what: &str) -> CliOut {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"));
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {what}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    CliOut {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&std::fs::read(&out_path).unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&std::fs::read(&err_path).unwrap_or_default()).into_owned(),
    }
}

/// The container engine the suite uses: `$CAPSTAN_DOCKER_SOCKET` (a Unix socket path or a
/// `unix://` URL). Panics, never skips, when it is not set.
pub fn docker_socket_or_fail() -> String {
    match std::env::var("CAPSTAN_DOCKER_SOCKET") {
        Ok(s) if !s.trim().is_empty() => s,
        _ => panic!(
            "CAPSTAN_DOCKER_SOCKET is not set: container tests need a Podman Docker-API service. Run\n  \
             eval \"$(bash scripts/podman-setup.sh /tmp/capstan-podman)\"\nin this shell, then the tests again."
        ),
    }
}

/// Runs the podman CLI as a client of the very service `capstan up` is given
/// (`podman --url unix://$CAPSTAN_DOCKER_SOCKET ...`), so that it sees the same containers
/// whatever storage that service uses.
pub fn podman(args: &[&str]) -> CliOut {
    let socket = docker_socket_or_fail();
    let url = if socket.contains("://") { socket.clone() } else { format!("unix://{socket}") };
    let mut cmd = Command::new("podman");
    cmd.arg("--url").arg(&url).args(args);
    run_bounded(cmd, Duration::from_secs(60), &format!("podman --url {url} {}", args.join(" ")))
}

/// IDs of the *running* containers labelled with this job uid.
pub fn running_containers_of(uid: &str) -> Vec<String> {
    let out = podman(&["ps", "--filter", &format!("label=capstan.dev/job-uid={uid}"), "--format", "{{.ID}}"]);
    assert_eq!(out.code, 0, "podman ps failed: {}", out.stderr);
    out.stdout.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

/// IDs of every container (running or exited) labelled with this job uid.
pub fn all_containers_of(uid: &str) -> Vec<String> {
    let out = podman(&["ps", "-a", "--filter", &format!("label=capstan.dev/job-uid={uid}"), "--format", "{{.ID}}"]);
    assert_eq!(out.code, 0, "podman ps -a failed: {}", out.stderr);
    out.stdout.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].split_whitespace().next()?.chars().next()
}

/// Environment of a process, as (name, value) pairs (empty when unreadable).
pub fn proc_env(pid: u32) -> Vec<(String, String)> {
    let Ok(bytes) = std::fs::read(format!("/proc/{pid}/environ")) else { return Vec::new() };
    bytes
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Live (not zombie) processes whose environment holds every one of `pairs`.
pub fn procs_with_env(pairs: &[(&str, &str)]) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            let env = proc_env(pid);
            !env.is_empty() && pairs.iter().all(|(k, v)| env.iter().any(|(ek, ev)| ek == k && ev == v))
        })
        .filter(|&pid| proc_state(pid).is_some_and(|s| !matches!(s, 'Z' | 'X' | 'x')))
        .collect();
    pids.sort_unstable();
    pids
}

/// Live processes of the job (any replica): `CAPSTAN_JOB_NAME=<name>` in their environment.
pub fn job_procs(name: &str) -> Vec<u32> {
    procs_with_env(&[("CAPSTAN_JOB_NAME", name)])
}

/// `ps`-like lines for pids, for failure messages.
pub fn describe_procs(pids: &[u32]) -> String {
    pids.iter()
        .map(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let cmd: Vec<String> = cmd.split(|b| *b == 0).map(|s| String::from_utf8_lossy(s).into_owned()).collect();
            format!("  pid {p} [{}] {}", proc_state(*p).unwrap_or('?'), cmd.join(" ").trim())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits (bounded) until `cond` holds; panics with `what` and the message `last` returns.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool, last: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}\n{}", last());
        }
        std::thread::sleep(POLL);
    }
}

/// `status.phase` of a job's JSON ("" when absent).
pub fn phase(job: &Value) -> &str {
    job["status"]["phase"].as_str().unwrap_or("")
}

/// The condition of `type_` in a job's status.
pub fn condition<'a>(job: &'a Value, type_: &str) -> Option<&'a Value> {
    job["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

/// Options of `capstan up`.
#[derive(Debug, Clone, Default)]
struct Options {
    docker_socket: Option<String>,
    /// `--simulate-gpus` for the embedded agent.
    simulate_gpus: Option<String>,
}

/// One `capstan up` with its own data directory; it can be stopped and started again on
/// the same data directory. Dropping it stops it and kills replicas it left running.
pub struct Capstan {
    dir: tempfile::TempDir,
    data_dir: PathBuf,
    log_path: PathBuf,
    url: String,
    child: Option<Child>,
    opts: Options,
    instance: String,
    http: reqwest::blocking::Client,
    starts: u32,
    /// Uids of jobs seen, to remove their containers at the end.
    seen_uids: std::cell::RefCell<Vec<String>>,
}

impl Capstan {
    /// `capstan up` with only the process runtime (no container engine is passed; whatever
    /// the agent finds by default is not relied on).
    pub fn start() -> Capstan {
        Self::launch(Options::default())
    }

    /// `capstan up --docker-socket $CAPSTAN_DOCKER_SOCKET`; fails when it is not set.
    pub fn start_with_containers() -> Capstan {
        let socket = docker_socket_or_fail();
        Self::launch(Options { docker_socket: Some(socket), ..Options::default() })
    }

    /// `capstan up --simulate-gpus SPEC` with only the process runtime.
    pub fn start_with_gpus(spec: &str) -> Capstan {
        Self::launch(Options { simulate_gpus: Some(spec.to_string()), ..Options::default() })
    }

    fn launch(opts: Options) -> Capstan {
        capstan_bin(); // fail early and clearly when it is missing
        let dir = tempfile::Builder::new().prefix("capstan-e2e-").tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let log_path = dir.path().join("capstan-up.log");
        let instance = unique_name("e2e");
        let mut c = Capstan {
            dir,
            data_dir,
            log_path,
            url: String::new(),
            child: None,
            opts,
            instance,
            http: reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client"),
            starts: 0,
            seen_uids: Default::default(),
        };
        c.up();
        c
    }

    fn up(&mut self) {
        assert!(self.child.is_none(), "capstan up is already running");
        let bin = capstan_bin();
        for _try in 0..5 {
            self.starts += 1;
            let port = free_port();
            let mut log = File::options().create(true).append(true).open(&self.log_path).expect("log file");
            writeln!(log, "===== e2e harness: start #{} on 127.0.0.1:{port} =====", self.starts).unwrap();
            let log_err = log.try_clone().unwrap();
            let mut cmd = Command::new(&bin);
            cmd.arg("up")
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data-dir")
                .arg(&self.data_dir)
                .env(INSTANCE_ENV, &self.instance)
                .env_remove("CAPSTAN_SERVER")
                .env_remove("CAPSTAN_TOKEN")
                .env_remove("CAPSTAN_SIMULATE_GPUS")
                .env_remove("CAPSTAN_LISTEN")
                .env_remove("CAPSTAN_DATA_DIR")
                .env_remove("CAPSTAN_DATABASE_URL")
                .env_remove("CAPSTAN_ARTIFACTS_DESTINATION")
                .stdin(Stdio::null())
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(log_err));
            if let Some(g) = &self.opts.simulate_gpus {
                cmd.arg("--simulate-gpus").arg(g);
            }
            match &self.opts.docker_socket {
                Some(s) => {
                    cmd.arg("--docker-socket").arg(s);
                    if let Ok(conf) = std::env::var("CONTAINERS_CONF") {
                        cmd.env("CONTAINERS_CONF", conf);
                    }
                }
                None => {
                    // Keep the environment's socket from turning the container runtime on.
                    cmd.env_remove("CAPSTAN_DOCKER_SOCKET");
                }
            }
            let child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
            self.child = Some(child);
            self.url = format!("http://127.0.0.1:{port}");
            match self.wait_healthy() {
                Ok(()) => return,
                Err(exited) => {
                    self.child = None;
                    let log = self.log();
                    if exited && log.lines().rev().take(20).any(|l| l.contains("Address already in use")) {
                        continue; // lost the port race: another port
                    }
                    panic!(
                        "capstan up did not become healthy at {} (start #{}); its log:\n{log}",
                        self.url, self.starts
                    );
                }
            }
        }
        panic!("capstan up could not bind a port in 5 tries; its log:\n{}", self.log());
    }

    /// Ok once /healthz answers 200; Err(true) when the process exited, Err(false) on timeout
    /// (the process is then killed).
    fn wait_healthy(&mut self) -> Result<(), bool> {
        let deadline = Instant::now() + HEALTH_TIMEOUT;
        let health = format!("{}/healthz", self.url);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                let mut log = File::options().append(true).open(&self.log_path).unwrap();
                let _ = writeln!(log, "===== e2e harness: capstan up exited early: {status} =====");
                return Err(true);
            }
            if let Ok(r) = self.http.get(&health).timeout(Duration::from_secs(2)).send() {
                if r.status().as_u16() == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let mut child = self.child.take().unwrap();
                let _ = child.kill();
                let _ = child.wait();
                self.child = Some(child);
                return Err(false);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Base URL, like `http://127.0.0.1:41234` (changes on each start).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The data directory (kept across stop and start).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A scratch directory owned by this instance (removed with it).
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// Everything `capstan up` printed (all starts).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// The last `n` lines of [`Capstan::log`].
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Pid of the running `capstan up`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, then waits for it to exit (SIGKILL after 20 s). Returns its exit code
    /// (None when it had to be killed or died of a signal).
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL (kill -9) and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Start again on the same data directory (a new port).
    pub fn restart(&mut self) {
        self.up();
    }

    /// `capstan --server URL ARGS...`.
    pub fn cli(&self, args: &[&str]) -> CliOut {
        self.cli_timeout(args, CLI_TIMEOUT)
    }

    /// [`Capstan::cli`] with another bound.
    pub fn cli_timeout(&self, args: &[&str], timeout: Duration) -> CliOut {
        let mut cmd = Command::new(capstan_bin());
        cmd.arg("--server").arg(&self.url).args(args).env_remove("CAPSTAN_TOKEN").env("RUST_BACKTRACE", "0");
        run_bounded(cmd, timeout, &format!("capstan {}", args.join(" ")))
    }

    /// Writes `yaml` to a file and runs `capstan apply -f FILE`, which must succeed.
    #[track_caller]
    pub fn apply(&self, yaml: &str) -> CliOut {
        let path = self.write_file(&format!("{}.yaml", unique_name("manifest")), yaml.as_bytes());
        let out = self.cli(&["apply", "-f", path.to_str().unwrap()]);
        assert_eq!(
            out.code, 0,
            "capstan apply failed:\n--- manifest\n{yaml}\n--- stdout\n{}\n--- stderr\n{}",
            out.stdout, out.stderr
        );
        out
    }

    /// Writes a file in the scratch directory and returns its path.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("writing a file");
        path
    }

    /// GET a path of the server: (status, body as JSON, or as a JSON string when not JSON).
    pub fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.url)).send().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = r.status().as_u16();
        let bytes = r.bytes().unwrap_or_default();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, body)
    }

    /// POST bytes to a path: (status, body as JSON, or as a JSON string when not JSON).
    pub fn post(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = r.status().as_u16();
        let bytes = r.bytes().unwrap_or_default();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, body)
    }

    /// Path of a TrainingJob in the default namespace.
    pub fn job_path(name: &str) -> String {
        format!("/apis/capstan.dev/v1alpha1/namespaces/default/trainingjobs/{name}")
    }

    /// The job's JSON, or None on 404 (any other status panics).
    pub fn job(&self, name: &str) -> Option<Value> {
        let (status, body) = self.get(&Self::job_path(name));
        match status {
            200 => {
                if let Some(uid) = body["metadata"]["uid"].as_str() {
                    let mut seen = self.seen_uids.borrow_mut();
                    if !seen.iter().any(|u| u == uid) {
                        seen.push(uid.to_string());
                    }
                }
                Some(body)
            }
            404 => None,
            other => panic!("GET job {name}: HTTP {other}: {body}"),
        }
    }

    /// Waits until the job exists and `pred` holds on its JSON; returns that JSON. On
    /// timeout, panics with the last JSON seen and the tail of the server's log.
    #[track_caller]
    pub fn wait_job(&self, name: &str, timeout: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(j) = self.job(name) {
                if pred(&j) {
                    return j;
                }
                last = Some(j);
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for job {name} to be {what}; last state:\n{}\n--- capstan up log (tail):\n{}",
                    last.map(|j| serde_json::to_string_pretty(&j).unwrap()).unwrap_or_else(|| "<job not found>".into()),
                    self.log_tail(60)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until the job's phase is `want`.
    #[track_caller]
    pub fn wait_phase(&self, name: &str, want: &str) -> Value {
        self.wait_job(name, JOB_TIMEOUT, &format!("phase {want}"), |j| phase(j) == want)
    }

    /// Waits until the job is finished (Succeeded or Failed) and returns it.
    #[track_caller]
    pub fn wait_finished(&self, name: &str) -> Value {
        self.wait_job(name, JOB_TIMEOUT, "finished (Succeeded or Failed)", |j| {
            matches!(phase(j), "Succeeded" | "Failed")
        })
    }

    /// Waits until GET of the job answers 404.
    #[track_caller]
    pub fn wait_gone(&self, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.job(name) {
                None => return,
                Some(j) if Instant::now() > deadline => {
                    panic!(
                        "job {name} still exists after {timeout:?}:\n{}\n--- log:\n{}",
                        serde_json::to_string_pretty(&j).unwrap(),
                        self.log_tail(60)
                    )
                }
                Some(_) => std::thread::sleep(POLL),
            }
        }
    }

    /// `capstan logs NAME --replica R [--attempt A]`, which must succeed.
    #[track_caller]
    pub fn logs(&self, name: &str, replica: u32, attempt: Option<u32>) -> String {
        let replica = replica.to_string();
        let mut args = vec!["logs", name, "--replica", &replica];
        let attempt_s;
        if let Some(a) = attempt {
            attempt_s = a.to_string();
            args.extend(["--attempt", &attempt_s]);
        }
        let out = self.cli(&args);
        assert_eq!(out.code, 0, "capstan {} failed: {}", args.join(" "), out.stderr);
        out.stdout
    }

    /// Live processes carrying this instance's marker (its replicas, and itself).
    pub fn instance_procs(&self) -> Vec<u32> {
        procs_with_env(&[(INSTANCE_ENV, &self.instance)])
    }

    fn kill_leftovers(&mut self) {
        let own = self.pid();
        for pid in self.instance_procs() {
            if Some(pid) != own {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        if self.opts.docker_socket.is_some() {
            for uid in self.seen_uids.borrow().iter() {
                let ids = all_containers_of(uid);
                if !ids.is_empty() {
                    let mut args = vec!["rm", "-f", "-t", "0"];
                    args.extend(ids.iter().map(String::as_str));
                    let _ = podman(&args);
                }
            }
        }
    }
}

impl Drop for Capstan {
    fn drop(&mut self) {
        // Learn the uids of every job (for container cleanup) while the server answers.
        if self.child.is_some() && self.opts.docker_socket.is_some() {
            if let Ok(r) = self.http.get(format!("{}/apis/capstan.dev/v1alpha1/trainingjobs", self.url)).send() {
                if let Ok(v) = r.json::<Value>() {
                    for it in v["items"].as_array().into_iter().flatten() {
                        if let Some(uid) = it["metadata"]["uid"].as_str() {
                            self.seen_uids.borrow_mut().push(uid.to_string());
                        }
                    }
                }
            }
        }
        self.stop();
        // Replicas outlive `capstan up` by design: remove this instance's.
        self.kill_leftovers();
        if std::thread::panicking() && std::env::var_os("CAPSTAN_E2E_KEEP").is_some() {
            // Keep the data directory and log for a post-mortem.
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
            eprintln!("CAPSTAN_E2E_KEEP: kept {}", dir.keep().display());
        }
    }
}

/// A TrainingJob manifest in the default namespace running as host processes.
pub fn process_job(name: &str, replicas: u32, command: &[&str], run_policy: &str) -> String {
    let command = serde_json::to_string(command).unwrap();
    let mut y = format!(
        "apiVersion: capstan.dev/v1alpha1\nkind: TrainingJob\nmetadata:\n  name: {name}\nspec:\n  runtime: process\n  replicas: {replicas}\n  command: {command}\n"
    );
    if !run_policy.trim().is_empty() {
        y.push_str("  runPolicy:\n");
        for line in run_policy.lines().filter(|l| !l.trim().is_empty()) {
            y.push_str("    ");
            y.push_str(line.trim());
            y.push('\n');
        }
    }
    y
}

/// Deterministic pseudo-random bytes (xorshift64*), `len` of them.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}
