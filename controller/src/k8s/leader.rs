//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go's leaderelection
//! does it: the holder renews the Lease every `renew` interval; a candidate takes it over only
//! once `renewTime + leaseDurationSeconds` has passed. Every write carries the
//! resourceVersion it read, so two candidates can never both win (the API server refuses the
//! second with 409). The chart runs two controller replicas; one reconciles, one waits.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;

/// Seconds a Lease stays valid without renewal.
pub const LEASE_SECONDS: i32 = 15;
/// How often the holder renews, and a candidate retries.
pub const RETRY: Duration = Duration::from_secs(2);

/// What a candidate should do with the Lease it read, at `now` (pure: unit-tested).
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It is ours: renew it.
    Renew,
    /// It is free or expired: take it.
    Acquire,
    /// Someone else holds it.
    Wait,
}

/// Decide from the Lease's holder and renew time.
pub fn verdict(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Verdict {
    let Some(spec) = spec else { return Verdict::Acquire };
    match spec.holder_identity.as_deref() {
        Some(h) if h == me => Verdict::Renew,
        None | Some("") => Verdict::Acquire,
        Some(_) => {
            let duration = spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS) as i64;
            match &spec.renew_time {
                Some(t) if t.0.as_second() + duration > now.as_second() => Verdict::Wait,
                _ => Verdict::Acquire,
            }
        }
    }
}

/// Campaign for the Lease forever; `leader` turns true while this process holds it.
pub async fn campaign(client: Client, namespace: String, name: String, me: String, leader: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let mut last_renewal: Option<std::time::Instant> = None;
    loop {
        let held = match try_once(&api, &name, &me).await {
            Ok(true) => {
                last_renewal = Some(std::time::Instant::now());
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(error = %e, "leader election: Lease request failed");
                // Still the leader while our last renewal keeps the Lease valid (less a margin).
                let valid = Duration::from_secs(LEASE_SECONDS as u64) - RETRY * 2;
                *leader.borrow() && last_renewal.is_some_and(|t| t.elapsed() < valid)
            }
        };
        if held != *leader.borrow() {
            tracing::info!(identity = %me, leader = held, "leader election");
            let _ = leader.send(held);
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn try_once(api: &Api<Lease>, name: &str, me: &str) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let current = api.get_opt(name).await?;
    let v = verdict(current.as_ref().and_then(|l| l.spec.as_ref()), me, now);
    let renewing = v == Verdict::Renew;
    let fresh = |prev: Option<&LeaseSpec>, transitions: i32| LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(LEASE_SECONDS),
        acquire_time: match prev {
            Some(p) if renewing => p.acquire_time.clone(),
            _ => Some(MicroTime(now)),
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    match (current, v) {
        (_, Verdict::Wait) => Ok(false),
        (None, _) => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(name.to_string()), ..Default::default() },
                spec: Some(fresh(None, 0)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        (Some(mut lease), v) => {
            let prev = lease.spec.clone();
            let transitions = prev.as_ref().and_then(|p| p.lease_transitions).unwrap_or(0)
                + if v == Verdict::Acquire { 1 } else { 0 };
            lease.spec = Some(fresh(prev.as_ref(), transitions));
            // replace carries metadata.resourceVersion: a lost race is a 409, never two leaders.
            match api.replace(name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed_secs_ago: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(
                Timestamp::from_second(Timestamp::now().as_second() - renewed_secs_ago).unwrap(),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn a_candidate_waits_for_a_live_holder_and_takes_an_expired_lease() {
        let now = Timestamp::now();
        assert_eq!(verdict(None, "a", now), Verdict::Acquire);
        assert_eq!(verdict(Some(&spec("a", 3)), "a", now), Verdict::Renew);
        assert_eq!(verdict(Some(&spec("b", 3)), "a", now), Verdict::Wait);
        assert_eq!(verdict(Some(&spec("b", 16)), "a", now), Verdict::Acquire);
        assert_eq!(verdict(Some(&spec("", 1)), "a", now), Verdict::Acquire);
    }
}
