//! Properties of `lifecycle::plan` over random specs and random histories.

mod common;

use std::collections::BTreeMap;

use capstan_core::lifecycle::{
    plan, Action, GangSpec, GangState, Observed, PassInput, ReplicaObs, RestartRule, StartOrder, SuccessRule,
};
use common::*;
use proptest::prelude::*;

fn arb_spec() -> impl Strategy<Value = GangSpec> {
    (
        0u32..5,
        prop_oneof![Just(RestartRule::Never), Just(RestartRule::OnFailure), Just(RestartRule::ExitCode)],
        0u32..4,
        prop::option::weighted(0.3, prop_oneof![0u64..400, Just(u64::MAX)]),
        prop::option::weighted(0.3, prop_oneof![0u64..200, Just(u64::MAX)]),
        any::<bool>(),
        prop_oneof![Just(StartOrder::AllAtOnce), Just(StartOrder::WorkersFirst)],
        prop_oneof![Just(SuccessRule::AllReplicas), Just(SuccessRule::LauncherOnly)],
        any::<bool>(),
        0u64..60,
    )
        .prop_map(
            |(replicas, restart, backoff_limit, deadline, ttl, suspend, start_order, success, clean, grace)| GangSpec {
                replicas,
                restart,
                backoff_limit,
                active_deadline_seconds: deadline,
                ttl_seconds_after_finished: ttl,
                suspend,
                start_order,
                success,
                clean_all_on_finish: clean,
                grace_seconds: grace,
            },
        )
}

const CODES: [i32; 9] = [0, 1, 3, 127, 128, 137, 143, 255, -1];

/// Something that happens to the simulated agent's replicas before a pass.
#[derive(Debug, Clone)]
enum Mutation {
    /// The n-th known replica exits with CODES[c].
    Exit(usize, usize),
    /// The n-th known replica is reported Missing (agent restart).
    Lose(usize),
    /// The n-th known replica is forgotten altogether.
    Forget(usize),
    /// A replica the controller did not start shows up: index, attempt relative to the
    /// current one (-2..=1), state (0 running, 1 exited CODES[c], 2 missing).
    Ghost(u32, i32, u8, usize),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 0..CODES.len()).prop_map(|(n, c)| Mutation::Exit(n, c)),
        1 => any::<usize>().prop_map(Mutation::Lose),
        1 => any::<usize>().prop_map(Mutation::Forget),
        1 => (0u32..6, -2i32..=1, 0u8..3, 0..CODES.len()).prop_map(|(i, a, k, c)| Mutation::Ghost(i, a, k, c)),
    ]
}

/// The inputs of one step besides the agent's replicas.
#[derive(Debug, Clone)]
struct Step {
    mutations: Vec<Mutation>,
    /// 0: no admission, 1: the right number of slots, 2: a wrong number.
    admission: u8,
    evict: bool,
    deleting: bool,
    toggle_suspend: bool,
    /// Starts that become visible only on the next step.
    lag: bool,
    dt: i64,
}

fn arb_step() -> impl Strategy<Value = Step> {
    (
        prop::collection::vec(arb_mutation(), 0..3),
        prop_oneof![2 => Just(0u8), 3 => Just(1u8), 1 => Just(2u8)],
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.05),
        prop::bool::weighted(0.08),
        any::<bool>(),
        0i64..60,
    )
        .prop_map(|(mutations, admission, evict, deleting, toggle_suspend, lag, dt)| Step {
            mutations,
            admission,
            evict,
            deleting,
            toggle_suspend,
            lag,
            dt,
        })
}

fn nth_key(m: &BTreeMap<(u32, u32), ReplicaObs>, n: usize) -> Option<(u32, u32)> {
    if m.is_empty() {
        None
    } else {
        m.keys().nth(n % m.len()).copied()
    }
}

/// Drive `plan` through `steps` with a simulated agent that obeys the actions but also
/// suffers random exits, losses, forgotten replicas and ghosts; check every pass.
fn drive(mut spec: GangSpec, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut state = GangState::default();
    let mut agent: BTreeMap<(u32, u32), ReplicaObs> = BTreeMap::new();
    let mut later: Vec<(u32, u32)> = Vec::new();
    let mut now = 1_000i64;
    let mut deleting = false;
    for (n, step) in steps.iter().enumerate() {
        for k in later.drain(..) {
            agent.insert(k, ReplicaObs::Running);
        }
        for m in &step.mutations {
            match *m {
                Mutation::Exit(i, c) => {
                    if let Some(k) = nth_key(&agent, i) {
                        if agent[&k] == ReplicaObs::Running {
                            agent.insert(k, ReplicaObs::Exited { code: CODES[c], reason: "x".into() });
                        }
                    }
                }
                Mutation::Lose(i) => {
                    if let Some(k) = nth_key(&agent, i) {
                        agent.insert(k, ReplicaObs::Missing);
                    }
                }
                Mutation::Forget(i) => {
                    if let Some(k) = nth_key(&agent, i) {
                        agent.remove(&k);
                    }
                }
                Mutation::Ghost(index, rel, kind, c) => {
                    let attempt = (state.attempt as i64 + rel as i64).max(0) as u32;
                    let st = match kind {
                        0 => ReplicaObs::Running,
                        1 => ReplicaObs::Exited { code: CODES[c], reason: "ghost".into() },
                        _ => ReplicaObs::Missing,
                    };
                    agent.insert((attempt, index), st);
                }
            }
        }
        if step.toggle_suspend {
            spec.suspend = !spec.suspend;
        }
        deleting |= step.deleting;
        now += step.dt;
        let observed: Vec<Observed> =
            agent.iter().map(|(&(attempt, index), st)| Observed { index, attempt, state: st.clone() }).collect();
        let admission = match step.admission {
            1 => Some(slots(spec.replicas as usize)),
            2 => Some(slots(spec.replicas as usize + 1)),
            _ => None,
        };
        let input = PassInput {
            observed,
            admission,
            pending_reason: Some("queued".into()),
            evict: step.evict.then(evict),
            deleting,
            authoritative: false,
            now,
        };
        let p = plan(&spec, &state, &input);
        // (c) deterministic.
        prop_assert_eq!(&p, &plan(&spec, &state.clone(), &input.clone()));
        // (a), (b), (d), (e), (f).
        check_pass(&spec, &state, &input, &p, &format!("step {n}"));
        prop_assert!(p.state.restarts <= spec.backoff_limit);
        prop_assert!(p.state.attempt >= state.attempt, "attempt went back");
        if p.state.phase.is_finished() && !state.phase.is_finished() {
            prop_assert_eq!(p.state.finished_at, Some(now));
        }
        if state.started_at.is_some() {
            prop_assert_eq!(p.state.started_at, state.started_at, "started_at set once");
        }
        for a in &p.actions {
            match a {
                Action::Start { attempt, indices } => {
                    for &i in indices {
                        if step.lag {
                            later.push((*attempt, i));
                        } else {
                            agent.insert((*attempt, i), ReplicaObs::Running);
                        }
                    }
                }
                Action::Stop { attempt, indices, .. } => {
                    for &i in indices {
                        if agent.get(&(*attempt, i)) == Some(&ReplicaObs::Running) {
                            agent.insert((*attempt, i), ReplicaObs::Exited { code: 143, reason: "stopped".into() });
                        }
                    }
                }
                Action::Cleanup { attempt, indices } => {
                    for &i in indices {
                        if agent.get(&(*attempt, i)).is_some_and(|s| *s != ReplicaObs::Running) {
                            agent.remove(&(*attempt, i));
                        }
                    }
                }
                Action::Delete => {
                    prop_assert!(
                        input.observed.iter().all(|o| o.state != ReplicaObs::Running),
                        "Delete while a replica runs"
                    );
                    if input.deleting {
                        prop_assert!(input.observed.is_empty(), "Delete before every replica was removed");
                    } else {
                        prop_assert!(state.phase.is_finished(), "Delete of an unfinished job");
                    }
                    return Ok(());
                }
                Action::Event { .. } => {}
            }
        }
        state = p.state;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn lifecycle_invariants(spec in arb_spec(), steps in prop::collection::vec(arb_step(), 1..60)) {
        drive(spec, &steps)?;
    }

    /// Purely random observations against random prior states: the single-pass properties
    /// hold even for states and observations no history would produce.
    #[test]
    fn lifecycle_single_pass(
        spec in arb_spec(),
        phase in 0u8..7,
        attempt in 0u32..4,
        restarts in 0u32..4,
        evicting in any::<bool>(),
        obs in prop::collection::vec((0u32..6, 0u32..5, 0u8..3, 0..CODES.len()), 0..8),
        step in arb_step(),
        started in prop::option::of(0i64..2000),
        finished in prop::option::of(0i64..2000),
    ) {
        use capstan_core::Phase::*;
        let phase = [Pending, Starting, Running, Restarting, Succeeded, Failed, Suspended][phase as usize];
        let prev = GangState {
            phase,
            attempt,
            restarts: restarts.min(spec.backoff_limit),
            started_at: started,
            finished_at: finished,
            evicting: evicting.then(evict),
            ..GangState::default()
        };
        let observed: Vec<Observed> = obs
            .iter()
            .map(|&(index, attempt, kind, c)| Observed {
                index,
                attempt,
                state: match kind {
                    0 => ReplicaObs::Running,
                    1 => ReplicaObs::Exited { code: CODES[c], reason: "r".into() },
                    _ => ReplicaObs::Missing,
                },
            })
            .collect();
        let input = PassInput {
            observed,
            admission: match step.admission {
                1 => Some(slots(spec.replicas as usize)),
                2 => Some(slots(spec.replicas as usize + 1)),
                _ => None,
            },
            pending_reason: None,
            evict: step.evict.then(evict),
            deleting: step.deleting,
            // Both kinds of backend: the properties hold whether or not the view is complete.
            authoritative: step.dt % 2 == 0,
            now: 2000 + step.dt,
        };
        let p = plan(&spec, &prev, &input);
        prop_assert_eq!(&p, &plan(&spec, &prev, &input));
        check_pass(&spec, &prev, &input, &p, "single pass");
    }

    /// Same inputs with and without an eviction request: restarts are the same as before.
    #[test]
    fn eviction_never_counts(spec in arb_spec(), steps in prop::collection::vec(arb_step(), 1..30)) {
        let mut state = GangState::default();
        let mut spec = spec;
        spec.suspend = false;
        // Drive to some state first, with the agent obeying.
        let mut observed: Vec<Observed> = Vec::new();
        for (n, s) in steps.iter().enumerate() {
            let input = PassInput {
                observed: observed.clone(),
                admission: Some(slots(spec.replicas as usize)),
                pending_reason: None,
                evict: None,
                deleting: false, authoritative: false,
                now: 1000 + n as i64,
            };
            let with = plan(&spec, &state, &PassInput { evict: Some(evict()), ..input.clone() });
            prop_assert_eq!(with.state.restarts, state.restarts);
            let p = plan(&spec, &state, &input);
            // The agent starts what it is told; a scripted failure hits the first replica.
            for a in &p.actions {
                match a {
                    Action::Start { attempt, indices } => {
                        observed.extend(indices.iter().map(|&i| run(i, *attempt)));
                    }
                    Action::Stop { attempt, indices, .. } => {
                        for o in observed.iter_mut().filter(|o| o.attempt == *attempt && indices.contains(&o.index)) {
                            o.state = ReplicaObs::Exited { code: 143, reason: "stopped".into() };
                        }
                    }
                    Action::Cleanup { attempt, indices } => {
                        observed.retain(|o| !(o.attempt == *attempt && indices.contains(&o.index)));
                    }
                    _ => {}
                }
            }
            if let Some(Mutation::Exit(i, c)) = s.mutations.first() {
                let len = observed.len();
                if len > 0 && observed[i % len].state == ReplicaObs::Running {
                    observed[i % len].state = ReplicaObs::Exited { code: CODES[*c], reason: "x".into() };
                }
            }
            state = p.state;
        }
    }
}
