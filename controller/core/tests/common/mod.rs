//! Builders, a compact rendering of actions, and a tiny simulated agent shared by the
//! lifecycle scenario tests and the property tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use capstan_core::lifecycle::{
    plan, Action, EventType, Eviction, GangSpec, GangState, Observed, PassInput, Phase, Plan, ReplicaObs, RestartRule,
    Slot, StartOrder, SuccessRule, Time,
};

/// Three replicas, OnFailure, backoff 2, all at once, all replicas must succeed, clean all.
pub fn spec() -> GangSpec {
    GangSpec {
        replicas: 3,
        restart: RestartRule::OnFailure,
        backoff_limit: 2,
        active_deadline_seconds: None,
        ttl_seconds_after_finished: None,
        suspend: false,
        start_order: StartOrder::AllAtOnce,
        success: SuccessRule::AllReplicas,
        clean_all_on_finish: true,
        grace_seconds: 30,
    }
}

pub fn slots(n: usize) -> Vec<Slot> {
    (0..n).map(|i| Slot { node: "n0".into(), gpus: vec![i as u32] }).collect()
}

pub fn run(index: u32, attempt: u32) -> Observed {
    Observed { index, attempt, state: ReplicaObs::Running }
}

pub fn exit(index: u32, attempt: u32, code: i32) -> Observed {
    Observed { index, attempt, state: ReplicaObs::Exited { code, reason: format!("exit {code}") } }
}

pub fn missing(index: u32, attempt: u32) -> Observed {
    Observed { index, attempt, state: ReplicaObs::Missing }
}

pub fn evict() -> Eviction {
    Eviction { reason: "Preempted".into(), message: "preempted by a higher-priority gang".into() }
}

/// A state in `phase` at `attempt` with `restarts`, first started at t=100 on 3 slots.
pub fn state(phase: Phase, attempt: u32, restarts: u32) -> GangState {
    GangState {
        phase,
        attempt,
        restarts,
        placement: if attempt > 0 { slots(3) } else { Vec::new() },
        started_at: if attempt > 0 { Some(100) } else { None },
        ..GangState::default()
    }
}

/// One line per action: `start a1 [0, 1]`, `stop a1 [2] g30`, `cleanup a1 [0]`, `delete`,
/// `event Admitted` (Normal) or `warn GangRestart` (Warning).
pub fn render(a: &Action) -> String {
    match a {
        Action::Start { attempt, indices } => format!("start a{attempt} {indices:?}"),
        Action::Stop { attempt, indices, grace_seconds } => format!("stop a{attempt} {indices:?} g{grace_seconds}"),
        Action::Cleanup { attempt, indices } => format!("cleanup a{attempt} {indices:?}"),
        Action::Delete => "delete".into(),
        Action::Event { type_: EventType::Normal, reason, .. } => format!("event {reason}"),
        Action::Event { type_: EventType::Warning, reason, .. } => format!("warn {reason}"),
    }
}

pub fn rendered(p: &Plan) -> Vec<String> {
    p.actions.iter().map(render).collect()
}

/// The safety properties every single pass must keep, whatever the inputs: the violations.
pub fn violations(spec: &GangSpec, prev: &GangState, input: &PassInput, p: &Plan) -> Vec<String> {
    let mut v = Vec::new();
    let s = &p.state;
    if s.restarts < prev.restarts {
        v.push(format!("restarts decreased {} -> {}", prev.restarts, s.restarts));
    }
    if prev.restarts <= spec.backoff_limit && s.restarts > spec.backoff_limit {
        v.push(format!("restarts {} > backoff {}", s.restarts, spec.backoff_limit));
    }
    if prev.phase.is_finished() && s.phase != prev.phase {
        v.push(format!("finished phase changed {:?} -> {:?}", prev.phase, s.phase));
    }
    if (input.evict.is_some() || prev.evicting.is_some()) && s.restarts != prev.restarts {
        v.push("an eviction changed restarts".into());
    }
    for a in &p.actions {
        if let Action::Start { attempt, indices } = a {
            for &i in indices {
                if i >= spec.replicas {
                    v.push(format!("start of index {i} >= replicas {}", spec.replicas));
                }
                if input
                    .observed
                    .iter()
                    .any(|o| o.index == i && o.attempt == *attempt && o.state == ReplicaObs::Running)
                {
                    v.push(format!("start of replica {i} already running in attempt {attempt}"));
                }
            }
            if input.observed.iter().any(|o| o.attempt < *attempt && o.state == ReplicaObs::Running) {
                v.push(format!("start of attempt {attempt} while an older attempt still runs: {:?}", input.observed));
            }
        }
    }
    v
}

/// [`violations`], panicking with `ctx` on any.
pub fn check_pass(spec: &GangSpec, prev: &GangState, input: &PassInput, p: &Plan, ctx: &str) {
    let v = violations(spec, prev, input, p);
    assert!(v.is_empty(), "{ctx}: {}", v.join("; "));
}

/// What the simulated agent should do to a running replica at its `age` (passes since it
/// was first observed running): `Some(code)` makes it exit with that code.
pub type Script = Box<dyn Fn(u32, u32, u32) -> Option<i32>>;

/// A tiny agent: carries out Start/Stop/Cleanup on a map of replicas, lets scripted exits
/// happen, and admits the gang whenever it is pending (unless `admit` is false).
pub struct Sim {
    pub spec: GangSpec,
    pub state: GangState,
    /// (attempt, index) -> (what it does, passes observed running).
    pub replicas: BTreeMap<(u32, u32), (ReplicaObs, u32)>,
    /// Starts carried out but not yet visible to the agent (when `lag`).
    pub starting: Vec<(u32, u32)>,
    pub lag: bool,
    pub admit: bool,
    pub script: Script,
    pub now: Time,
    /// Every Start action, in order.
    pub starts: Vec<(u32, Vec<u32>)>,
    /// Every action, rendered, in order.
    pub log: Vec<String>,
    pub deleted: bool,
    pub passes: u32,
}

impl Sim {
    pub fn new(spec: GangSpec, script: impl Fn(u32, u32, u32) -> Option<i32> + 'static) -> Sim {
        Sim {
            spec,
            state: GangState::default(),
            replicas: BTreeMap::new(),
            starting: Vec::new(),
            lag: false,
            admit: true,
            script: Box::new(script),
            now: 1000,
            starts: Vec::new(),
            log: Vec::new(),
            deleted: false,
            passes: 0,
        }
    }

    pub fn observed(&self) -> Vec<Observed> {
        self.replicas
            .iter()
            .map(|(&(attempt, index), (st, _))| Observed { index, attempt, state: st.clone() })
            .collect()
    }

    pub fn running(&self) -> usize {
        self.replicas.values().filter(|(s, _)| *s == ReplicaObs::Running).count()
    }

    /// Starts become visible and scripted exits happen.
    pub fn tick_agent(&mut self) {
        for (attempt, index) in std::mem::take(&mut self.starting) {
            self.replicas.insert((attempt, index), (ReplicaObs::Running, 0));
        }
        for (&(attempt, index), (st, age)) in self.replicas.iter_mut() {
            if *st == ReplicaObs::Running {
                *age += 1;
                if let Some(code) = (self.script)(attempt, index, *age) {
                    *st = ReplicaObs::Exited { code, reason: format!("exit {code}") };
                }
            }
        }
    }

    /// One reconcile pass with these extra inputs; carries out the plan's actions.
    pub fn pass(&mut self, evict: Option<Eviction>, deleting: bool) -> Plan {
        let observed = self.observed();
        let admission = (self.admit && self.state.phase == Phase::Pending).then(|| slots(self.spec.replicas as usize));
        let input = PassInput {
            observed,
            admission,
            pending_reason: None,
            evict,
            deleting,
            authoritative: false,
            now: self.now,
        };
        let p = plan(&self.spec, &self.state, &input);
        check_pass(&self.spec, &self.state, &input, &p, &format!("pass {}", self.passes));
        assert_eq!(p, plan(&self.spec, &self.state, &input), "plan is not deterministic");
        for a in &p.actions {
            self.log.push(render(a));
            match a {
                Action::Start { attempt, indices } => {
                    self.starts.push((*attempt, indices.clone()));
                    for &i in indices {
                        if self.lag {
                            self.starting.push((*attempt, i));
                        } else {
                            self.replicas.insert((*attempt, i), (ReplicaObs::Running, 0));
                        }
                    }
                }
                Action::Stop { attempt, indices, .. } => {
                    for i in indices {
                        if let Some((st, _)) = self.replicas.get_mut(&(*attempt, *i)) {
                            if *st == ReplicaObs::Running {
                                *st = ReplicaObs::Exited { code: 143, reason: "SIGTERM".into() };
                            }
                        }
                    }
                }
                Action::Cleanup { attempt, indices } => {
                    for i in indices {
                        if matches!(self.replicas.get(&(*attempt, *i)), Some((st, _)) if *st != ReplicaObs::Running) {
                            self.replicas.remove(&(*attempt, *i));
                        }
                    }
                }
                Action::Delete => self.deleted = true,
                Action::Event { .. } => {}
            }
        }
        self.state = p.state.clone();
        self.now += 10;
        self.passes += 1;
        p
    }

    /// Agent tick then pass, until `done` or `max` passes.
    pub fn run_until(&mut self, max: u32, done: impl Fn(&Sim) -> bool) {
        for _ in 0..max {
            if done(self) {
                return;
            }
            self.tick_agent();
            self.pass(None, false);
        }
        assert!(done(self), "not done after {max} passes: {:?}\nlog: {:#?}", self.state, self.log);
    }

    /// Finished, nothing of it runs any more, and (clean_all_on_finish) nothing is left.
    pub fn settled(&self) -> bool {
        self.state.phase.is_finished()
            && self.running() == 0
            && self.starting.is_empty()
            && (!self.spec.clean_all_on_finish || self.replicas.is_empty())
    }

    /// Full-gang starts (AllAtOnce: every index; WorkersFirst: the workers).
    pub fn gang_starts(&self) -> usize {
        let full = match self.spec.start_order {
            StartOrder::WorkersFirst if self.spec.replicas > 1 => self.spec.replicas as usize - 1,
            _ => self.spec.replicas as usize,
        };
        self.starts.iter().filter(|(_, i)| i.len() == full).count()
    }
}
