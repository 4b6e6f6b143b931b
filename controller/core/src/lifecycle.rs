//! The life of one gang: given what the job asks for, what was decided before and what the
//! agent observes now, decide the next state and the actions that get there.
//!
//! [`plan`] is a pure function; the standalone controller and (later) the Kubernetes
//! controller call it once per reconcile pass and carry out its [`Action`]s.

use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch.
pub type Time = i64;

/// Which failures restart the gang.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartRule {
    /// Any failure fails the job.
    Never,
    /// Any failure restarts the gang (within the backoff limit).
    OnFailure,
    /// Exit codes 1-127 are permanent; 128-255 and lost replicas restart the gang.
    ExitCode,
}

/// Order in which a gang's replicas start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartOrder {
    /// Every replica at once.
    AllAtOnce,
    /// Every replica but 0 first; replica 0 (an MPI or DeepSpeed launcher) once all others run.
    WorkersFirst,
}

/// What finishes a gang successfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SuccessRule {
    /// Every replica exits 0.
    AllReplicas,
    /// Replica 0 (the launcher) exits 0; the others are then stopped.
    LauncherOnly,
}

/// The parts of a job's spec the lifecycle needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GangSpec {
    /// Number of replicas.
    pub replicas: u32,
    /// Restart rule.
    pub restart: RestartRule,
    /// Counted gang restarts allowed.
    pub backoff_limit: u32,
    /// Seconds from first start until the job is failed.
    pub active_deadline_seconds: Option<u64>,
    /// Seconds after finishing until the job is deleted.
    pub ttl_seconds_after_finished: Option<u64>,
    /// Suspended on request.
    pub suspend: bool,
    /// Start order.
    pub start_order: StartOrder,
    /// Success rule.
    pub success: SuccessRule,
    /// Remove exited replicas when the job finishes (cleanPodPolicy All).
    pub clean_all_on_finish: bool,
    /// Seconds between SIGTERM and SIGKILL when stopping replicas.
    pub grace_seconds: u64,
}

/// Phase of a gang (mirrors the TrainingJob phase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Phase {
    /// Waiting for admission.
    #[default]
    Pending,
    /// Admitted, replicas starting.
    Starting,
    /// Every replica running.
    Running,
    /// Stopping the gang to start it again.
    Restarting,
    /// Done, successfully.
    Succeeded,
    /// Done, failed.
    Failed,
    /// Stopped on request.
    Suspended,
}

impl Phase {
    /// Succeeded or Failed.
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// Where one replica runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Node name.
    pub node: String,
    /// GPU indices on that node.
    pub gpus: Vec<u32>,
}

/// Why a gang is being stopped without it being its own fault (preemption, GPU fault).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eviction {
    /// CamelCase reason, e.g. "Preempted".
    pub reason: String,
    /// For a person.
    pub message: String,
}

/// What the lifecycle remembers between passes (persisted in the job's status).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GangState {
    /// Phase.
    pub phase: Phase,
    /// Attempt number of the current (or last) gang start; 0 before the first.
    pub attempt: u32,
    /// Gang restarts counted against the backoff limit. Never decreases.
    pub restarts: u32,
    /// Gang restarts that do not count (evictions).
    pub uncounted_restarts: u32,
    /// Where each replica runs, once admitted (index = replica).
    pub placement: Vec<Slot>,
    /// First start.
    pub started_at: Option<Time>,
    /// Finish.
    pub finished_at: Option<Time>,
    /// Exit code that ended the job.
    pub exit_code: Option<i32>,
    /// CamelCase reason of the current phase.
    pub reason: String,
    /// One line for a person.
    pub message: String,
    /// Set while an eviction is being carried out; the gang goes back to Pending after.
    pub evicting: Option<Eviction>,
}

/// What a replica is doing now, as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaObs {
    /// Running.
    Running,
    /// Exited with a code (128+N for signal N).
    Exited {
        /// Exit code.
        code: i32,
        /// Reason in words.
        reason: String,
    },
    /// Vanished without an exit record.
    Missing,
}

/// One replica the agent knows of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// Replica index.
    pub index: u32,
    /// Attempt it was started for.
    pub attempt: u32,
    /// What it is doing.
    pub state: ReplicaObs,
}

/// Inputs of one pass besides the spec and the remembered state.
#[derive(Debug, Clone, Default)]
pub struct PassInput {
    /// Replicas the agent knows of, any attempt.
    pub observed: Vec<Observed>,
    /// The scheduler's placement for this gang, if it admits it now (only read when Pending).
    pub admission: Option<Vec<Slot>>,
    /// Why the scheduler did not admit it (shown while Pending).
    pub pending_reason: Option<String>,
    /// The scheduler asks to stop this running gang (preemption, GPU fault).
    pub evict: Option<Eviction>,
    /// Deletion was asked for.
    pub deleting: bool,
    /// The observations are complete and current: a replica absent from them does not
    /// exist. True for the standalone agent, which records a replica before `start` returns;
    /// false for a backend whose view may lag (a Kubernetes informer cache), where a replica
    /// not yet seen during Starting is waited for.
    pub authoritative: bool,
    /// Now.
    pub now: Time,
}

/// Severity of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    /// Routine.
    Normal,
    /// Something went wrong.
    Warning,
}

/// Something the controller must do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Start these replicas of this attempt on the placement's slots.
    Start {
        /// Attempt.
        attempt: u32,
        /// Replica indices.
        indices: Vec<u32>,
    },
    /// Stop these running replicas (SIGTERM, grace, SIGKILL).
    Stop {
        /// Attempt.
        attempt: u32,
        /// Replica indices.
        indices: Vec<u32>,
        /// Seconds of grace.
        grace_seconds: u64,
    },
    /// Remove what is left of these exited replicas.
    Cleanup {
        /// Attempt.
        attempt: u32,
        /// Replica indices.
        indices: Vec<u32>,
    },
    /// Remove the job for good (deletion finished, or TTL after finishing).
    Delete,
    /// Record an event.
    Event {
        /// Severity.
        type_: EventType,
        /// CamelCase reason.
        reason: String,
        /// For a person.
        message: String,
    },
}

/// Result of a pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The state to persist.
    pub state: GangState,
    /// What to do, in order.
    pub actions: Vec<Action>,
}

fn event(type_: EventType, reason: &str, message: impl Into<String>) -> Action {
    Action::Event { type_, reason: reason.to_string(), message: message.into() }
}

fn running(observed: &[&Observed]) -> Vec<u32> {
    let mut v: Vec<u32> = observed.iter().filter(|o| o.state == ReplicaObs::Running).map(|o| o.index).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Stop whatever of `observed` still runs and clean up the rest, grouped by attempt.
fn stop_and_clean(observed: &[&Observed], grace: u64, clean_exited: bool, actions: &mut Vec<Action>) {
    let mut attempts: Vec<u32> = observed.iter().map(|o| o.attempt).collect();
    attempts.sort_unstable();
    attempts.dedup();
    for attempt in attempts {
        let of: Vec<&Observed> = observed.iter().copied().filter(|o| o.attempt == attempt).collect();
        let run = running(&of);
        if !run.is_empty() {
            actions.push(Action::Stop { attempt, indices: run, grace_seconds: grace });
        }
        if clean_exited {
            let mut done: Vec<u32> = of.iter().filter(|o| o.state != ReplicaObs::Running).map(|o| o.index).collect();
            done.sort_unstable();
            done.dedup();
            if !done.is_empty() {
                actions.push(Action::Cleanup { attempt, indices: done });
            }
        }
    }
}

/// Is this failure permanent under the rule? `None` is a lost replica.
pub fn is_permanent(rule: RestartRule, code: Option<i32>) -> bool {
    match rule {
        RestartRule::Never => true,
        RestartRule::OnFailure => false,
        RestartRule::ExitCode => matches!(code, Some(1..=127)),
    }
}

/// Seconds as an offset to a [`Time`], saturating instead of wrapping to a negative value.
fn secs(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// May attempt `next` start now? Only once nothing of any attempt runs and nothing of
/// `next` or a later attempt is left (so old exit records are never read as the new ones).
fn clear_to_start(observed: &[Observed], next: u32) -> bool {
    observed.iter().all(|o| o.state != ReplicaObs::Running && o.attempt < next)
}

fn start_indices(spec: &GangSpec) -> Vec<u32> {
    match spec.start_order {
        StartOrder::WorkersFirst if spec.replicas > 1 => (1..spec.replicas).collect(),
        _ => (0..spec.replicas).collect(),
    }
}

/// Decide one pass of a gang's life. See the module docs.
pub fn plan(spec: &GangSpec, prev: &GangState, input: &PassInput) -> Plan {
    let mut s = prev.clone();
    let mut actions = Vec::new();
    let now = input.now;
    let current: Vec<&Observed> = input.observed.iter().filter(|o| o.attempt == s.attempt).collect();
    let stale: Vec<&Observed> = input.observed.iter().filter(|o| o.attempt != s.attempt).collect();

    // Deletion: stop everything, remove every trace, then the job.
    if input.deleting {
        let all: Vec<&Observed> = input.observed.iter().collect();
        if all.is_empty() {
            actions.push(Action::Delete);
        } else {
            stop_and_clean(&all, spec.grace_seconds, true, &mut actions);
        }
        return Plan { state: s, actions };
    }

    // Leftovers of earlier attempts never run alongside the current one.
    stop_and_clean(&stale, spec.grace_seconds, true, &mut actions);

    if s.phase.is_finished() {
        stop_and_clean(&current, spec.grace_seconds, spec.clean_all_on_finish, &mut actions);
        if let (Some(ttl), Some(done)) = (spec.ttl_seconds_after_finished, s.finished_at) {
            let all: Vec<&Observed> = input.observed.iter().collect();
            if now >= done.saturating_add(secs(ttl)) && running(&all).is_empty() {
                actions.push(Action::Delete);
            }
        }
        return Plan { state: s, actions };
    }

    // Suspension.
    if spec.suspend {
        if s.phase != Phase::Suspended {
            s.phase = Phase::Suspended;
            s.reason = "Suspended".into();
            s.message = "suspended by runPolicy.suspend".into();
            actions.push(event(EventType::Normal, "Suspended", "job suspended; stopping every replica"));
        }
        stop_and_clean(&current, spec.grace_seconds, false, &mut actions);
        return Plan { state: s, actions };
    }
    if s.phase == Phase::Suspended {
        if !running(&current).is_empty() {
            stop_and_clean(&current, spec.grace_seconds, false, &mut actions);
            return Plan { state: s, actions };
        }
        s.phase = Phase::Pending;
        s.placement.clear();
        s.reason = "Resumed".into();
        s.message = "resumed; waiting for admission".into();
        actions.push(event(EventType::Normal, "Resumed", "job resumed"));
    }

    // Deadline, counted from the first start.
    if let (Some(deadline), Some(start)) = (spec.active_deadline_seconds, s.started_at) {
        if now >= start.saturating_add(secs(deadline)) {
            let msg = format!("job ran longer than activeDeadlineSeconds ({deadline} s)");
            return finish(s, spec, &current, Phase::Failed, "DeadlineExceeded", msg, None, now, actions);
        }
    }

    // An eviction in progress (or asked for now): stop the gang, then go back to Pending.
    if let Some(ev) =
        input.evict.clone().filter(|_| matches!(s.phase, Phase::Starting | Phase::Running | Phase::Restarting))
    {
        if s.evicting.is_none() {
            actions.push(event(EventType::Warning, &ev.reason, ev.message.clone()));
            s.evicting = Some(ev);
        }
    }
    if let Some(ev) = s.evicting.clone() {
        let run = running(&current);
        if !run.is_empty() {
            actions.push(Action::Stop { attempt: s.attempt, indices: run, grace_seconds: spec.grace_seconds });
            s.reason = ev.reason.clone();
            s.message = ev.message.clone();
            return Plan { state: s, actions };
        }
        stop_and_clean(&current, spec.grace_seconds, true, &mut actions);
        s.evicting = None;
        s.uncounted_restarts += 1;
        s.phase = Phase::Pending;
        s.placement.clear();
        s.reason = ev.reason;
        s.message = format!("{}; requeued", ev.message);
        return Plan { state: s, actions };
    }

    match s.phase {
        Phase::Pending | Phase::Suspended => {
            // While pending, the last attempt's replicas are leftovers too (one can show up
            // late, after an eviction that found nothing running yet).
            stop_and_clean(&current, spec.grace_seconds, true, &mut actions);
            let clear = clear_to_start(&input.observed, s.attempt + 1);
            if let Some(slots) = input.admission.clone().filter(|p| p.len() == spec.replicas as usize).filter(|_| clear)
            {
                s.attempt += 1;
                s.placement = slots;
                s.phase = Phase::Starting;
                s.started_at.get_or_insert(now);
                s.reason = "Admitted".into();
                s.message = format!("admitted; starting {} replicas (attempt {})", spec.replicas, s.attempt);
                let nodes: Vec<String> = s
                    .placement
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        if p.gpus.is_empty() {
                            format!("{i}->{}", p.node)
                        } else {
                            format!("{i}->{}:{:?}", p.node, p.gpus)
                        }
                    })
                    .collect();
                actions.push(event(EventType::Normal, "Admitted", format!("placed replicas {}", nodes.join(", "))));
                actions.push(Action::Start { attempt: s.attempt, indices: start_indices(spec) });
            } else {
                s.phase = Phase::Pending;
                if !clear {
                    s.reason = "Waiting".into();
                    s.message = "waiting for replicas of an earlier attempt to stop".into();
                } else if let Some(r) = &input.pending_reason {
                    s.reason = "Waiting".into();
                    s.message = r.clone();
                }
            }
        }
        Phase::Restarting => {
            let run = running(&current);
            if !run.is_empty() {
                actions.push(Action::Stop { attempt: s.attempt, indices: run, grace_seconds: spec.grace_seconds });
            } else if !clear_to_start(&input.observed, s.attempt + 1) {
                stop_and_clean(&current, spec.grace_seconds, true, &mut actions);
                s.message = "waiting for replicas of an earlier attempt to stop".into();
            } else {
                stop_and_clean(&current, spec.grace_seconds, true, &mut actions);
                s.attempt += 1;
                s.phase = Phase::Starting;
                s.message = format!("gang restart: starting attempt {}", s.attempt);
                actions.push(Action::Start { attempt: s.attempt, indices: start_indices(spec) });
            }
        }
        Phase::Starting | Phase::Running => {
            let stale_running = !running(&stale).is_empty();
            return step_running(s, spec, &current, stale_running, input.authoritative, now, actions);
        }
        Phase::Succeeded | Phase::Failed => unreachable!("finished phases returned above"),
    }
    Plan { state: s, actions }
}

fn step_running(
    mut s: GangState,
    spec: &GangSpec,
    current: &[&Observed],
    stale_running: bool,
    authoritative: bool,
    now: Time,
    mut actions: Vec<Action>,
) -> Plan {
    let by_index = |i: u32| current.iter().find(|o| o.index == i).map(|o| &o.state);

    // A permanent failure anywhere decides; else the first failure, by index.
    let failures: Vec<(u32, Option<i32>, String)> = (0..spec.replicas)
        .filter_map(|i| match by_index(i) {
            Some(ReplicaObs::Exited { code, reason }) if *code != 0 => Some((i, Some(*code), reason.clone())),
            Some(ReplicaObs::Missing) => Some((i, None, "replica vanished (agent restart or host loss)".to_string())),
            _ => None,
        })
        .collect();
    let failure = failures.iter().find(|f| is_permanent(spec.restart, f.1)).or(failures.first()).cloned();
    // A replica the backend does not know counts as lost once Running, and already during
    // Starting when the observations are authoritative: every replica of the attempt was
    // started by the pass that entered Starting, so absence means it vanished. The one
    // exception is a WorkersFirst launcher during Starting, started only once its workers run.
    let launcher_may_be_unstarted =
        s.phase == Phase::Starting && spec.start_order == StartOrder::WorkersFirst && spec.replicas > 1;
    let lost = if failure.is_none() && (s.phase == Phase::Running || authoritative) {
        (0..spec.replicas).find(|&i| by_index(i).is_none() && !(i == 0 && launcher_may_be_unstarted))
    } else {
        None
    };
    let failure = failure.or(lost.map(|i| (i, None, "replica vanished".to_string())));

    if let Some((index, code, why)) = failure {
        let what = match code {
            Some(c) => format!("replica {index} exited with code {c} ({why})"),
            None => format!("replica {index} was lost: {why}"),
        };
        if is_permanent(spec.restart, code) {
            let reason = if spec.restart == RestartRule::Never { "ReplicaFailed" } else { "PermanentExitCode" };
            return finish(s, spec, current, Phase::Failed, reason, what, code, now, actions);
        }
        if s.restarts >= spec.backoff_limit {
            let msg = format!("{what}; backoffLimit {} reached after {} gang restarts", spec.backoff_limit, s.restarts);
            return finish(s, spec, current, Phase::Failed, "BackoffLimitExceeded", msg, code, now, actions);
        }
        s.restarts += 1;
        s.phase = Phase::Restarting;
        s.reason = "GangRestart".into();
        s.message = format!("{what}; restarting the gang ({} of {})", s.restarts, spec.backoff_limit);
        actions.push(event(EventType::Warning, "GangRestart", s.message.clone()));
        let run = running(current);
        if !run.is_empty() {
            actions.push(Action::Stop { attempt: s.attempt, indices: run, grace_seconds: spec.grace_seconds });
        }
        return Plan { state: s, actions };
    }

    // Success.
    let ok = |i: u32| matches!(by_index(i), Some(ReplicaObs::Exited { code: 0, .. }));
    let succeeded = match spec.success {
        SuccessRule::AllReplicas => (0..spec.replicas).all(ok),
        SuccessRule::LauncherOnly => ok(0),
    };
    if succeeded {
        return finish(
            s,
            spec,
            current,
            Phase::Succeeded,
            "Completed",
            "every replica completed".into(),
            Some(0),
            now,
            actions,
        );
    }

    // Launcher waits for its workers.
    if spec.start_order == StartOrder::WorkersFirst && spec.replicas > 1 && by_index(0).is_none() {
        let workers_up = (1..spec.replicas).all(|i| matches!(by_index(i), Some(ReplicaObs::Running)));
        if workers_up && !stale_running {
            actions.push(Action::Start { attempt: s.attempt, indices: vec![0] });
            s.message = "all workers running; starting the launcher (replica 0)".into();
        } else {
            s.message = "waiting for every worker to run before starting the launcher".into();
        }
        return Plan { state: s, actions };
    }

    let all_up = (0..spec.replicas)
        .all(|i| matches!(by_index(i), Some(ReplicaObs::Running | ReplicaObs::Exited { code: 0, .. })));
    if all_up && s.phase != Phase::Running {
        s.phase = Phase::Running;
        s.reason = "Running".into();
        s.message = format!("all {} replicas running (attempt {})", spec.replicas, s.attempt);
        actions.push(event(EventType::Normal, "Running", s.message.clone()));
    }
    Plan { state: s, actions }
}

#[allow(clippy::too_many_arguments)]
fn finish(
    mut s: GangState,
    spec: &GangSpec,
    current: &[&Observed],
    phase: Phase,
    reason: &str,
    message: String,
    code: Option<i32>,
    now: Time,
    mut actions: Vec<Action>,
) -> Plan {
    s.phase = phase;
    s.reason = reason.into();
    s.message = message.clone();
    s.finished_at = Some(now);
    s.exit_code = code;
    s.evicting = None;
    let type_ = if phase == Phase::Succeeded { EventType::Normal } else { EventType::Warning };
    actions.push(event(type_, reason, message));
    stop_and_clean(current, spec.grace_seconds, spec.clean_all_on_finish, &mut actions);
    Plan { state: s, actions }
}

/// Fail the job now for a reason outside the replicas' exit codes (for example a replica
/// the agent could not start: a missing image). Stops whatever of `observed` still runs.
pub fn fail(
    spec: &GangSpec,
    prev: &GangState,
    observed: &[Observed],
    reason: &str,
    message: String,
    now: Time,
) -> Plan {
    let current: Vec<&Observed> = observed.iter().filter(|o| o.attempt == prev.attempt).collect();
    finish(prev.clone(), spec, &current, Phase::Failed, reason, message, None, now, Vec::new())
}
