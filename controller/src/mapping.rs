//! Mapping between the TrainingJob resource and the core's plain values, both ways.
//! Shared by every backend, so standalone and Kubernetes mean the same by each field.

use capstan_core::env::LauncherKind;
use capstan_core::lifecycle::{Eviction, GangSpec, GangState, Phase, RestartRule, Slot, StartOrder, SuccessRule};
use capstan_crds::trainingjob::{
    CleanPodPolicy, EvictionStatus, JobPhase, Launcher, ReplicaState, ReplicaStatus, RestartPolicy, TrainingJobSpec,
    TrainingJobStatus,
};
use capstan_crds::Condition;
use chrono::{DateTime, SecondsFormat, Utc};

/// Seconds between SIGTERM and SIGKILL when the controller stops replicas.
pub const DEFAULT_GRACE_SECONDS: u64 = 10;

/// The lifecycle-relevant part of a spec.
pub fn gang_spec(spec: &TrainingJobSpec) -> GangSpec {
    let rp = &spec.run_policy;
    let launcher_first = matches!(spec.launcher, Launcher::Deepspeed | Launcher::Mpi);
    GangSpec {
        replicas: spec.replicas,
        restart: match rp.restart_policy() {
            RestartPolicy::Never => RestartRule::Never,
            RestartPolicy::OnFailure => RestartRule::OnFailure,
            RestartPolicy::ExitCode => RestartRule::ExitCode,
        },
        backoff_limit: rp.backoff_limit(),
        active_deadline_seconds: rp.active_deadline_seconds,
        ttl_seconds_after_finished: rp.ttl_seconds_after_finished,
        suspend: rp.suspended(),
        start_order: if launcher_first { StartOrder::WorkersFirst } else { StartOrder::AllAtOnce },
        success: if launcher_first { SuccessRule::LauncherOnly } else { SuccessRule::AllReplicas },
        clean_all_on_finish: rp.clean_pod_policy == Some(CleanPodPolicy::All),
        grace_seconds: DEFAULT_GRACE_SECONDS,
    }
}

/// The core's launcher kind.
pub fn launcher_kind(l: Launcher) -> LauncherKind {
    match l {
        Launcher::None => LauncherKind::None,
        Launcher::Torchrun => LauncherKind::Torchrun,
        Launcher::Deepspeed => LauncherKind::Deepspeed,
        Launcher::Mpi => LauncherKind::Mpi,
    }
}

/// RFC 3339, seconds, UTC.
pub fn rfc3339(t: i64) -> String {
    DateTime::<Utc>::from_timestamp(t, 0).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parse RFC 3339 into seconds since the epoch.
pub fn parse_time(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s).ok().map(|d| d.timestamp())
}

fn phase_from(p: JobPhase) -> Phase {
    match p {
        JobPhase::Pending => Phase::Pending,
        JobPhase::Starting => Phase::Starting,
        JobPhase::Running => Phase::Running,
        JobPhase::Restarting => Phase::Restarting,
        JobPhase::Succeeded => Phase::Succeeded,
        JobPhase::Failed => Phase::Failed,
        JobPhase::Suspended => Phase::Suspended,
    }
}

fn phase_to(p: Phase) -> JobPhase {
    match p {
        Phase::Pending => JobPhase::Pending,
        Phase::Starting => JobPhase::Starting,
        Phase::Running => JobPhase::Running,
        Phase::Restarting => JobPhase::Restarting,
        Phase::Succeeded => JobPhase::Succeeded,
        Phase::Failed => JobPhase::Failed,
        Phase::Suspended => JobPhase::Suspended,
    }
}

/// What the lifecycle remembers, read back from the status.
pub fn gang_state(status: &TrainingJobStatus) -> GangState {
    let reason =
        status.conditions.iter().rev().find(|c| c.status == "True").map(|c| c.reason.clone()).unwrap_or_default();
    GangState {
        phase: phase_from(status.phase),
        attempt: status.attempt,
        restarts: status.restarts,
        uncounted_restarts: status.uncounted_restarts,
        placement: status
            .replica_statuses
            .iter()
            .map(|r| Slot { node: r.node.clone().unwrap_or_default(), gpus: r.gpus.clone() })
            .collect(),
        started_at: status.start_time.as_deref().and_then(parse_time),
        finished_at: status.completion_time.as_deref().and_then(parse_time),
        exit_code: status.exit_code,
        reason,
        message: status.message.clone().unwrap_or_default(),
        evicting: status.eviction.as_ref().map(|e| Eviction { reason: e.reason.clone(), message: e.message.clone() }),
    }
}

/// Set a condition, changing lastTransitionTime only when its status flips.
pub fn set_condition(conds: &mut Vec<Condition>, type_: &str, status: bool, reason: &str, message: &str, now: i64) {
    let st = if status { "True" } else { "False" };
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status != st {
            c.last_transition_time = rfc3339(now);
        }
        c.status = st.into();
        c.reason = reason.into();
        c.message = message.into();
    } else {
        conds.push(Condition {
            type_: type_.into(),
            status: st.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: rfc3339(now),
        });
    }
}

fn clear_condition(conds: &mut Vec<Condition>, type_: &str, reason: &str, now: i64) {
    if conds.iter().any(|c| c.type_ == type_ && c.status == "True") {
        set_condition(conds, type_, false, reason, "", now);
    }
}

/// Write the lifecycle's new state into the status, with conditions that follow the phase.
/// `replicas` carries what is known of each replica of the current attempt.
pub fn write_status(status: &mut TrainingJobStatus, s: &GangState, replicas: Vec<ReplicaStatus>, now: i64) {
    let c = &mut status.conditions;
    match s.phase {
        Phase::Pending => {
            set_condition(
                c,
                "Admitted",
                false,
                if s.reason.is_empty() { "Waiting" } else { &s.reason },
                &s.message,
                now,
            );
            clear_condition(c, "Running", "Pending", now);
        }
        Phase::Starting | Phase::Restarting => {
            set_condition(c, "Admitted", true, "Admitted", "gang placed", now);
            clear_condition(c, "Running", if s.phase == Phase::Restarting { "GangRestart" } else { "Starting" }, now);
        }
        Phase::Running => {
            set_condition(c, "Admitted", true, "Admitted", "gang placed", now);
            set_condition(c, "Running", true, "Running", &s.message, now);
            clear_condition(c, "Preempted", "Readmitted", now);
            clear_condition(c, "Suspended", "Resumed", now);
        }
        Phase::Succeeded => {
            clear_condition(c, "Running", "Completed", now);
            set_condition(c, "Succeeded", true, &s.reason, &s.message, now);
        }
        Phase::Failed => {
            clear_condition(c, "Running", &s.reason, now);
            set_condition(c, "Failed", true, &s.reason, &s.message, now);
        }
        Phase::Suspended => {
            clear_condition(c, "Running", "Suspended", now);
            set_condition(c, "Suspended", true, "Suspended", &s.message, now);
        }
    }
    if let Some(ev) = &s.evicting {
        set_condition(c, "Preempted", true, &ev.reason, &ev.message, now);
    }
    if s.phase == Phase::Pending && s.reason == "Resumed" {
        clear_condition(c, "Suspended", "Resumed", now);
    }
    status.phase = phase_to(s.phase);
    status.attempt = s.attempt;
    status.restarts = s.restarts;
    status.uncounted_restarts = s.uncounted_restarts;
    status.start_time = s.started_at.map(rfc3339);
    status.completion_time = s.finished_at.map(rfc3339);
    status.exit_code = s.exit_code;
    status.message = if s.message.is_empty() { None } else { Some(s.message.clone()) };
    status.eviction =
        s.evicting.as_ref().map(|e| EvictionStatus { reason: e.reason.clone(), message: e.message.clone() });
    status.replica_statuses = replicas;
    if s.phase != Phase::Pending {
        status.queue_position = None;
    }
}

/// The status a pass writes: `status` with the lifecycle's new `state` and, for the current
/// attempt, each replica's slot and what was observed of it (both backends write this).
pub fn next_status(
    status: &TrainingJobStatus,
    spec: &TrainingJobSpec,
    state: &GangState,
    observed: &[capstan_core::lifecycle::Observed],
    now: i64,
) -> TrainingJobStatus {
    let current: std::collections::BTreeMap<u32, &capstan_core::ReplicaObs> =
        observed.iter().filter(|o| o.attempt == state.attempt).map(|o| (o.index, &o.state)).collect();
    let replicas = if state.placement.is_empty() {
        Vec::new()
    } else {
        (0..spec.replicas)
            .map(|i| replica_status(i, state.placement.get(i as usize), current.get(&i).copied()))
            .collect()
    };
    let mut new_status = status.clone();
    write_status(&mut new_status, state, replicas, now);
    if state.phase != Phase::Pending {
        new_status.queue_position = None;
    }
    new_status
}

/// A replica's status from its slot and what the agent observed.
pub fn replica_status(index: u32, slot: Option<&Slot>, obs: Option<&capstan_core::ReplicaObs>) -> ReplicaStatus {
    use capstan_core::ReplicaObs;
    let (state, exit_code, message) = match obs {
        None => (ReplicaState::Pending, None, None),
        Some(ReplicaObs::Running) => (ReplicaState::Running, None, None),
        Some(ReplicaObs::Exited { code: 0, reason }) => (ReplicaState::Succeeded, Some(0), Some(reason.clone())),
        Some(ReplicaObs::Exited { code, reason }) => (ReplicaState::Failed, Some(*code), Some(reason.clone())),
        Some(ReplicaObs::Missing) => (ReplicaState::Failed, None, Some("vanished".into())),
    };
    ReplicaStatus {
        index,
        state,
        node: slot.map(|s| s.node.clone()),
        gpus: slot.map(|s| s.gpus.clone()).unwrap_or_default(),
        exit_code,
        message,
    }
}

/// Parse a Kubernetes CPU quantity ("2", "500m", "1.5") into cores.
pub fn parse_cpu(q: &str) -> Option<f64> {
    let q = q.trim();
    if let Some(m) = q.strip_suffix('m') {
        return m.parse::<f64>().ok().map(|v| v / 1000.0).filter(|v| *v > 0.0);
    }
    q.parse::<f64>().ok().filter(|v| *v > 0.0)
}

/// Parse a Kubernetes memory quantity ("512Mi", "2G", "1e9", "1024") into bytes.
pub fn parse_memory(q: &str) -> Option<u64> {
    let q = q.trim();
    let units: [(&str, f64); 12] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().ok().filter(|v| *v > 0.0).map(|v| (v * mult) as u64);
        }
    }
    q.parse::<f64>().ok().filter(|v| *v > 0.0).map(|v| v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_cpu("500m"), Some(0.5));
        assert_eq!(parse_cpu("2"), Some(2.0));
        assert_eq!(parse_cpu("x"), None);
        assert_eq!(parse_memory("1Gi"), Some(1 << 30));
        assert_eq!(parse_memory("128Mi"), Some(128 << 20));
        assert_eq!(parse_memory("1G"), Some(1_000_000_000));
        assert_eq!(parse_memory("-1"), None);
    }

    #[test]
    fn status_round_trips_the_gang_state() {
        let s = GangState {
            phase: Phase::Restarting,
            attempt: 3,
            restarts: 2,
            uncounted_restarts: 1,
            placement: vec![Slot { node: "n".into(), gpus: vec![0, 1] }],
            started_at: Some(1_700_000_000),
            finished_at: None,
            exit_code: None,
            reason: "GangRestart".into(),
            message: "m".into(),
            evicting: None,
        };
        let mut st = TrainingJobStatus::default();
        let reps = vec![replica_status(0, s.placement.first(), None)];
        write_status(&mut st, &s, reps, 1_700_000_100);
        let back = gang_state(&st);
        assert_eq!(back.phase, s.phase);
        assert_eq!(back.attempt, 3);
        assert_eq!(back.restarts, 2);
        assert_eq!(back.uncounted_restarts, 1);
        assert_eq!(back.placement, s.placement);
        assert_eq!(back.started_at, s.started_at);
    }

    #[test]
    fn condition_time_changes_only_on_flip() {
        let mut c = Vec::new();
        set_condition(&mut c, "Running", true, "Running", "a", 100);
        set_condition(&mut c, "Running", true, "Running", "b", 200);
        assert_eq!(c[0].last_transition_time, rfc3339(100));
        set_condition(&mut c, "Running", false, "X", "c", 300);
        assert_eq!(c[0].last_transition_time, rfc3339(300));
    }
}
