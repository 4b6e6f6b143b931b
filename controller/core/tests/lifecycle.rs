//! Scenario tables for `lifecycle::plan` (in the style of jobset's success-policy tests) and
//! simulation-driven end-to-end runs of a gang's life.

mod common;

use capstan_core::lifecycle::{
    fail, plan, Eviction, GangSpec, GangState, Observed, PassInput, Phase, RestartRule, StartOrder, SuccessRule, Time,
};
use common::*;

/// One pass: spec tweak, prior state, inputs -> expected state fields and exact actions.
struct Case {
    name: &'static str,
    spec: fn(&mut GangSpec),
    prev: GangState,
    observed: Vec<Observed>,
    /// Some(n): the scheduler admits the gang on n slots now.
    admit: Option<usize>,
    evict: bool,
    deleting: bool,
    now: Time,
    phase: Phase,
    restarts: u32,
    attempt: u32,
    /// Exact actions, rendered by `common::render`.
    actions: Vec<&'static str>,
    /// Further checks on the new state.
    check: fn(&GangState),
}

fn base(name: &'static str, prev: GangState) -> Case {
    Case {
        name,
        spec: |_| {},
        phase: prev.phase,
        restarts: prev.restarts,
        attempt: prev.attempt,
        prev,
        observed: Vec::new(),
        admit: None,
        evict: false,
        deleting: false,
        now: 150,
        actions: Vec::new(),
        check: |_| {},
    }
}

fn all_running(attempt: u32) -> Vec<Observed> {
    (0..3).map(|i| run(i, attempt)).collect()
}

fn evicting(mut s: GangState) -> GangState {
    s.evicting = Some(evict());
    s
}

fn finished(phase: Phase, at: Time) -> GangState {
    GangState { finished_at: Some(at), exit_code: Some(0), ..state(phase, 1, 0) }
}

fn cases() -> Vec<Case> {
    use Phase::*;
    vec![
        // --- Admission and start order ---
        Case {
            admit: Some(3),
            phase: Starting,
            attempt: 1,
            actions: vec!["event Admitted", "start a1 [0, 1, 2]"],
            check: |s| {
                assert_eq!(s.started_at, Some(150));
                assert_eq!(s.placement, slots(3));
                assert_eq!(s.reason, "Admitted");
            },
            ..base("pending + admission starts the whole gang", state(Pending, 0, 0))
        },
        Case {
            check: |s| assert_eq!(s.started_at, None),
            ..base("pending without admission stays pending", state(Pending, 0, 0))
        },
        Case { admit: Some(2), ..base("admission with the wrong number of slots is ignored", state(Pending, 0, 0)) },
        Case {
            admit: Some(3),
            now: 900,
            phase: Starting,
            attempt: 3,
            restarts: 1,
            actions: vec!["event Admitted", "start a3 [0, 1, 2]"],
            check: |s| assert_eq!(s.started_at, Some(100), "started_at is the first start only"),
            ..base("re-admission keeps the first started_at", state(Pending, 2, 1))
        },
        Case {
            spec: |s| s.start_order = StartOrder::WorkersFirst,
            admit: Some(3),
            phase: Starting,
            attempt: 1,
            actions: vec!["event Admitted", "start a1 [1, 2]"],
            ..base("workers first: admission starts the workers only", state(Pending, 0, 0))
        },
        Case {
            spec: |s| {
                s.start_order = StartOrder::WorkersFirst;
                s.replicas = 1;
            },
            admit: Some(1),
            phase: Starting,
            attempt: 1,
            actions: vec!["event Admitted", "start a1 [0]"],
            ..base("workers first with a single replica starts it", state(Pending, 0, 0))
        },
        Case {
            spec: |s| s.start_order = StartOrder::WorkersFirst,
            observed: vec![run(1, 1)],
            ..base("workers first: launcher waits while a worker is not up", state(Starting, 1, 0))
        },
        Case {
            spec: |s| s.start_order = StartOrder::WorkersFirst,
            observed: vec![run(1, 1), exit(2, 1, 0)],
            ..base("workers first: a worker that exited 0 is not running", state(Starting, 1, 0))
        },
        Case {
            spec: |s| s.start_order = StartOrder::WorkersFirst,
            observed: vec![run(1, 1), run(2, 1)],
            actions: vec!["start a1 [0]"],
            ..base("workers first: launcher once every worker runs", state(Starting, 1, 0))
        },
        Case {
            spec: |s| s.start_order = StartOrder::WorkersFirst,
            observed: all_running(1),
            phase: Running,
            actions: vec!["event Running"],
            ..base("workers first: launcher up -> Running", state(Starting, 1, 0))
        },
        Case {
            observed: all_running(1),
            phase: Running,
            actions: vec!["event Running"],
            ..base("every replica running -> Running", state(Starting, 1, 0))
        },
        Case {
            observed: vec![run(0, 1)],
            ..base("starting: replicas not yet seen are not lost", state(Starting, 1, 0))
        },
        Case { observed: all_running(1), ..base("running stays running quietly", state(Running, 1, 0)) },
        // --- Failures and the run policy ---
        Case {
            observed: vec![run(0, 1), exit(1, 1, 3), run(2, 1)],
            phase: Restarting,
            restarts: 1,
            actions: vec!["warn GangRestart", "stop a1 [0, 2] g30"],
            check: |s| assert_eq!(s.reason, "GangRestart"),
            ..base("OnFailure: exit 3 restarts the gang, stopping the rest", state(Running, 1, 0))
        },
        Case {
            observed: vec![run(0, 1), exit(1, 1, 3), exit(2, 1, 143)],
            phase: Restarting,
            restarts: 1,
            actions: vec!["warn GangRestart", "stop a1 [0] g30"],
            ..base("OnFailure: a failure while starting counts too", state(Starting, 1, 0))
        },
        Case {
            observed: vec![run(0, 1), exit(1, 1, 3), exit(2, 1, 143)],
            actions: vec!["stop a1 [0] g30"],
            ..base("restarting: waits for the still-running replicas", state(Restarting, 1, 1))
        },
        Case {
            observed: vec![exit(0, 1, 143), exit(1, 1, 3), missing(2, 1)],
            phase: Starting,
            attempt: 2,
            actions: vec!["cleanup a1 [0, 1, 2]", "start a2 [0, 1, 2]"],
            ..base("restarting: once none runs, clean up and start the next attempt", state(Restarting, 1, 1))
        },
        Case {
            spec: |s| s.start_order = StartOrder::WorkersFirst,
            observed: vec![exit(0, 1, 143), exit(1, 1, 3), exit(2, 1, 143)],
            phase: Starting,
            attempt: 2,
            actions: vec!["cleanup a1 [0, 1, 2]", "start a2 [1, 2]"],
            ..base("restarting with workers first starts the workers", state(Restarting, 1, 1))
        },
        Case {
            observed: vec![run(0, 2), exit(1, 2, 3), run(2, 2)],
            phase: Restarting,
            restarts: 2,
            actions: vec!["warn GangRestart", "stop a2 [0, 2] g30"],
            ..base("backoff 2: the second failure is the second restart", state(Running, 2, 1))
        },
        Case {
            observed: vec![run(0, 3), exit(1, 3, 3), run(2, 3)],
            now: 400,
            phase: Failed,
            actions: vec!["warn BackoffLimitExceeded", "stop a3 [0, 2] g30", "cleanup a3 [1]"],
            check: |s| {
                assert_eq!(s.reason, "BackoffLimitExceeded");
                assert_eq!(s.exit_code, Some(3));
                assert_eq!(s.finished_at, Some(400));
            },
            ..base("backoff 2: the third run failing fails the job", state(Running, 3, 2))
        },
        Case {
            spec: |s| s.backoff_limit = 0,
            observed: vec![run(0, 1), exit(1, 1, 3), run(2, 1)],
            phase: Failed,
            actions: vec!["warn BackoffLimitExceeded", "stop a1 [0, 2] g30", "cleanup a1 [1]"],
            ..base("backoff 0: the first failure fails the job", state(Running, 1, 0))
        },
        Case {
            spec: |s| s.restart = RestartRule::ExitCode,
            observed: vec![exit(0, 1, 1), run(1, 1), run(2, 1)],
            phase: Failed,
            actions: vec!["warn PermanentExitCode", "stop a1 [1, 2] g30", "cleanup a1 [0]"],
            check: |s| assert_eq!(s.exit_code, Some(1)),
            ..base("ExitCode: 1 is permanent", state(Running, 1, 0))
        },
        Case {
            spec: |s| s.restart = RestartRule::ExitCode,
            observed: vec![exit(0, 1, 127), run(1, 1), run(2, 1)],
            phase: Failed,
            actions: vec!["warn PermanentExitCode", "stop a1 [1, 2] g30", "cleanup a1 [0]"],
            ..base("ExitCode: 127 is permanent", state(Running, 1, 0))
        },
        Case {
            spec: |s| s.restart = RestartRule::ExitCode,
            observed: vec![exit(0, 1, 137), run(1, 1), run(2, 1)],
            phase: Restarting,
            restarts: 1,
            actions: vec!["warn GangRestart", "stop a1 [1, 2] g30"],
            ..base("ExitCode: 137 is retryable", state(Running, 1, 0))
        },
        Case {
            spec: |s| s.restart = RestartRule::ExitCode,
            observed: vec![exit(0, 1, 128), run(1, 1), run(2, 1)],
            phase: Restarting,
            restarts: 1,
            actions: vec!["warn GangRestart", "stop a1 [1, 2] g30"],
            ..base("ExitCode: 128 is retryable", state(Running, 1, 0))
        },
        Case {
            spec: |s| s.restart = RestartRule::ExitCode,
            observed: vec![run(0, 1), missing(1, 1), run(2, 1)],
            phase: Restarting,
            restarts: 1,
            actions: vec!["warn GangRestart", "stop a1 [0, 2] g30"],
            ..base("ExitCode: a lost replica is retryable", state(Running, 1, 0))
        },
        Case {
            spec: |s| s.restart = RestartRule::ExitCode,
            observed: vec![exit(0, 1, 134), exit(1, 1, 1), run(2, 1)],
            phase: Failed,
            actions: vec!["warn PermanentExitCode", "stop a1 [2] g30", "cleanup a1 [0, 1]"],
            check: |s| assert_eq!(s.exit_code, Some(1)),
            ..base("ExitCode: a permanent code on a higher index still wins", state(Running, 1, 0))
        },
        Case {
            spec: |s| s.restart = RestartRule::ExitCode,
            observed: vec![exit(0, 1, 137), run(1, 1), run(2, 1)],
            restarts: 2,
            phase: Failed,
            actions: vec!["warn BackoffLimitExceeded", "stop a1 [1, 2] g30", "cleanup a1 [0]"],
            check: |s| assert_eq!(s.exit_code, Some(137)),
            ..base("ExitCode: retryable at the limit -> BackoffLimitExceeded", state(Running, 1, 2))
        },
        Case {
            spec: |s| s.restart = RestartRule::Never,
            observed: vec![run(0, 1), exit(1, 1, 137), run(2, 1)],
            phase: Failed,
            actions: vec!["warn ReplicaFailed", "stop a1 [0, 2] g30", "cleanup a1 [1]"],
            check: |s| assert_eq!(s.exit_code, Some(137)),
            ..base("Never: even a retryable code fails at once", state(Running, 1, 0))
        },
        Case {
            spec: |s| s.restart = RestartRule::Never,
            observed: vec![run(0, 1), missing(1, 1), run(2, 1)],
            phase: Failed,
            actions: vec!["warn ReplicaFailed", "stop a1 [0, 2] g30", "cleanup a1 [1]"],
            check: |s| assert_eq!(s.exit_code, None),
            ..base("Never: a lost replica fails at once", state(Running, 1, 0))
        },
        Case {
            observed: vec![run(0, 1), missing(1, 1), run(2, 1)],
            phase: Restarting,
            restarts: 1,
            actions: vec!["warn GangRestart", "stop a1 [0, 2] g30"],
            ..base("OnFailure: Missing after an agent restart restarts the gang", state(Running, 1, 0))
        },
        Case {
            observed: vec![run(0, 1), run(2, 1)],
            phase: Restarting,
            restarts: 1,
            actions: vec!["warn GangRestart", "stop a1 [0, 2] g30"],
            ..base("running: a replica absent from observations is lost", state(Running, 1, 0))
        },
        Case {
            spec: |s| s.start_order = StartOrder::WorkersFirst,
            observed: vec![run(1, 1), run(2, 1)],
            phase: Restarting,
            restarts: 1,
            actions: vec!["warn GangRestart", "stop a1 [1, 2] g30"],
            ..base("workers first: a launcher absent while Running is lost, not restarted", state(Running, 1, 0))
        },
        Case {
            observed: vec![run(0, 1), exit(1, 1, 0), run(2, 1)],
            ..base("AllReplicas: one replica done, others running", state(Running, 1, 0))
        },
        // --- Success ---
        Case {
            observed: vec![exit(0, 1, 0), exit(1, 1, 0), exit(2, 1, 0)],
            now: 700,
            phase: Succeeded,
            actions: vec!["event Completed", "cleanup a1 [0, 1, 2]"],
            check: |s| {
                assert_eq!(s.reason, "Completed");
                assert_eq!(s.finished_at, Some(700));
                assert_eq!(s.exit_code, Some(0));
            },
            ..base("AllReplicas: every replica exits 0 -> Succeeded", state(Running, 1, 0))
        },
        Case {
            spec: |s| s.clean_all_on_finish = false,
            observed: vec![exit(0, 1, 0), exit(1, 1, 0), exit(2, 1, 0)],
            phase: Succeeded,
            actions: vec!["event Completed"],
            ..base("clean_all_on_finish off keeps exited replicas", state(Running, 1, 0))
        },
        Case {
            spec: |s| s.success = SuccessRule::LauncherOnly,
            observed: vec![exit(0, 1, 0), run(1, 1), run(2, 1)],
            phase: Succeeded,
            actions: vec!["event Completed", "stop a1 [1, 2] g30", "cleanup a1 [0]"],
            ..base("LauncherOnly: launcher exits 0 -> Succeeded, others stopped", state(Running, 1, 0))
        },
        Case {
            spec: |s| s.success = SuccessRule::LauncherOnly,
            observed: vec![run(0, 1), exit(1, 1, 0), exit(2, 1, 0)],
            ..base("LauncherOnly: workers exiting 0 is not success", state(Running, 1, 0))
        },
        // --- Deadline ---
        Case {
            spec: |s| s.active_deadline_seconds = Some(60),
            observed: all_running(1),
            now: 160,
            phase: Failed,
            actions: vec!["warn DeadlineExceeded", "stop a1 [0, 1, 2] g30"],
            check: |s| assert_eq!(s.reason, "DeadlineExceeded"),
            ..base("deadline reached fails and stops everything", state(Running, 1, 0))
        },
        Case {
            spec: |s| s.active_deadline_seconds = Some(60),
            observed: all_running(1),
            now: 159,
            ..base("deadline not reached yet", state(Running, 1, 0))
        },
        Case {
            spec: |s| s.active_deadline_seconds = Some(60),
            observed: vec![run(0, 3), run(1, 3)],
            now: 160,
            restarts: 2,
            phase: Failed,
            actions: vec!["warn DeadlineExceeded", "stop a3 [0, 1] g30"],
            ..base("deadline counts from the first start, across restarts", state(Starting, 3, 2))
        },
        Case {
            spec: |s| s.active_deadline_seconds = Some(60),
            now: 160,
            phase: Failed,
            actions: vec!["warn DeadlineExceeded"],
            ..base("deadline applies while pending again after an eviction", state(Pending, 1, 0))
        },
        Case {
            spec: |s| s.active_deadline_seconds = Some(60),
            admit: Some(3),
            phase: Starting,
            attempt: 1,
            now: 10_000,
            actions: vec!["event Admitted", "start a1 [0, 1, 2]"],
            ..base("deadline does not run before the first start", state(Pending, 0, 0))
        },
        Case {
            spec: |s| s.active_deadline_seconds = Some(u64::MAX),
            observed: all_running(1),
            now: 1_000_000,
            ..base("a huge deadline never fires (no wrap to negative)", state(Running, 1, 0))
        },
        // --- Suspension ---
        Case {
            spec: |s| s.suspend = true,
            observed: all_running(1),
            phase: Suspended,
            actions: vec!["event Suspended", "stop a1 [0, 1, 2] g30"],
            ..base("suspend stops the running gang, restarts untouched", state(Running, 1, 1))
        },
        Case {
            spec: |s| s.suspend = true,
            observed: vec![run(0, 1), exit(1, 1, 143), exit(2, 1, 1)],
            actions: vec!["stop a1 [0] g30"],
            ..base("suspended: keeps stopping; exit codes do not count", state(Suspended, 1, 1))
        },
        Case {
            spec: |s| s.suspend = true,
            phase: Suspended,
            actions: vec!["event Suspended"],
            ..base("suspend a pending gang", state(Pending, 0, 0))
        },
        Case {
            spec: |s| s.suspend = true,
            admit: Some(3),
            ..base("suspended ignores admission", state(Suspended, 1, 0))
        },
        Case {
            observed: vec![run(0, 1), exit(1, 1, 143)],
            actions: vec!["stop a1 [0] g30"],
            ..base("unsuspend waits until nothing runs", state(Suspended, 1, 0))
        },
        Case {
            observed: vec![exit(0, 1, 143)],
            phase: Pending,
            actions: vec!["event Resumed", "cleanup a1 [0]"],
            check: |s| assert!(s.placement.is_empty()),
            ..base("unsuspend -> Pending, needs admission again", state(Suspended, 1, 1))
        },
        Case {
            admit: Some(3),
            phase: Starting,
            attempt: 2,
            actions: vec!["event Resumed", "event Admitted", "start a2 [0, 1, 2]"],
            ..base("unsuspend with an admission starts the next attempt", state(Suspended, 1, 1))
        },
        // --- Eviction ---
        Case {
            evict: true,
            observed: all_running(1),
            actions: vec!["warn Preempted", "stop a1 [0, 1, 2] g30"],
            check: |s| {
                assert_eq!(s.evicting, Some(evict()));
                assert_eq!(s.reason, "Preempted");
            },
            ..base("evict a running gang: stop with grace", state(Running, 1, 1))
        },
        Case {
            observed: vec![exit(0, 1, 137), run(1, 1), exit(2, 1, 143)],
            actions: vec!["stop a1 [1] g30"],
            ..base("evicting: exit codes during the stop do not count", evicting(state(Running, 1, 1)))
        },
        Case {
            observed: vec![exit(0, 1, 137), exit(1, 1, 143), missing(2, 1)],
            phase: Pending,
            actions: vec!["cleanup a1 [0, 1, 2]"],
            check: |s| {
                assert_eq!(s.uncounted_restarts, 1);
                assert_eq!(s.evicting, None);
                assert!(s.placement.is_empty());
            },
            ..base("eviction done -> Pending, uncounted", evicting(state(Running, 1, 1)))
        },
        Case {
            evict: true,
            phase: Pending,
            actions: vec!["warn Preempted"],
            check: |s| assert_eq!(s.uncounted_restarts, 1),
            ..base("evict a starting gang with nothing up yet", state(Starting, 1, 0))
        },
        Case { evict: true, ..base("evict is ignored while pending", state(Pending, 1, 0)) },
        Case {
            evict: true,
            observed: vec![exit(0, 1, 0), exit(1, 1, 0), exit(2, 1, 0)],
            actions: vec!["cleanup a1 [0, 1, 2]"],
            ..base("evict is ignored once finished", finished(Phase::Succeeded, 140))
        },
        // --- Deletion ---
        Case {
            deleting: true,
            observed: vec![exit(0, 1, 143), run(0, 2), exit(1, 2, 0), run(2, 2)],
            actions: vec!["cleanup a1 [0]", "stop a2 [0, 2] g30", "cleanup a2 [1]"],
            ..base("deleting: stop running, clean exited, of every attempt", state(Running, 2, 1))
        },
        Case {
            deleting: true,
            observed: vec![exit(0, 2, 143)],
            actions: vec!["cleanup a2 [0]"],
            ..base("deleting: no Delete while anything is observed", state(Running, 2, 1))
        },
        Case {
            deleting: true,
            actions: vec!["delete"],
            ..base("deleting: Delete once nothing is observed", state(Running, 2, 1))
        },
        Case {
            deleting: true,
            observed: vec![exit(0, 1, 0)],
            actions: vec!["cleanup a1 [0]"],
            ..base("deleting a finished job cleans before Delete", finished(Phase::Succeeded, 140))
        },
        // --- TTL ---
        Case {
            spec: |s| s.ttl_seconds_after_finished = Some(60),
            now: 1059,
            ..base("ttl not reached", finished(Phase::Succeeded, 1000))
        },
        Case {
            spec: |s| s.ttl_seconds_after_finished = Some(60),
            now: 1060,
            actions: vec!["delete"],
            ..base("ttl reached -> Delete", finished(Phase::Failed, 1000))
        },
        Case {
            spec: |s| s.ttl_seconds_after_finished = Some(60),
            observed: vec![run(0, 1)],
            now: 1060,
            actions: vec!["stop a1 [0] g30"],
            ..base("ttl reached but a replica still runs", finished(Phase::Succeeded, 1000))
        },
        Case {
            spec: |s| s.ttl_seconds_after_finished = Some(60),
            observed: vec![run(0, 0)],
            now: 1060,
            actions: vec!["stop a0 [0] g30"],
            ..base("ttl reached but a stale replica still runs", finished(Phase::Succeeded, 1000))
        },
        Case {
            spec: |s| s.ttl_seconds_after_finished = Some(u64::MAX),
            now: 1060,
            ..base("a huge ttl never fires (no wrap to negative)", finished(Phase::Succeeded, 1000))
        },
        Case { now: 1_000_000, ..base("finished without ttl is never deleted", finished(Phase::Succeeded, 1000)) },
        Case {
            observed: vec![run(1, 1), exit(0, 1, 0)],
            actions: vec!["stop a1 [1] g30", "cleanup a1 [0]"],
            ..base("finished: leftovers are stopped and cleaned", finished(Phase::Succeeded, 140))
        },
        // --- Stale attempts ---
        Case {
            observed: vec![run(0, 1), exit(1, 1, 143), run(0, 2), run(1, 2), run(2, 2)],
            actions: vec!["stop a1 [0] g30", "cleanup a1 [1]"],
            ..base("running: stale attempt stopped and cleaned", state(Running, 2, 1))
        },
        Case {
            observed: vec![exit(0, 1, 3), missing(1, 1), run(0, 2), run(1, 2), run(2, 2)],
            actions: vec!["cleanup a1 [0, 1]"],
            ..base("running: a stale failure is not a failure of this attempt", state(Running, 2, 1))
        },
        Case {
            observed: vec![run(0, 1)],
            admit: Some(3),
            actions: vec!["stop a1 [0] g30"],
            check: |s| assert_eq!(s.reason, "Waiting"),
            ..base("pending: a late replica of the last attempt is stopped, no start yet", state(Pending, 1, 0))
        },
        Case {
            observed: vec![exit(0, 1, 143)],
            admit: Some(3),
            phase: Starting,
            attempt: 2,
            actions: vec!["cleanup a1 [0]", "event Admitted", "start a2 [0, 1, 2]"],
            ..base("pending: exited leftovers are cleaned and do not block the start", state(Pending, 1, 0))
        },
        Case {
            observed: vec![run(0, 1), exit(0, 2, 143), exit(1, 2, 3), exit(2, 2, 143)],
            actions: vec!["stop a1 [0] g30", "cleanup a2 [0, 1, 2]"],
            ..base("restarting: no start while an older attempt still runs", state(Restarting, 2, 1))
        },
        Case {
            observed: vec![exit(1, 3, 143)],
            actions: vec!["cleanup a3 [1]"],
            ..base("restarting: no start over leftovers of the attempt it would start", state(Restarting, 2, 1))
        },
        Case {
            spec: |s| s.start_order = StartOrder::WorkersFirst,
            observed: vec![run(2, 1), run(1, 2), run(2, 2)],
            actions: vec!["stop a1 [2] g30"],
            ..base("workers first: no launcher while an older attempt still runs", state(Starting, 2, 1))
        },
    ]
}

#[test]
fn scenarios() {
    let mut failures = Vec::new();
    let all = cases();
    for c in &all {
        let mut spec = spec();
        (c.spec)(&mut spec);
        let input = PassInput {
            observed: c.observed.clone(),
            admission: c.admit.map(slots),
            pending_reason: Some("needs 24 GPUs; 8 free now".into()),
            evict: c.evict.then(evict),
            deleting: c.deleting,
            authoritative: false,
            now: c.now,
        };
        let p = plan(&spec, &c.prev, &input);
        let broken = violations(&spec, &c.prev, &input, &p);
        if !broken.is_empty() {
            failures.push(format!("{}: {}", c.name, broken.join("; ")));
        }
        let got = rendered(&p);
        let want: Vec<String> = c.actions.iter().map(|s| s.to_string()).collect();
        let fields = (p.state.phase, p.state.restarts, p.state.attempt);
        if fields != (c.phase, c.restarts, c.attempt) || got != want {
            failures.push(format!(
                "{}:\n  want {:?} restarts {} attempt {} {:?}\n  got  {:?} restarts {} attempt {} {:?}",
                c.name, c.phase, c.restarts, c.attempt, want, fields.0, fields.1, fields.2, got
            ));
            continue;
        }
        (c.check)(&p.state);
        // Deletion and eviction never move the counters that bound retries.
        if c.deleting {
            assert_eq!(p.state, c.prev, "{}: deletion changes no state", c.name);
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), all.len(), failures.join("\n"));
}

#[test]
fn pending_reason_is_shown() {
    let input = PassInput { pending_reason: Some("needs 24 GPUs; 8 free now".into()), now: 1, ..PassInput::default() };
    let p = plan(&spec(), &GangState::default(), &input);
    assert_eq!(p.state.reason, "Waiting");
    assert_eq!(p.state.message, "needs 24 GPUs; 8 free now");
}

#[test]
fn fail_stops_what_runs() {
    let prev = state(Phase::Starting, 1, 0);
    let observed = vec![run(0, 1), exit(1, 1, 1), run(2, 0)];
    let p = fail(&spec(), &prev, &observed, "ImagePullFailed", "no such image".into(), 500);
    assert_eq!(p.state.phase, Phase::Failed);
    assert_eq!(p.state.finished_at, Some(500));
    assert_eq!(rendered(&p), ["warn ImagePullFailed", "stop a1 [0] g30", "cleanup a1 [1]"]);
}

// --- Simulation-driven runs ---

fn sim_spec(f: impl FnOnce(&mut GangSpec)) -> GangSpec {
    let mut s = spec();
    f(&mut s);
    s
}

/// Replica `index` exits with `code` after `age` passes in every attempt; others run on
/// until `done_after` passes and exit 0 (never when `None`).
fn script(index: u32, code: i32, age: u32, done_after: Option<u32>) -> impl Fn(u32, u32, u32) -> Option<i32> {
    move |_, i, a| {
        if i == index && a >= age {
            Some(code)
        } else {
            done_after.filter(|&d| a >= d).map(|_| 0)
        }
    }
}

#[test]
fn sim_on_failure_backoff_2_is_three_runs() {
    let mut sim = Sim::new(sim_spec(|_| {}), script(1, 3, 2, None));
    sim.run_until(100, Sim::settled);
    assert_eq!(sim.state.phase, Phase::Failed);
    assert_eq!(sim.state.reason, "BackoffLimitExceeded");
    assert_eq!(sim.state.exit_code, Some(3));
    assert_eq!((sim.state.restarts, sim.state.attempt), (2, 3));
    assert_eq!(sim.gang_starts(), 3, "starts: {:?}", sim.starts);
    assert_eq!(sim.starts, vec![(1, vec![0, 1, 2]), (2, vec![0, 1, 2]), (3, vec![0, 1, 2])]);
    assert!(sim.replicas.is_empty(), "clean_all_on_finish removes everything: {:?}", sim.replicas);
}

#[test]
fn sim_backoff_limit_counts_runs() {
    for limit in 0..5 {
        let mut sim = Sim::new(sim_spec(|s| s.backoff_limit = limit), script(2, 1, 1, None));
        sim.lag = limit % 2 == 1;
        sim.run_until(200, Sim::settled);
        assert_eq!(sim.state.phase, Phase::Failed);
        assert_eq!(sim.gang_starts(), limit as usize + 1, "backoff {limit}");
        assert_eq!(sim.state.restarts, limit);
    }
}

#[test]
fn sim_exit_code_1_is_one_run() {
    let mut sim = Sim::new(sim_spec(|s| s.restart = RestartRule::ExitCode), script(1, 1, 2, None));
    sim.run_until(100, Sim::settled);
    assert_eq!((sim.state.phase, sim.state.reason.as_str()), (Phase::Failed, "PermanentExitCode"));
    assert_eq!((sim.gang_starts(), sim.state.restarts), (1, 0));
}

#[test]
fn sim_exit_code_137_retries_then_succeeds() {
    // Replica 0 is OOM-killed in attempts 1 and 2; attempt 3 finishes.
    let s = |attempt: u32, i: u32, age: u32| match (attempt, i) {
        (1 | 2, 0) if age >= 2 => Some(137),
        (3, _) if age >= 3 => Some(0),
        _ => None,
    };
    let mut sim = Sim::new(sim_spec(|s| s.restart = RestartRule::ExitCode), s);
    sim.run_until(100, Sim::settled);
    assert_eq!(sim.state.phase, Phase::Succeeded);
    assert_eq!((sim.gang_starts(), sim.state.restarts, sim.state.attempt), (3, 2, 3));
    assert!(sim.state.finished_at.is_some());
}

#[test]
fn sim_never_fails_on_first_failure() {
    let mut sim = Sim::new(sim_spec(|s| s.restart = RestartRule::Never), script(0, 143, 2, None));
    sim.run_until(100, Sim::settled);
    assert_eq!((sim.state.phase, sim.state.reason.as_str()), (Phase::Failed, "ReplicaFailed"));
    assert_eq!(sim.gang_starts(), 1);
}

#[test]
fn sim_workers_first_launcher_only() {
    // MPI-style: workers never exit, the launcher finishes after 3 passes.
    let spec = sim_spec(|s| {
        s.replicas = 4;
        s.start_order = StartOrder::WorkersFirst;
        s.success = SuccessRule::LauncherOnly;
    });
    let mut sim = Sim::new(spec, |_, i, age| (i == 0 && age >= 3).then_some(0));
    sim.lag = true;
    sim.run_until(100, Sim::settled);
    assert_eq!(sim.state.phase, Phase::Succeeded);
    assert_eq!(sim.starts, vec![(1, vec![1, 2, 3]), (1, vec![0])]);
    let first_launcher = sim.log.iter().position(|l| l == "start a1 [0]").unwrap();
    let workers = sim.log.iter().position(|l| l == "start a1 [1, 2, 3]").unwrap();
    assert!(workers < first_launcher);
    assert!(sim.log.contains(&"stop a1 [1, 2, 3] g30".to_string()), "{:?}", sim.log);
}

#[test]
fn sim_missing_after_agent_restart_is_handled_by_policy() {
    for (rule, phase, starts) in [
        (RestartRule::OnFailure, Phase::Succeeded, 2),
        (RestartRule::ExitCode, Phase::Succeeded, 2),
        (RestartRule::Never, Phase::Failed, 1),
    ] {
        let mut sim = Sim::new(sim_spec(|s| s.restart = rule), |a, _, age| (a == 2 && age >= 2).then_some(0));
        sim.run_until(20, |s| s.state.phase == Phase::Running);
        // The agent restarts and forgets replica 1's container.
        sim.replicas.insert((1, 1), (capstan_core::ReplicaObs::Missing, 0));
        sim.run_until(100, Sim::settled);
        assert_eq!(sim.state.phase, phase, "{rule:?}");
        assert_eq!(sim.gang_starts(), starts, "{rule:?}");
    }
}

#[test]
fn sim_eviction_does_not_count() {
    let mut sim = Sim::new(sim_spec(|_| {}), |a, _, age| (a == 2 && age >= 3).then_some(0));
    sim.run_until(20, |s| s.state.phase == Phase::Running);
    sim.pass(Some(evict()), false);
    sim.run_until(50, Sim::settled);
    assert_eq!(sim.state.phase, Phase::Succeeded);
    assert_eq!((sim.state.restarts, sim.state.uncounted_restarts, sim.state.attempt), (0, 1, 2));
    assert_eq!(sim.gang_starts(), 2);
}

#[test]
fn sim_eviction_before_the_agent_sees_the_start() {
    // The agent lags one pass: the evicted attempt's replicas appear only once the gang
    // is pending again; they must be stopped before the next attempt starts.
    let mut sim = Sim::new(sim_spec(|_| {}), |a, _, age| (a == 2 && age >= 2).then_some(0));
    sim.lag = true;
    sim.pass(None, false);
    assert_eq!(sim.state.phase, Phase::Starting);
    sim.pass(Some(evict()), false);
    assert_eq!(sim.state.phase, Phase::Pending);
    sim.run_until(50, Sim::settled);
    assert_eq!(sim.state.phase, Phase::Succeeded);
    assert_eq!((sim.state.restarts, sim.state.uncounted_restarts), (0, 1));
    assert!(sim.replicas.is_empty(), "{:?}", sim.replicas);
}

#[test]
fn sim_suspend_and_resume() {
    let mut sim = Sim::new(sim_spec(|s| s.backoff_limit = 1), |a, _, age| (a == 2 && age >= 2).then_some(0));
    sim.run_until(20, |s| s.state.phase == Phase::Running);
    sim.spec.suspend = true;
    sim.run_until(20, |s| s.state.phase == Phase::Suspended && s.running() == 0);
    for _ in 0..5 {
        sim.tick_agent();
        sim.pass(None, false);
    }
    assert_eq!((sim.state.phase, sim.gang_starts()), (Phase::Suspended, 1));
    sim.spec.suspend = false;
    sim.run_until(50, Sim::settled);
    assert_eq!(sim.state.phase, Phase::Succeeded);
    assert_eq!((sim.state.restarts, sim.state.attempt, sim.gang_starts()), (0, 2, 2));
}

#[test]
fn sim_deadline() {
    let mut sim = Sim::new(sim_spec(|s| s.active_deadline_seconds = Some(100)), |_, _, _| None);
    sim.run_until(100, Sim::settled);
    assert_eq!((sim.state.phase, sim.state.reason.as_str()), (Phase::Failed, "DeadlineExceeded"));
    assert_eq!(sim.state.finished_at.unwrap() - sim.state.started_at.unwrap(), 100);
}

#[test]
fn sim_deletion_waits_for_stops() {
    let mut sim = Sim::new(sim_spec(|_| {}), |_, _, _| None);
    sim.run_until(20, |s| s.state.phase == Phase::Running);
    sim.pass(None, true);
    assert!(!sim.deleted);
    for _ in 0..5 {
        sim.tick_agent();
        sim.pass(None, true);
        if sim.deleted {
            break;
        }
    }
    assert!(sim.deleted && sim.replicas.is_empty());
    let delete = sim.log.iter().position(|l| l == "delete").unwrap();
    assert!(sim.log[..delete].iter().any(|l| l.starts_with("stop")));
    assert!(sim.log[..delete].iter().any(|l| l.starts_with("cleanup")));
}

#[test]
fn sim_ttl_after_finish() {
    let mut sim = Sim::new(sim_spec(|s| s.ttl_seconds_after_finished = Some(60)), |_, _, age| (age >= 2).then_some(0));
    sim.run_until(20, Sim::settled);
    let done = sim.state.finished_at.unwrap();
    sim.run_until(20, |s| s.deleted);
    assert!(sim.now - 10 >= done + 60);
    assert!(sim.now - 10 < done + 70);
}

#[test]
fn sim_eviction_then_deadline_while_pending() {
    let mut sim = Sim::new(sim_spec(|s| s.active_deadline_seconds = Some(200)), |_, _, _| None);
    sim.run_until(20, |s| s.state.phase == Phase::Running);
    sim.admit = false;
    sim.pass(Some(Eviction { reason: "GpuFault".into(), message: "Xid 79 on GPU 1".into() }), false);
    sim.run_until(50, Sim::settled);
    assert_eq!((sim.state.phase, sim.state.reason.as_str()), (Phase::Failed, "DeadlineExceeded"));
    assert_eq!((sim.state.restarts, sim.state.uncounted_restarts), (0, 1));
}

/// With authoritative observations (the standalone agent), a replica missing during
/// Starting vanished: it is a failure under the run policy, not something to wait for.
#[test]
fn authoritative_observations_count_a_missing_starting_replica_as_lost() {
    use capstan_core::lifecycle::{plan, GangState, Observed, PassInput, Phase, ReplicaObs};
    let spec = spec();
    let prev = GangState { phase: Phase::Starting, attempt: 1, ..GangState::default() };
    let observed: Vec<Observed> =
        (1..spec.replicas).map(|i| Observed { index: i, attempt: 1, state: ReplicaObs::Running }).collect();
    let lagging = PassInput { observed: observed.clone(), now: 10, ..PassInput::default() };
    assert_eq!(plan(&spec, &prev, &lagging).state.phase, Phase::Starting, "a lagging view waits");
    let complete = PassInput { observed, now: 10, authoritative: true, ..PassInput::default() };
    let p = plan(&spec, &prev, &complete);
    assert_eq!(p.state.phase, Phase::Restarting);
    assert_eq!(p.state.restarts, 1);
    assert!(p.state.message.contains("replica 0 was lost"), "{}", p.state.message);
}
