//! Dynamic batching: requests that queue up while the model is busy share one run.
//!
//! One worker thread owns the model's execution state. It takes the first queued request,
//! then everything else already queued (up to [`BatchConfig::max_batch`] rows), and, while
//! more requests are known to be on their way (being read or decoded), waits for them at
//! most [`BatchConfig::max_delay`]. A lone request never waits. Compatible requests (same
//! input names, datatypes and shapes past the first dimension: [`plan_batches`], pure) are
//! concatenated along the first dimension, run once, and the outputs split back by rows.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::model::{OnnxModel, Session};
use crate::tensor::{Datatype, Tensor, TensorData};
use crate::{Result, ServingError};

/// Batching settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most rows (first-dimension entries) in one run; 1 turns batching off.
    pub max_batch: usize,
    /// Longest a formed batch waits for requests known to be arriving.
    pub max_delay: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { max_batch: 64, max_delay: Duration::from_micros(500) }
    }
}

/// What a request's inputs look like apart from the batch dimension: sorted
/// `(name, datatype, shape[1..])`. Requests with equal signatures can share a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature(Vec<(String, Datatype, Vec<usize>)>);

impl Signature {
    /// The signature of a request's inputs, and its rows (the first dimension, shared by
    /// every input); `None` when an input is a scalar or the first dimensions differ.
    pub fn of(inputs: &[Tensor]) -> Option<(Signature, usize)> {
        let rows = *inputs.first()?.shape.first()?;
        let mut sig = Vec::with_capacity(inputs.len());
        for t in inputs {
            if t.shape.first() != Some(&rows) {
                return None;
            }
            sig.push((t.name.clone(), t.data.datatype(), t.shape[1..].to_vec()));
        }
        sig.sort();
        Some((Signature(sig), rows))
    }
}

/// Groups queued requests into runs, in arrival order: a request joins the first open
/// group with its signature while that group stays within `max_batch` rows; requests
/// without a signature run alone. Every index appears exactly once.
pub fn plan_batches(requests: &[Option<(Signature, usize)>], max_batch: usize) -> Vec<Vec<usize>> {
    let mut groups: Vec<(Option<&Signature>, usize, Vec<usize>)> = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        match r {
            Some((sig, rows)) => {
                let open = groups.iter_mut().find(|(s, total, _)| *s == Some(sig) && total + rows <= max_batch);
                match open {
                    Some((_, total, members)) => {
                        *total += rows;
                        members.push(i);
                    }
                    None => groups.push((Some(sig), *rows, vec![i])),
                }
            }
            None => groups.push((None, 0, vec![i])),
        }
    }
    groups.into_iter().map(|(_, _, members)| members).collect()
}

/// Splits one batched output into per-request outputs of `rows` rows each; `None` when the
/// output's first dimension is not the sum of `rows`.
pub fn split_rows(t: &Tensor, rows: &[usize]) -> Option<Vec<Tensor>> {
    let total: usize = rows.iter().sum();
    if t.shape.first() != Some(&total) {
        return None;
    }
    let stride: usize = t.shape[1..].iter().product();
    let mut at = 0;
    Some(
        rows.iter()
            .map(|&r| {
                let mut shape = t.shape.clone();
                shape[0] = r;
                let part = t.data.slice(at * stride, (at + r) * stride);
                at += r;
                Tensor { name: t.name.clone(), shape, data: part }
            })
            .collect(),
    )
}

/// Concatenates the requests' inputs, input by input, along the first dimension.
pub fn concat_inputs(requests: &[&[Tensor]]) -> Option<Vec<Tensor>> {
    let first = *requests.first()?;
    first
        .iter()
        .map(|t| {
            let parts: Vec<&Tensor> =
                requests.iter().map(|r| r.iter().find(|x| x.name == t.name)).collect::<Option<_>>()?;
            let bodies: Vec<&TensorData> = parts.iter().map(|p| &p.data).collect();
            let mut shape = t.shape.clone();
            shape[0] = parts.iter().map(|p| p.shape[0]).sum();
            Some(Tensor { name: t.name.clone(), shape, data: TensorData::concat(&bodies)? })
        })
        .collect()
}

struct Job {
    inputs: Vec<Tensor>,
    reply: oneshot::Sender<Result<Vec<Tensor>>>,
}

/// The handle requests go through; cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    arriving: Arc<AtomicUsize>,
}

/// Held from the moment a request arrives until its answer comes back from the model, so
/// the worker knows more requests are on the way.
pub struct Arrival {
    arriving: Arc<AtomicUsize>,
}

impl Drop for Arrival {
    fn drop(&mut self) {
        self.arriving.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Batcher {
    /// Starts the worker thread over `model`. It ends when every handle is dropped.
    pub fn start(model: &OnnxModel, config: BatchConfig, metrics: Arc<Metrics>) -> Result<Batcher> {
        let (tx, rx) = mpsc::channel::<Job>();
        let arriving = Arc::new(AtomicUsize::new(0));
        let mut session = model.session()?;
        let batchable = model.batchable() && config.max_batch > 1;
        let seen = arriving.clone();
        std::thread::Builder::new()
            .name("capstan-serving-batcher".into())
            .spawn(move || worker(&rx, &mut session, batchable, config, &seen, &metrics))
            .map_err(|e| ServingError::Inference(format!("cannot start the batching thread: {e}")))?;
        Ok(Batcher { tx, arriving })
    }

    /// Marks a request as arriving; hold the guard until [`Batcher::infer`] returns.
    pub fn arrival(&self) -> Arrival {
        self.arriving.fetch_add(1, Ordering::SeqCst);
        Arrival { arriving: self.arriving.clone() }
    }

    /// Runs validated inputs (possibly together with other queued requests).
    pub async fn infer(&self, inputs: Vec<Tensor>, arrival: Arrival) -> Result<Vec<Tensor>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job { inputs, reply }).map_err(|_| ServingError::Inference("the model worker stopped".into()))?;
        let answer = rx.await.map_err(|_| ServingError::Inference("the model worker stopped".into()))?;
        drop(arrival);
        answer
    }
}

fn worker(
    rx: &mpsc::Receiver<Job>,
    session: &mut Session,
    batchable: bool,
    config: BatchConfig,
    arriving: &AtomicUsize,
    metrics: &Metrics,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        if batchable {
            let deadline = Instant::now() + config.max_delay;
            loop {
                match rx.try_recv() {
                    Ok(job) => {
                        jobs.push(job);
                        if jobs.len() >= config.max_batch {
                            break;
                        }
                        continue;
                    }
                    Err(mpsc::TryRecvError::Disconnected) => break,
                    Err(mpsc::TryRecvError::Empty) => {}
                }
                // Nothing queued: wait only for requests known to be arriving.
                let now = Instant::now();
                if arriving.load(Ordering::SeqCst) <= jobs.len() || now >= deadline {
                    break;
                }
                match rx.recv_timeout(deadline - now) {
                    Ok(job) => {
                        jobs.push(job);
                        if jobs.len() >= config.max_batch {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        run_jobs(session, jobs, config.max_batch, metrics);
    }
}

fn run_jobs(session: &mut Session, jobs: Vec<Job>, max_batch: usize, metrics: &Metrics) {
    let signatures: Vec<_> = jobs.iter().map(|j| Signature::of(&j.inputs)).collect();
    let groups = plan_batches(&signatures, max_batch);
    let mut slots: Vec<Option<Job>> = jobs.into_iter().map(Some).collect();
    for group in groups {
        let members: Vec<Job> = group.iter().filter_map(|&i| slots[i].take()).collect();
        if members.len() == 1 {
            metrics.observe_batch(1);
            let job = members.into_iter().next().expect("one member");
            let out = session.run(&job.inputs);
            let _ = job.reply.send(out);
            continue;
        }
        let rows: Vec<usize> = members.iter().map(|j| j.inputs[0].shape[0]).collect();
        let refs: Vec<&[Tensor]> = members.iter().map(|j| j.inputs.as_slice()).collect();
        let split = concat_inputs(&refs).and_then(|batched| session.run(&batched).ok()).and_then(|outs| {
            let per_output: Vec<Vec<Tensor>> = outs.iter().map(|o| split_rows(o, &rows)).collect::<Option<_>>()?;
            Some(per_output)
        });
        match split {
            Some(mut per_output) => {
                metrics.observe_batch(members.len());
                for (k, job) in members.into_iter().enumerate() {
                    let outs = per_output.iter_mut().map(|parts| std::mem::replace(&mut parts[k], empty())).collect();
                    let _ = job.reply.send(Ok(outs));
                }
            }
            None => {
                // The batched run failed or its outputs do not split by rows: run each
                // request alone so each gets its own answer (and its own error).
                for job in members {
                    metrics.observe_batch(1);
                    let out = session.run(&job.inputs);
                    let _ = job.reply.send(out);
                }
            }
        }
    }
}

fn empty() -> Tensor {
    Tensor { name: String::new(), shape: vec![], data: TensorData::Bool(vec![]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(name: &str, shape: &[usize], dt: Datatype) -> Tensor {
        let n = shape.iter().product();
        let data = match dt {
            Datatype::Fp32 => TensorData::F32((0..n).map(|i| i as f32).collect()),
            _ => TensorData::I64((0..n as i64).collect()),
        };
        Tensor { name: name.into(), shape: shape.into(), data }
    }

    #[test]
    fn signatures_ignore_rows_and_order() {
        let a = Signature::of(&[t("x", &[2, 4], Datatype::Fp32), t("y", &[2], Datatype::Int64)]).unwrap();
        let b = Signature::of(&[t("y", &[5], Datatype::Int64), t("x", &[5, 4], Datatype::Fp32)]).unwrap();
        assert_eq!(a.0, b.0);
        assert_eq!((a.1, b.1), (2, 5));
        assert!(Signature::of(&[t("x", &[2, 4], Datatype::Fp32), t("y", &[3], Datatype::Int64)]).is_none());
        assert!(Signature::of(&[t("x", &[], Datatype::Fp32)]).is_none());
        let c = Signature::of(&[t("x", &[2, 5], Datatype::Fp32), t("y", &[2], Datatype::Int64)]).unwrap();
        assert_ne!(a.0, c.0);
    }

    #[test]
    fn plan_respects_signature_and_max_rows() {
        let s = |shape: &[usize]| Signature::of(&[t("x", shape, Datatype::Fp32)]);
        let reqs = vec![s(&[3, 4]), s(&[2, 5]), s(&[3, 4]), None, s(&[3, 4]), s(&[1, 5])];
        let plan = plan_batches(&reqs, 6);
        assert_eq!(plan, vec![vec![0, 2], vec![1, 5], vec![3], vec![4]]);
    }

    #[test]
    fn split_checks_rows() {
        let out = t("o", &[5, 2], Datatype::Fp32);
        let parts = split_rows(&out, &[2, 3]).unwrap();
        assert_eq!(parts[0].shape, vec![2, 2]);
        assert_eq!(parts[1].data, TensorData::F32(vec![4.0, 5.0, 6.0, 7.0, 8.0, 9.0]));
        assert!(split_rows(&out, &[2, 2]).is_none());
    }

    proptest! {
        /// Every request lands in exactly one group, groups never exceed max_batch rows
        /// (unless one request alone is bigger), and members share a signature.
        #[test]
        fn plan_is_a_partition(rows in prop::collection::vec((1usize..6, 0usize..3), 0..20), max in 1usize..12) {
            let reqs: Vec<_> = rows.iter().map(|&(r, w)| Signature::of(&[t("x", &[r, w + 1], Datatype::Fp32)])).collect();
            let plan = plan_batches(&reqs, max);
            let mut seen: Vec<usize> = plan.iter().flatten().copied().collect();
            seen.sort();
            prop_assert_eq!(seen, (0..reqs.len()).collect::<Vec<_>>());
            for g in &plan {
                let total: usize = g.iter().map(|&i| rows[i].0).sum();
                prop_assert!(total <= max || g.len() == 1);
                prop_assert!(g.iter().all(|&i| rows[i].1 == rows[g[0]].1));
                prop_assert!(g.windows(2).all(|w| w[0] < w[1]));
            }
        }

        /// Concatenating requests and splitting by their rows gives them back.
        #[test]
        fn concat_split_round_trip(rows in prop::collection::vec(0usize..5, 1..6)) {
            let reqs: Vec<Vec<Tensor>> = rows.iter().map(|&r| vec![t("x", &[r, 3], Datatype::Fp32)]).collect();
            let refs: Vec<&[Tensor]> = reqs.iter().map(|r| r.as_slice()).collect();
            let all = concat_inputs(&refs).unwrap();
            let parts = split_rows(&all[0], &rows).unwrap();
            for (p, r) in parts.iter().zip(&reqs) {
                prop_assert_eq!(p, &r[0]);
            }
        }
    }
}
