//! The process runtime: each replica is a host process in a session (and process group) of
//! its own, so that stopping it reaches every process it started.
//!
//! The program runs under a small `/bin/sh` wrapper that writes its exit status to
//! `state_dir/processes/<job_uid>-<index>-<attempt>.exit`, so the exit code is known even when
//! the agent that started it is gone (killed and restarted: the replica is then adopted, and
//! the agent is not its parent any more). A record `<job_uid>-<index>-<attempt>.json` next to
//! it names the process (pid, process group, start time to detect pid reuse) for
//! [`Agent::list`](crate::Agent::list) and for a later run of the agent.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{AgentError, FoundReplica, Observation, ReplicaHandle, ReplicaSpec, Runtime};

/// The wrapper: `$1` is the exit file, the rest the replica's argv. It ignores nothing (the
/// program gets default signal dispositions), but traps TERM, INT and HUP with a no-op so
/// that a SIGTERM sent to the whole group lets the program shut down on its own and still
/// records the program's own exit status.
const WRAPPER: &str = r#"trap : TERM INT HUP
capstan_exit_file=$1
shift
"$@"
capstan_status=$?
echo "$capstan_status" > "$capstan_exit_file.tmp" && PATH=/usr/bin:/bin mv -f "$capstan_exit_file.tmp" "$capstan_exit_file"
exit "$capstan_status""#;

/// How long [`ProcessRuntime::stop`] waits for a group to vanish after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(30);
/// Polling interval while waiting for a process group to end.
const POLL: Duration = Duration::from_millis(50);

/// What the agent remembers of a process replica, in `state_dir/processes/<key>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Process id of the wrapper (the session and group leader).
    pub pid: u32,
    /// Process group id (equals `pid`).
    pub pgid: u32,
    /// Job UID.
    pub job_uid: String,
    /// Replica index.
    pub index: u32,
    /// Attempt.
    pub attempt: u32,
    /// Start time of `pid` in clock ticks after boot (field 22 of /proc/PID/stat), to tell
    /// the process from a later one that reuses its pid.
    pub start_time: u64,
    /// Namespace of the job.
    #[serde(default)]
    pub namespace: String,
    /// Name of the job.
    #[serde(default)]
    pub job_name: String,
    /// The replica's argv.
    #[serde(default)]
    pub argv: Vec<String>,
    /// Its log file.
    #[serde(default)]
    pub log_path: PathBuf,
}

/// The process runtime.
pub struct ProcessRuntime {
    dir: PathBuf,
    /// Children of this agent: pid -> exit code once reaped.
    children: Arc<Mutex<HashMap<u32, watch::Receiver<Option<i32>>>>>,
}

fn io_err(path: &Path, source: std::io::Error) -> AgentError {
    AgentError::Io { path: path.display().to_string(), source }
}

/// A file-name-safe form of `s`.
fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect()
}

/// Exit code in words: "Completed", "Killed by signal 15 (SIGTERM)", "Error".
pub fn exit_reason(code: i32) -> String {
    match code {
        0 => "Completed".to_string(),
        137 => "Killed by signal 9 (SIGKILL, or out of memory)".to_string(),
        c if c > 128 && c <= 128 + 64 => {
            let n = c - 128;
            match Signal::try_from(n) {
                Ok(sig) => format!("Killed by signal {n} ({})", sig.as_str()),
                Err(_) => format!("Killed by signal {n}"),
            }
        }
        _ => "Error".to_string(),
    }
}

/// Fields of /proc/PID/stat that matter here.
#[derive(Debug, Clone, Copy)]
struct ProcStat {
    state: char,
    pgrp: i32,
    start_time: u64,
}

impl ProcStat {
    fn live(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<ProcStat> {
    // "pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    //  utime stime cutime cstime priority nice num_threads itrealvalue starttime ..."
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Live (not zombie) processes of process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|s| s.live() && s.pgrp == pgid as i32))
        .collect()
}

/// What a host process needs to see only its GPUs: CUDA_VISIBLE_DEVICES with the node's
/// indices, in the PCI bus order NVML numbers them by (CUDA's own default order is "fastest
/// first"). A replica without GPUs gets an empty list, so it sees none rather than all. The
/// replica's own env comes after, so a job that sets these keeps its values.
fn gpu_env(spec: &ReplicaSpec) -> [(&'static str, String); 2] {
    let ids: Vec<String> = spec.gpus.iter().map(u32::to_string).collect();
    [("CUDA_DEVICE_ORDER", "PCI_BUS_ID".to_string()), ("CUDA_VISIBLE_DEVICES", ids.join(","))]
}

/// Whether `program` can be run: a path to an executable file, or a name found in `path`.
fn find_program(program: &str, path_var: Option<&str>, cwd: Option<&Path>) -> Result<(), String> {
    fn executable(p: &Path) -> bool {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    if program.is_empty() {
        return Err("empty program name".to_string());
    }
    if program.contains('/') {
        let p = Path::new(program);
        let p = match cwd {
            Some(cwd) if p.is_relative() => cwd.join(p),
            _ => p.to_path_buf(),
        };
        return if executable(&p) {
            Ok(())
        } else if p.exists() {
            Err(format!("{} is not an executable file", p.display()))
        } else {
            Err(format!("{} does not exist", p.display()))
        };
    }
    let path_var = path_var.unwrap_or("/usr/local/bin:/usr/bin:/bin");
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let mut candidate = PathBuf::from(dir).join(program);
        if candidate.is_relative() {
            if let Some(cwd) = cwd {
                candidate = cwd.join(candidate);
            }
        }
        if executable(&candidate) {
            return Ok(());
        }
    }
    Err(format!("not found in PATH ({path_var})"))
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), AgentError> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let mut file = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    file.write_all(data).map_err(|e| io_err(&tmp, e))?;
    file.sync_all().map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

fn read_exit_file(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl ProcessRuntime {
    /// A runtime keeping its records in `state_dir/processes` (created).
    pub fn new(state_dir: &Path) -> Result<ProcessRuntime, AgentError> {
        let dir = state_dir.join("processes");
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        Ok(ProcessRuntime { dir, children: Arc::new(Mutex::new(HashMap::new())) })
    }

    /// Folder of the records.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn key(job_uid: &str, index: u32, attempt: u32) -> String {
        format!("{}-{index}-{attempt}", sanitize(job_uid))
    }

    fn record_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    fn exit_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.exit"))
    }

    fn key_of(record: &ProcessRecord) -> String {
        Self::key(&record.job_uid, record.index, record.attempt)
    }

    /// Every record in the folder.
    pub fn records(&self) -> Result<Vec<ProcessRecord>, AgentError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        let mut records = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err(&self.dir, e))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else { continue };
            match serde_json::from_str::<ProcessRecord>(&text) {
                Ok(record) => records.push(record),
                Err(e) => tracing::warn!("ignoring unreadable process record {}: {e}", path.display()),
            }
        }
        records.sort_by(|a, b| (&a.job_uid, a.index, a.attempt).cmp(&(&b.job_uid, b.index, b.attempt)));
        Ok(records)
    }

    /// Whether the record's group leader is alive and is the process the record names.
    fn leader_alive(record: &ProcessRecord) -> bool {
        proc_stat(record.pid).is_some_and(|s| s.live() && s.start_time == record.start_time)
    }

    /// Whether the record's pid (if it exists at all) is still the recorded process, so that
    /// its group number still names the replica's group.
    fn group_is_ours(record: &ProcessRecord) -> bool {
        match proc_stat(record.pid) {
            Some(s) => s.start_time == record.start_time,
            // The leader is gone: while any member of its group lives, the kernel keeps the
            // number from being reused, so the members are the replica's.
            None => true,
        }
    }

    /// The record of the replica with process id `id`.
    fn find(&self, id: &str) -> Option<ProcessRecord> {
        let pid: u32 = id.trim().parse().ok()?;
        let mut candidates: Vec<ProcessRecord> = self.records().ok()?.into_iter().filter(|r| r.pid == pid).collect();
        if candidates.len() > 1 {
            // A reused pid: prefer the live one, then one that is our child, then any.
            if let Some(at) = candidates.iter().position(Self::leader_alive) {
                return Some(candidates.swap_remove(at));
            }
        }
        candidates.pop()
    }

    fn child_state(&self, pid: u32) -> Option<watch::Receiver<Option<i32>>> {
        self.children.lock().unwrap().get(&pid).cloned()
    }

    /// Start a replica (see [`Agent::start`](crate::Agent::start)).
    pub async fn start(&self, spec: &ReplicaSpec) -> Result<ReplicaHandle, AgentError> {
        let Some(program) = spec.argv.first() else {
            return Err(AgentError::Invalid(format!(
                "{}/{} replica {}: the process runtime needs a command",
                spec.namespace, spec.job_name, spec.index
            )));
        };
        let key = Self::key(&spec.job_uid, spec.index, spec.attempt);
        let record_path = self.record_path(&key);
        let exit_path = self.exit_path(&key);

        // The same replica again: running already, return it; else start afresh.
        if let Some(old) =
            std::fs::read_to_string(&record_path).ok().and_then(|t| serde_json::from_str::<ProcessRecord>(&t).ok())
        {
            if Self::leader_alive(&old) && read_exit_file(&exit_path).is_none() {
                return Ok(ReplicaHandle { runtime: Runtime::Process, id: old.pid.to_string() });
            }
        }
        for stale in [&exit_path, &record_path] {
            match std::fs::remove_file(stale) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(stale, e)),
            }
        }

        let cwd = spec.working_dir.as_deref().map(Path::new);
        if let Some(cwd) = cwd {
            if !cwd.is_dir() {
                return Err(AgentError::Spawn {
                    program: program.clone(),
                    message: format!("working directory {} does not exist", cwd.display()),
                });
            }
        }
        let path_var = spec
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var("PATH").ok());
        find_program(program, path_var.as_deref(), cwd)
            .map_err(|message| AgentError::Spawn { program: program.clone(), message })?;

        if let Some(parent) = spec.log_path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_path)
            .map_err(|e| io_err(&spec.log_path, e))?;
        let log_err = log.try_clone().map_err(|e| io_err(&spec.log_path, e))?;

        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(WRAPPER)
            .arg("capstan-replica")
            .arg(&exit_path)
            .args(&spec.argv)
            .envs(gpu_env(spec))
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(false);
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let mut child =
            cmd.spawn().map_err(|e| AgentError::Spawn { program: program.clone(), message: e.to_string() })?;
        let pid = child.id().ok_or_else(|| AgentError::Spawn {
            program: program.clone(),
            message: "exited before its pid could be read".to_string(),
        })?;
        // Not reaped yet (only the task below waits), so /proc/PID/stat is there.
        let start_time = proc_stat(pid).map(|s| s.start_time).unwrap_or(0);

        let (tx, rx) = watch::channel(None);
        self.children.lock().unwrap().insert(pid, rx);
        let reaper_exit = exit_path.clone();
        tokio::spawn(async move {
            let code = match child.wait().await {
                Ok(status) => {
                    use std::os::unix::process::ExitStatusExt;
                    status.code().or(status.signal().map(|s| 128 + s)).unwrap_or(137)
                }
                Err(e) => {
                    tracing::warn!("waiting for process {pid}: {e}");
                    137
                }
            };
            // The wrapper writes the program's status; when it was killed itself it could not.
            if read_exit_file(&reaper_exit).is_none() {
                if let Err(e) = write_atomic(&reaper_exit, format!("{code}\n").as_bytes()) {
                    tracing::warn!("recording the exit of process {pid}: {e}");
                }
            }
            let _ = tx.send(Some(read_exit_file(&reaper_exit).unwrap_or(code)));
        });

        let record = ProcessRecord {
            pid,
            pgid: pid,
            job_uid: spec.job_uid.clone(),
            index: spec.index,
            attempt: spec.attempt,
            start_time,
            namespace: spec.namespace.clone(),
            job_name: spec.job_name.clone(),
            argv: spec.argv.clone(),
            log_path: spec.log_path.clone(),
        };
        let json = serde_json::to_vec_pretty(&record).expect("record serializes");
        if let Err(e) = write_atomic(&record_path, &json) {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            return Err(e);
        }
        tracing::debug!(pid, key, "started process replica");
        Ok(ReplicaHandle { runtime: Runtime::Process, id: pid.to_string() })
    }

    /// What the replica with process id `id` does now.
    pub async fn observe(&self, id: &str) -> Observation {
        let Some(record) = self.find(id) else { return Observation::Missing };
        let exit_path = self.exit_path(&Self::key_of(&record));
        let exited = |code: i32| Observation::Exited { code, reason: exit_reason(code) };
        if let Some(code) = read_exit_file(&exit_path) {
            return exited(code);
        }
        if let Some(rx) = self.child_state(record.pid) {
            // Our own child: running until the reaper has seen it exit.
            let state = *rx.borrow();
            return match state {
                None => Observation::Running,
                Some(code) => exited(code),
            };
        }
        if Self::leader_alive(&record) {
            return Observation::Running;
        }
        // It may have written its status between the first look and now.
        if let Some(code) = read_exit_file(&exit_path) {
            return exited(code);
        }
        Observation::Exited { code: 137, reason: "Killed".to_string() }
    }

    /// Stop the replica: SIGTERM to its group, up to `grace`, then SIGKILL; returns once no
    /// process of the group is left.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<(), AgentError> {
        let Some(record) = self.find(id) else { return Ok(()) };
        if !Self::group_is_ours(&record) {
            return Ok(());
        }
        let pgid = record.pgid;
        let group = Pid::from_raw(pgid as i32);
        if !group_members(pgid).is_empty() {
            let _ = killpg(group, Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            while !group_members(pgid).is_empty() && Instant::now() < deadline {
                tokio::time::sleep(POLL).await;
            }
            if !group_members(pgid).is_empty() {
                tracing::info!(pgid, "process group still running after {grace:?}: SIGKILL");
                let _ = killpg(group, Signal::SIGKILL);
                let deadline = Instant::now() + KILL_WAIT;
                loop {
                    let left = group_members(pgid);
                    if left.is_empty() {
                        break;
                    }
                    if Instant::now() >= deadline {
                        return Err(io_err(
                            &self.record_path(&Self::key_of(&record)),
                            std::io::Error::other(format!("processes {left:?} of group {pgid} survive SIGKILL")),
                        ));
                    }
                    let _ = killpg(group, Signal::SIGKILL);
                    tokio::time::sleep(POLL).await;
                }
            }
        }
        // Our own child: let the reaper record its exit so that observe says Exited at once.
        if let Some(mut rx) = self.child_state(record.pid) {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|state| state.is_some())).await;
        }
        Ok(())
    }

    /// Remove the replica's record and exit file (killing what may still run of it).
    pub async fn cleanup(&self, id: &str) -> Result<(), AgentError> {
        let Some(record) = self.find(id) else { return Ok(()) };
        if Self::group_is_ours(&record) && !group_members(record.pgid).is_empty() {
            self.stop(id, Duration::ZERO).await?;
        }
        let key = Self::key_of(&record);
        for path in [self.record_path(&key), self.exit_path(&key)] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path, e)),
            }
        }
        let mut children = self.children.lock().unwrap();
        if children.get(&record.pid).is_some_and(|rx| rx.borrow().is_some()) {
            children.remove(&record.pid);
        }
        Ok(())
    }

    /// Every process replica with a record, running or exited.
    pub async fn list(&self) -> Result<Vec<FoundReplica>, AgentError> {
        Ok(self
            .records()?
            .into_iter()
            .map(|r| FoundReplica {
                handle: ReplicaHandle { runtime: Runtime::Process, id: r.pid.to_string() },
                job_uid: r.job_uid,
                index: r.index,
                attempt: r.attempt,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing() {
        let line = "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 100 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.pgrp, 1234);
        assert_eq!(s.start_time, 98765);
        let own = proc_stat(std::process::id()).unwrap();
        assert!(own.live());
        assert!(own.start_time > 0);
    }

    #[test]
    fn reasons() {
        assert_eq!(exit_reason(0), "Completed");
        assert_eq!(exit_reason(1), "Error");
        assert_eq!(exit_reason(143), "Killed by signal 15 (SIGTERM)");
        assert!(exit_reason(137).starts_with("Killed by signal 9 (SIGKILL"));
        assert_eq!(exit_reason(255), "Error");
    }

    #[test]
    fn program_lookup() {
        assert!(find_program("sh", Some("/usr/bin:/bin"), None).is_ok());
        assert!(find_program("/bin/sh", None, None).is_ok());
        assert!(find_program("no-such-program-capstan", Some("/bin"), None).is_err());
        let dir = std::env::temp_dir().join(format!("capstan-lookup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("plain");
        std::fs::write(&plain, "").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(find_program(plain.to_str().unwrap(), None, None).is_err());
        assert!(find_program("plain", Some(dir.to_str().unwrap()), None).is_err());
        assert!(find_program("./plain", None, Some(&dir)).is_err());
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(find_program("./plain", None, Some(&dir)).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
