//! Capstan's pure core: the decisions of the controller as plain functions over values.
//!
//! - [`lifecycle`]: one gang's life (admission, start order, restarts under the run policy,
//!   deadlines, suspension, eviction, deletion, TTL) as `plan(spec, state, observed) -> Plan`.
//! - [`env`]: the rendezvous environment every replica gets.
//!
//! Admission and placement live in `capstan-scheduler`, equally pure.
//!
//! This crate depends on neither kube nor tokio nor any database: the standalone and the
//! Kubernetes controllers map their resources onto these values and carry out the actions.

pub mod env;
pub mod lifecycle;

pub use lifecycle::{plan, Action, GangSpec, GangState, Observed, PassInput, Phase, Plan, ReplicaObs, Slot};
