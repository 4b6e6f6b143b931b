//! Scenario tests, one table per rule of the scheduler: a cluster, queues, running and
//! pending gangs, and what must come out (in the style of jobset's success-policy tests).

mod support;

use capstan_scheduler::{schedule, Node, PendingGang, QueueDef, Reclaim, RunningGang, Snapshot};
use support::*;

/// What a case expects of one gang.
#[derive(Debug)]
enum Want {
    /// Admitted with one replica on each of these nodes, in replica order.
    Admit(&'static str, &'static [&'static str]),
    /// Admitted on exactly these (node, GPUs) slots.
    AdmitGpus(&'static str, &'static [(&'static str, &'static [u32])]),
    /// Admitted beyond nominal quota (borrowing) or not.
    Borrowed(&'static str, bool),
    /// Pending, the reason containing this text.
    Pending(&'static str, &'static str),
    /// Pending with exactly this reason.
    Reason(&'static str, &'static str),
    /// Pending at this position in its queue.
    Position(&'static str, u32),
    /// This running gang is preempted for that pending gang. A case that lists no
    /// `Preempt` expects no preemption at all.
    Preempt(&'static str, &'static str),
}
use Want::*;

struct Case {
    name: &'static str,
    nodes: Vec<Node>,
    queues: Vec<QueueDef>,
    running: Vec<RunningGang>,
    pending: Vec<PendingGang>,
    want: Vec<Want>,
}

fn run_cases(cases: Vec<Case>) {
    for c in cases {
        let s = Snapshot { nodes: c.nodes, queues: c.queues, running: c.running, pending: c.pending, now: 1_000 };
        let ds = schedule(&s);
        check_invariants(&s, &ds);
        assert_eq!(ds, schedule(&s), "{}: not deterministic", c.name);
        let o = outcome(&ds);
        let ctx = |what: &str| format!("case {:?}: {what}\ndecisions: {ds:#?}", c.name);
        let mut want_preempt = std::collections::BTreeMap::new();
        for w in &c.want {
            match w {
                Admit(g, nodes) => {
                    let (pl, _) = o.admit.get(*g).unwrap_or_else(|| panic!("{}", ctx(&format!("{g} not admitted"))));
                    let got: Vec<&str> = pl.iter().map(|s| s.node.as_str()).collect();
                    assert_eq!(&got, nodes, "{}", ctx(&format!("{g} placement")));
                }
                AdmitGpus(g, slots) => {
                    let (pl, _) = o.admit.get(*g).unwrap_or_else(|| panic!("{}", ctx(&format!("{g} not admitted"))));
                    let got: Vec<(&str, &[u32])> = pl.iter().map(|s| (s.node.as_str(), s.gpus.as_slice())).collect();
                    assert_eq!(&got, slots, "{}", ctx(&format!("{g} slots")));
                }
                Borrowed(g, b) => {
                    let (_, got) = o.admit.get(*g).unwrap_or_else(|| panic!("{}", ctx(&format!("{g} not admitted"))));
                    assert_eq!(got, b, "{}", ctx(&format!("{g} borrowed")));
                }
                Pending(g, text) => {
                    let (r, _) = o.pending.get(*g).unwrap_or_else(|| panic!("{}", ctx(&format!("{g} not pending"))));
                    assert!(r.contains(text), "{}", ctx(&format!("{g}: reason {r:?} lacks {text:?}")));
                }
                Reason(g, text) => {
                    let (r, _) = o.pending.get(*g).unwrap_or_else(|| panic!("{}", ctx(&format!("{g} not pending"))));
                    assert_eq!(r, text, "{}", ctx(&format!("{g} reason")));
                }
                Position(g, pos) => {
                    let (_, p) = o.pending.get(*g).unwrap_or_else(|| panic!("{}", ctx(&format!("{g} not pending"))));
                    assert_eq!(p, pos, "{}", ctx(&format!("{g} position")));
                }
                Preempt(v, f) => {
                    want_preempt.insert(v.to_string(), f.to_string());
                }
            }
        }
        let got: std::collections::BTreeMap<String, String> =
            o.preempt.iter().map(|(v, (f, _))| (v.clone(), f.clone())).collect();
        assert_eq!(got, want_preempt, "{}", ctx("preemptions"));
    }
}

fn cohort_queue(name: &str, nominal: u32) -> QueueDef {
    in_cohort(queue(name, nominal), "research")
}

/// Rule 1: all replicas placed or none, never a partial gang holding GPUs.
#[test]
fn gangs_are_all_or_nothing() {
    run_cases(vec![
        Case {
            name: "every replica fits: all placed",
            nodes: vec![node("n1", 4), node("n2", 4)],
            queues: vec![queue("a", 100)],
            running: vec![],
            pending: vec![job("g", "a", 2, 4)],
            want: vec![Admit("g", &["n1", "n2"])],
        },
        Case {
            name: "one replica short: nothing placed, the rest of the cluster stays free",
            nodes: vec![node("n1", 4), node("n2", 4)],
            queues: vec![queue("a", 100)],
            running: vec![],
            pending: vec![job("big", "a", 3, 4), submitted(job("small", "a", 1, 4), 1)],
            want: vec![
                Reason("big", "needs 3 x 4 H100 (12 GPUs): never fits: only 8 healthy H100 GPUs on schedulable nodes"),
                Admit("small", &["n1"]),
            ],
        },
        Case {
            name: "replicas that fit only partly now: none placed",
            nodes: vec![node("n1", 8), node("n2", 8)],
            queues: vec![queue("a", 100)],
            running: vec![running("r", "a", 9, &[("n2", &[0, 1, 2, 3])])],
            pending: vec![job("g", "a", 2, 8)],
            want: vec![Reason(
                "g",
                "needs 2 x 8 H100 (16 GPUs): 12 free; next for H100: 2 nodes held for it (12 free GPUs now) so \
                 smaller gangs cannot delay it",
            )],
        },
    ]);
}

/// Rule 2: packing and topology.
#[test]
fn packing_and_topology() {
    let two_racks = || {
        vec![
            at(node("a1", 8), "b1", "r1"),
            at(node("b1", 8), "b1", "r2"),
            at(node("b2", 8), "b1", "r2"),
            at(node("c1", 8), "b2", "r3"),
        ]
    };
    run_cases(vec![
        Case {
            name: "a replica of 8 takes a whole 8-GPU node",
            nodes: vec![node("n1", 8), node("n2", 8)],
            queues: vec![queue("a", 100)],
            running: vec![running("r", "a", 0, &[("n1", &[0])])],
            pending: vec![job("g", "a", 1, 8)],
            want: vec![AdmitGpus("g", &[("n2", &[0, 1, 2, 3, 4, 5, 6, 7])])],
        },
        Case {
            name: "best fit: a small gang fills a hole instead of breaking a whole node",
            nodes: vec![node("n1", 8), node("n2", 8)],
            queues: vec![queue("a", 100)],
            running: vec![running("r", "a", 0, &[("n2", &[0, 1, 2, 3, 4, 5])])],
            pending: vec![job("g", "a", 1, 2)],
            want: vec![AdmitGpus("g", &[("n2", &[6, 7])])],
        },
        Case {
            name: "fewest nodes: 2x4 on one node with 8 free rather than two with 4",
            nodes: vec![node("n1", 8), node("n2", 8), node("n3", 8)],
            queues: vec![queue("a", 100)],
            running: vec![
                running("r2", "a", 0, &[("n2", &[0, 1, 2, 3])]),
                running("r3", "a", 0, &[("n3", &[0, 1, 2, 3])]),
            ],
            pending: vec![job("g", "a", 2, 4)],
            want: vec![AdmitGpus("g", &[("n1", &[0, 1, 2, 3]), ("n1", &[4, 5, 6, 7])])],
        },
        Case {
            name: "same rack before spreading",
            nodes: two_racks(),
            queues: vec![queue("a", 100)],
            running: vec![],
            pending: vec![job("g", "a", 2, 8)],
            want: vec![Admit("g", &["b1", "b2"])],
        },
        Case {
            name: "same block before spreading",
            nodes: vec![
                at(node("a1", 8), "b1", "r1"),
                at(node("c1", 8), "b2", "r3"),
                at(node("d1", 8), "b2", "r4"),
                at(node("e1", 8), "b3", "r5"),
            ],
            queues: vec![queue("a", 100)],
            running: vec![],
            pending: vec![job("g", "a", 2, 8)],
            want: vec![Admit("g", &["c1", "d1"])],
        },
        Case {
            name: "the tightest rack that holds the gang, keeping the emptier rack whole",
            nodes: vec![
                at(node("a1", 8), "b1", "r1"),
                at(node("a2", 8), "b1", "r1"),
                at(node("a3", 8), "b1", "r1"),
                at(node("b1", 8), "b1", "r2"),
                at(node("b2", 8), "b1", "r2"),
            ],
            queues: vec![queue("a", 100)],
            running: vec![],
            pending: vec![job("g", "a", 2, 8)],
            want: vec![Admit("g", &["b1", "b2"])],
        },
        Case {
            name: "spread over blocks only when no block holds it",
            nodes: two_racks(),
            queues: vec![queue("a", 100)],
            running: vec![],
            pending: vec![job("g", "a", 4, 8)],
            want: vec![Admit("g", &["a1", "b1", "b2", "c1"])],
        },
        Case {
            name: "kueue#4329: 8 free as 4+4 do not hold a 1x8 gang that fits quota",
            nodes: vec![node("n1", 8), node("n2", 8)],
            queues: vec![queue("a", 8), queue("other", 8)],
            running: vec![
                running("r1", "other", 0, &[("n1", &[0, 1, 2, 3])]),
                running("r2", "other", 0, &[("n2", &[0, 1, 2, 3])]),
            ],
            pending: vec![job("g", "a", 1, 8)],
            want: vec![Reason(
                "g",
                "needs 1 x 8 H100 (8 GPUs): 8 free, fragmented: at most 0 replicas of 8 fit (largest free on one node: 4); \
                 next for H100: 1 node held for it (4 free GPUs now) so smaller gangs cannot delay it",
            )],
        },
        Case {
            name: "kueue#4329: the same 8 GPUs as 2x4 are placed",
            nodes: vec![node("n1", 8), node("n2", 8)],
            queues: vec![queue("a", 8), queue("other", 8)],
            running: vec![
                running("r1", "other", 0, &[("n1", &[0, 1, 2, 3])]),
                running("r2", "other", 0, &[("n2", &[0, 1, 2, 3])]),
            ],
            pending: vec![job("g", "a", 2, 4)],
            want: vec![AdmitGpus("g", &[("n1", &[4, 5, 6, 7]), ("n2", &[4, 5, 6, 7])])],
        },
        Case {
            name: "unhealthy GPUs are never used",
            nodes: vec![sick(node("n1", 8), &[3])],
            queues: vec![queue("a", 100)],
            running: vec![],
            pending: vec![job("whole", "a", 1, 8), submitted(job("seven", "a", 1, 7), 1)],
            want: vec![
                Reason(
                    "whole",
                    "needs 1 x 8 H100 (8 GPUs): never fits: only 7 healthy H100 GPUs on schedulable nodes \
                     (1 unhealthy GPU excluded)",
                ),
                AdmitGpus("seven", &[("n1", &[0, 1, 2, 4, 5, 6, 7])]),
            ],
        },
        Case {
            name: "an unschedulable node gets nothing new",
            nodes: vec![Node { schedulable: false, ..node("n1", 8) }, node("n2", 8)],
            queues: vec![queue("a", 100)],
            running: vec![],
            pending: vec![job("g", "a", 1, 8), submitted(job("h", "a", 1, 8), 1)],
            want: vec![Admit("g", &["n2"]), Pending("h", "needs 1 x 8 H100 (8 GPUs): 0 free")],
        },
    ]);
}

/// Rule 3: nominal quota per product, cohorts lending up to the limits, reclaim.
#[test]
fn queues_and_quota() {
    run_cases(vec![
        Case {
            name: "nominal quota caps a queue without a cohort",
            nodes: vec![node("n1", 8), node("n2", 8)],
            queues: vec![queue("a", 8)],
            running: vec![],
            pending: vec![job("a1", "a", 1, 8), submitted(job("a2", "a", 1, 8), 1)],
            want: vec![
                Admit("a1", &["n1"]),
                Borrowed("a1", false),
                Reason("a2", "needs 8 H100 in queue a: 0 free (8 in use of nominal 8, no cohort to borrow from)"),
            ],
        },
        Case {
            name: "more than the queue may ever use",
            nodes: vec![node("n1", 8), node("n2", 8)],
            queues: vec![queue("a", 8)],
            running: vec![],
            pending: vec![job("g", "a", 2, 8)],
            want: vec![Reason(
                "g",
                "needs 16 H100 but queue a has a nominal quota of 8 and no cohort to borrow from",
            )],
        },
        Case {
            name: "no quota for the product",
            nodes: vec![node("n1", 8)],
            queues: vec![QueueDef { quotas: vec![], ..queue("a", 0) }],
            running: vec![],
            pending: vec![job("g", "a", 1, 1)],
            want: vec![Reason("g", "queue a has no quota for H100")],
        },
        Case {
            name: "the cohort lends unused quota",
            nodes: vec![node("n1", 8), node("n2", 8)],
            queues: vec![cohort_queue("a", 8), cohort_queue("b", 8)],
            running: vec![],
            pending: vec![job("a1", "a", 1, 8), submitted(job("a2", "a", 1, 8), 1)],
            want: vec![Admit("a1", &["n1"]), Borrowed("a1", false), Admit("a2", &["n2"]), Borrowed("a2", true)],
        },
        Case {
            name: "borrowing limit",
            nodes: vec![node("n1", 8), node("n2", 8), node("n3", 8)],
            queues: vec![
                {
                    let mut q = cohort_queue("a", 8);
                    q.quotas[0].borrowing_limit = Some(4);
                    q
                },
                cohort_queue("b", 16),
            ],
            running: vec![],
            pending: vec![
                job("a1", "a", 1, 8),
                submitted(job("a2", "a", 1, 8), 1),
                submitted(job("a3", "a", 1, 4), 2),
            ],
            want: vec![
                Admit("a1", &["n1"]),
                Reason("a2", "needs 8 H100 in queue a: 4 free (8 in use of nominal 8, borrowing limit 4)"),
                Borrowed("a3", true),
            ],
        },
        Case {
            name: "lending limit",
            nodes: vec![node("n1", 8), node("n2", 8), node("n3", 8)],
            queues: vec![cohort_queue("a", 8), {
                let mut q = cohort_queue("b", 16);
                q.quotas[0].lending_limit = Some(4);
                q
            }],
            running: vec![],
            pending: vec![
                job("a1", "a", 1, 8),
                submitted(job("a2", "a", 1, 8), 1),
                submitted(job("a3", "a", 1, 4), 2),
            ],
            want: vec![
                Admit("a1", &["n1"]),
                Reason("a2", "needs 8 H100 in queue a: 4 free (8 in use of nominal 8, cohort research has 4 of 12 lendable free)"),
                Borrowed("a3", true),
            ],
        },
        Case {
            name: "the owner reclaims borrowed quota",
            nodes: vec![node("n1", 8), node("n2", 8)],
            queues: vec![cohort_queue("team-a", 16), cohort_queue("team-b", 0)],
            running: vec![running("b-job", "team-b", 0, &[("n1", &gpus_static::ALL8)])],
            pending: vec![job("a-job", "team-a", 2, 8)],
            want: vec![
                Reason(
                    "a-job",
                    "needs 16 H100 in queue team-a: 8 free, 8 lent to team-b, reclaimable; \
                     preempting 1 gang (b-job); admitted once it has stopped",
                ),
                Preempt("b-job", "a-job"),
            ],
        },
        Case {
            name: "reclaim Never waits for the borrower",
            nodes: vec![node("n1", 8), node("n2", 8)],
            queues: vec![QueueDef { reclaim: Reclaim::Never, ..cohort_queue("team-a", 16) }, cohort_queue("team-b", 0)],
            running: vec![running("b-job", "team-b", 0, &[("n1", &gpus_static::ALL8)])],
            pending: vec![job("a-job", "team-a", 2, 8)],
            want: vec![Reason(
                "a-job",
                "needs 16 H100 in queue team-a: 8 free, 8 lent to team-b, not reclaimable (reclaim: Never)",
            )],
        },
        Case {
            name: "reclaim LowerPriority spares a borrower of equal priority",
            nodes: vec![node("n1", 8), node("n2", 8)],
            queues: vec![
                QueueDef { reclaim: Reclaim::LowerPriority, ..cohort_queue("team-a", 16) },
                cohort_queue("team-b", 0),
            ],
            running: vec![running("b-job", "team-b", 0, &[("n1", &gpus_static::ALL8)])],
            pending: vec![job("a-job", "team-a", 2, 8)],
            want: vec![Pending("a-job", "8 lent to team-b, reclaimable from lower-priority gangs")],
        },
        Case {
            name: "a borrower does not reclaim",
            nodes: vec![node("n1", 8), node("n2", 8)],
            queues: vec![cohort_queue("team-a", 8), cohort_queue("team-b", 8)],
            running: vec![
                running("a-run", "team-a", 0, &[("n1", &gpus_static::ALL8)]),
                running("b-run", "team-b", 0, &[("n2", &gpus_static::ALL8)]),
            ],
            pending: vec![job("a-more", "team-a", 1, 8)],
            want: vec![Pending("a-more", "needs 8 H100 in queue team-a: 0 free")],
        },
        Case {
            name: "quota is per product; `*` covers the products not listed",
            nodes: vec![node("n1", 8), Node { product: A100.into(), ..node("m1", 8) }],
            queues: vec![QueueDef {
                quotas: vec![
                    capstan_scheduler::Quota { product: H100.into(), nominal: 0, borrowing_limit: None, lending_limit: None },
                    capstan_scheduler::Quota { product: "*".into(), nominal: 8, borrowing_limit: None, lending_limit: None },
                ],
                ..queue("a", 0)
            }],
            running: vec![],
            pending: vec![
                job("h", "a", 1, 8),
                PendingGang {
                    shape: capstan_scheduler::GangShape { product: None, ..job("any", "a", 1, 8).shape },
                    ..submitted(job("any", "a", 1, 8), 1)
                },
            ],
            want: vec![Pending("h", "needs 8 H100 but queue a has a nominal quota of 0"), Admit("any", &["m1"])],
        },
    ]);
}

mod gpus_static {
    pub const ALL8: [u32; 8] = [0, 1, 2, 3, 4, 5, 6, 7];
}

/// Rule 4: priority, then weighted fair share, then submission time; backfill only when
/// it does not delay the head.
#[test]
fn order_and_fairness() {
    run_cases(vec![
        Case {
            name: "priority first within a queue",
            nodes: vec![node("n1", 8)],
            queues: vec![QueueDef { preempt_within_queue: false, ..queue("a", 100) }],
            running: vec![],
            pending: vec![job("low", "a", 1, 8), submitted(prio(job("high", "a", 1, 8), 5), 9)],
            want: vec![Admit("high", &["n1"]), Position("low", 1)],
        },
        Case {
            name: "priority first across queues, whatever the shares",
            nodes: vec![node("n1", 8), node("n2", 8)],
            queues: vec![queue("a", 100), queue("b", 100)],
            running: vec![running("a-run", "a", 0, &[("n1", &gpus_static::ALL8)])],
            pending: vec![job("b-low", "b", 1, 8), prio(job("a-high", "a", 1, 8), 1)],
            want: vec![Admit("a-high", &["n2"]), Pending("b-low", "needs 1 x 8 H100 (8 GPUs): 0 free")],
        },
        Case {
            name: "fair share: the queue with the lower share goes first",
            nodes: vec![node("n1", 8), node("n2", 8)],
            queues: vec![queue("a", 100), queue("b", 100)],
            running: vec![running("a-run", "a", 0, &[("n1", &gpus_static::ALL8)])],
            pending: vec![job("a-next", "a", 1, 8), submitted(job("b-next", "b", 1, 8), 50)],
            want: vec![Admit("b-next", &["n2"]), Pending("a-next", "8 given this pass to gangs ahead in order")],
        },
        Case {
            name: "fair share is weighted",
            nodes: vec![node("n1", 8), node("n2", 8), node("n3", 8)],
            queues: vec![QueueDef { weight: 4, ..queue("a", 100) }, queue("b", 100)],
            running: vec![
                running("a-run", "a", 0, &[("n1", &gpus_static::ALL8)]),
                running("b-run", "b", 0, &[("n2", &[0, 1, 2, 3])]),
            ],
            pending: vec![submitted(job("a-next", "a", 1, 8), 50), job("b-next", "b", 1, 8)],
            want: vec![Admit("a-next", &["n3"]), Pending("b-next", "needs 1 x 8 H100 (8 GPUs): 4 free")],
        },
        Case {
            name: "submission time within a queue",
            nodes: vec![node("n1", 8)],
            queues: vec![queue("a", 100)],
            running: vec![],
            pending: vec![submitted(job("later", "a", 1, 8), 2), submitted(job("earlier", "a", 1, 8), 1)],
            want: vec![Admit("earlier", &["n1"]), Position("later", 1)],
        },
        Case {
            name: "backfill around a blocked head only where it cannot delay it",
            nodes: vec![node("n1", 8), node("n2", 8)],
            queues: vec![queue("a", 100)],
            running: vec![
                running("r1", "a", 0, &[("n1", &[0, 1, 2, 3])]),
                running("r2", "a", 0, &[("n2", &[0, 1, 2, 3, 4, 5])]),
            ],
            pending: vec![
                submitted(job("head", "a", 1, 8), 1),
                submitted(job("fits-beside", "a", 1, 2), 2),
                submitted(job("would-delay", "a", 1, 4), 3),
            ],
            want: vec![
                Reason(
                    "head",
                    "needs 1 x 8 H100 (8 GPUs): 6 free; next for H100: 1 node held for it (4 free GPUs now) so smaller \
                     gangs cannot delay it",
                ),
                Position("head", 1),
                AdmitGpus("fits-beside", &[("n2", &[6, 7])]),
                Reason(
                    "would-delay",
                    "needs 1 x 4 H100 (4 GPUs): 0 free; 2 given this pass to gangs ahead in order; \
                     4 held for head (ahead in order)",
                ),
                Position("would-delay", 2),
            ],
        },
        Case {
            name: "a borrowing gang waits until owners within nominal had their turn",
            nodes: vec![node("n1", 8)],
            queues: vec![cohort_queue("a", 0), cohort_queue("b", 8)],
            running: vec![],
            pending: vec![job("a-borrow", "a", 1, 8), submitted(job("b-own", "b", 1, 8), 5)],
            want: vec![Admit("b-own", &["n1"]), Pending("a-borrow", "needs 8 H100 in queue a: 0 free")],
        },
    ]);
}

/// Rule 5: preemption within a queue and to reclaim, victims losing the least work.
#[test]
fn preemption() {
    let one_node = || vec![node("n1", 8)];
    run_cases(vec![
        Case {
            name: "a higher-priority gang preempts a lower one in its queue",
            nodes: one_node(),
            queues: vec![queue("a", 100)],
            running: vec![running("low", "a", 0, &[("n1", &gpus_static::ALL8)])],
            pending: vec![prio(job("high", "a", 1, 8), 5)],
            want: vec![
                Preempt("low", "high"),
                Reason(
                    "high",
                    "needs 1 x 8 H100 (8 GPUs): 0 free; preempting 1 gang (low); admitted once it has stopped",
                ),
            ],
        },
        Case {
            name: "no preemption when the queue does not allow it",
            nodes: one_node(),
            queues: vec![QueueDef { preempt_within_queue: false, ..queue("a", 100) }],
            running: vec![running("low", "a", 0, &[("n1", &gpus_static::ALL8)])],
            pending: vec![prio(job("high", "a", 1, 8), 5)],
            want: vec![Pending("high", "0 free")],
        },
        Case {
            name: "no preemption of equal priority",
            nodes: one_node(),
            queues: vec![queue("a", 100)],
            running: vec![running("same", "a", 5, &[("n1", &gpus_static::ALL8)])],
            pending: vec![prio(job("high", "a", 1, 8), 5)],
            want: vec![Pending("high", "0 free")],
        },
        Case {
            name: "no preemption across queues that do not borrow",
            nodes: one_node(),
            queues: vec![cohort_queue("a", 8), cohort_queue("b", 8)],
            running: vec![running("b-low", "b", 0, &[("n1", &gpus_static::ALL8)])],
            pending: vec![prio(job("a-high", "a", 1, 8), 5)],
            want: vec![Pending("a-high", "0 free")],
        },
        Case {
            name: "victims: the lowest priority first",
            nodes: vec![node("n1", 8), node("n2", 8)],
            queues: vec![queue("a", 100)],
            running: vec![
                running("p1", "a", 1, &[("n1", &gpus_static::ALL8)]),
                running("p0", "a", 0, &[("n2", &gpus_static::ALL8)]),
            ],
            pending: vec![prio(job("high", "a", 1, 8), 5)],
            want: vec![Preempt("p0", "high")],
        },
        Case {
            name: "victims: then the most recent checkpoint",
            nodes: vec![node("n1", 8), node("n2", 8)],
            queues: vec![queue("a", 100)],
            running: vec![
                RunningGang {
                    last_checkpoint: Some(900),
                    ..running("saved-late", "a", 0, &[("n1", &gpus_static::ALL8)])
                },
                RunningGang {
                    last_checkpoint: Some(100),
                    ..running("saved-early", "a", 0, &[("n2", &gpus_static::ALL8)])
                },
            ],
            pending: vec![prio(job("high", "a", 1, 8), 5)],
            want: vec![Preempt("saved-late", "high")],
        },
        Case {
            name: "victims: then the youngest",
            nodes: vec![node("n1", 8), node("n2", 8)],
            queues: vec![queue("a", 100)],
            running: vec![
                RunningGang { started_at: 10, ..running("old", "a", 0, &[("n1", &gpus_static::ALL8)]) },
                RunningGang { started_at: 500, ..running("young", "a", 0, &[("n2", &gpus_static::ALL8)]) },
            ],
            pending: vec![prio(job("high", "a", 1, 8), 5)],
            want: vec![Preempt("young", "high")],
        },
        Case {
            name: "only the victims needed; the gang's claim is not given to later gangs",
            nodes: vec![node("n1", 8), node("n2", 8)],
            queues: vec![queue("a", 100), queue("b", 100)],
            running: vec![
                RunningGang { started_at: 900, ..running("v-young", "a", 0, &[("n1", &[0, 1, 2, 3])]) },
                RunningGang { started_at: 100, ..running("v-old", "a", 0, &[("n2", &[0, 1, 2, 3])]) },
            ],
            pending: vec![prio(job("high", "a", 1, 8), 5), job("b-small", "b", 1, 4)],
            want: vec![
                Preempt("v-young", "high"),
                Pending("high", "preempting 1 gang (v-young)"),
                AdmitGpus("b-small", &[("n2", &[4, 5, 6, 7])]),
            ],
        },
        Case {
            name: "reclaim spares borrowers that are not needed and gangs within nominal",
            nodes: vec![node("n1", 8), node("n2", 8), node("n3", 8)],
            queues: vec![cohort_queue("a", 16), cohort_queue("b", 8)],
            running: vec![
                running("b-own", "b", 0, &[("n1", &gpus_static::ALL8)]),
                RunningGang { started_at: 10, ..running("b-borrow1", "b", 0, &[("n2", &[0, 1, 2, 3])]) },
                RunningGang { started_at: 20, ..running("b-borrow2", "b", 0, &[("n2", &[4, 5, 6, 7])]) },
            ],
            pending: vec![job("a-job", "a", 2, 8)],
            want: vec![
                Preempt("b-borrow1", "a-job"),
                Preempt("b-borrow2", "a-job"),
                Pending("a-job", "preempting 2 gangs (b-borrow2, b-borrow1)"),
            ],
        },
    ]);
}

/// Rule 6: every pending gang has a reason with the numbers and its position.
#[test]
fn explanations() {
    run_cases(vec![
        Case {
            name: "positions count the pending gangs of each queue",
            nodes: vec![node("n1", 8)],
            queues: vec![QueueDef { preempt_within_queue: false, ..queue("a", 100) }, queue("b", 100)],
            running: vec![running("r", "a", 0, &[("n1", &gpus_static::ALL8)])],
            pending: vec![
                submitted(job("a1", "a", 1, 8), 1),
                submitted(job("a2", "a", 1, 8), 2),
                prio(submitted(job("a0", "a", 1, 8), 3), 1),
                submitted(job("b1", "b", 1, 8), 1),
            ],
            want: vec![Position("a0", 1), Position("a1", 2), Position("a2", 3), Position("b1", 1)],
        },
        Case {
            name: "invalid input is pending with a reason",
            nodes: vec![node("n1", 8)],
            queues: vec![queue("a", 100)],
            running: vec![],
            pending: vec![
                job("lost", "nope", 1, 1),
                PendingGang {
                    shape: capstan_scheduler::GangShape { product: Some("TPU".into()), ..job("x", "a", 1, 1).shape },
                    ..job("tpu", "a", 1, 1)
                },
                job("empty", "a", 0, 1),
            ],
            want: vec![
                Reason("lost", "queue nope does not exist"),
                Reason("tpu", "no node has TPU GPUs"),
                Reason("empty", "replicas must be at least 1"),
            ],
        },
        Case {
            name: "unhealthy GPUs are named",
            nodes: vec![sick(node("n1", 8), &[0, 1]), node("n2", 8)],
            queues: vec![queue("a", 100)],
            running: vec![running("r", "a", 0, &[("n2", &gpus_static::ALL8)])],
            pending: vec![job("g", "a", 1, 8)],
            want: vec![Reason(
                "g",
                "needs 1 x 8 H100 (8 GPUs): 6 free; 2 unhealthy GPUs excluded; next for H100: \
                 1 node held for it (0 free GPUs now) so smaller gangs cannot delay it",
            )],
        },
    ]);
}
