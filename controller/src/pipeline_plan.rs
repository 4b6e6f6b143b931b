//! The pure pipeline planner: given a Pipeline, one PipelineRun's spec and status, and what
//! was observed of its steps' jobs, decide the run's next status and the actions to carry out.
//! No IO: the standalone adapter ([`crate::pipelines`]) and the Kubernetes controller both
//! drive it.
//!
//! Rules:
//! - Steps start in DAG order once every step they depend on finished. A dependency that was
//!   skipped or failed skips the step (`DependencySkipped` / `DependencyFailed`).
//! - `when` is evaluated over the finished steps (metrics, outputs, phase) and the run's
//!   parameters; false skips the step (`WhenFalse`) with the values it read; an evaluation
//!   error fails it (`WhenError`).
//! - A failed attempt (job failed, timed out, register or deploy error) is retried after the
//!   step's backoff while retries remain (`Retrying`, `nextAttemptTime`), else the step fails.
//! - The run finishes when every step did: Succeeded when none failed.

use std::collections::{BTreeMap, HashMap};

use capstan_crds::common::Condition;
use capstan_crds::pipeline::{
    self, when, ModelVersionRef, PipelineRunSpec, PipelineRunStatus, PipelineSpec, RunPhase, Step, StepKind, StepPhase,
    StepStatus,
};
use capstan_crds::trainingjob::TrainingJobSpec;
use capstan_crds::EnvVar;

/// What was observed of the job of a job step's current attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum JobObs {
    /// No such job (not created yet, or deleted).
    Missing,
    /// Created, not finished.
    Running,
    /// Finished well: its tracking run and the run's latest metrics.
    Succeeded {
        /// Tracking run id.
        run_id: Option<String>,
        /// Latest value of each metric.
        metrics: BTreeMap<String, f64>,
    },
    /// Failed for good.
    Failed {
        /// Tracking run id.
        run_id: Option<String>,
        /// Why.
        message: String,
    },
}

/// What was observed this pass.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// Job name -> what it is doing.
    pub jobs: HashMap<String, JobObs>,
    /// Now, seconds since the epoch.
    pub now: i64,
}

/// Something the adapter must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create (or keep) a TrainingJob for a job step's attempt.
    CreateJob {
        /// Step name.
        step: String,
        /// TrainingJob name.
        name: String,
        /// Its spec (the template plus the pipeline environment).
        spec: Box<TrainingJobSpec>,
    },
    /// Delete a job (it timed out).
    DeleteJob {
        /// Step name.
        step: String,
        /// TrainingJob name.
        name: String,
    },
    /// Register a model version; report with [`complete`].
    Register {
        /// Step name.
        step: String,
        /// Registered model.
        model: String,
        /// Run holding the model.
        run_id: String,
        /// Artifact path in that run.
        artifact_path: String,
        /// Alias to move to the new version.
        alias: Option<String>,
    },
    /// Point a ModelDeployment at a version or alias; report with [`complete`].
    Deploy {
        /// Step name.
        step: String,
        /// ModelDeployment name.
        deployment: String,
        /// The version to serve (from a register step), if any.
        version: Option<ModelVersionRef>,
        /// The alias to serve, if any.
        alias: Option<String>,
    },
}

/// What a register or deploy action did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A model version was registered (and the alias moved, if any).
    Registered(ModelVersionRef),
    /// The deployment was updated.
    Deployed {
        /// ModelDeployment name.
        deployment: String,
    },
    /// It failed (retried under the step's policy).
    Failed {
        /// CamelCase reason.
        reason: String,
        /// Why.
        message: String,
    },
}

/// The next status and the actions.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The run's status after this pass.
    pub status: PipelineRunStatus,
    /// What to carry out.
    pub actions: Vec<Action>,
}

/// RFC 3339 of unix seconds.
pub fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn parse_time(s: Option<&str>) -> Option<i64> {
    s.and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok()).map(|t| t.timestamp())
}

/// Name of the TrainingJob of a step's attempt: `<run>-<step>-<attempt>`, the run's part cut
/// so the whole stays a valid 63-character name.
pub fn job_name(run: &str, step: &str, attempt: u32) -> String {
    let tail = format!("-{step}-{attempt}");
    let room = 63usize.saturating_sub(tail.len());
    let head: String = run.chars().take(room).collect();
    format!("{}{tail}", head.trim_end_matches('-'))
}

fn env_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

/// The TrainingJob spec of a job step: the template, in the pipeline's experiment unless it
/// names one, with CAPSTAN_PIPELINE, CAPSTAN_PIPELINE_RUN, CAPSTAN_COMMIT_SHA, CAPSTAN_BRANCH,
/// CAPSTAN_PARAM_<NAME> and CAPSTAN_STEP_<NAME>_RUN_ID of every finished step with a run.
pub fn job_spec(
    template: &TrainingJobSpec,
    pipeline_name: &str,
    run_name: &str,
    status: &PipelineRunStatus,
) -> TrainingJobSpec {
    let mut spec = template.clone();
    if spec.experiment.is_none() {
        spec.experiment = Some(pipeline_name.to_string());
    }
    let mut add = |name: String, value: String| {
        if !spec.env.iter().any(|e| e.name == name) {
            spec.env.push(EnvVar { name, value });
        }
    };
    add("CAPSTAN_PIPELINE".into(), pipeline_name.into());
    add("CAPSTAN_PIPELINE_RUN".into(), run_name.into());
    add("CAPSTAN_COMMIT_SHA".into(), status.parameters.get("commit").cloned().unwrap_or_default());
    add("CAPSTAN_BRANCH".into(), status.parameters.get("branch").cloned().unwrap_or_default());
    for (k, v) in &status.parameters {
        add(format!("CAPSTAN_PARAM_{}", env_name(k)), v.clone());
    }
    for s in &status.steps {
        if let Some(run_id) = &s.run_id {
            add(format!("CAPSTAN_STEP_{}_RUN_ID", env_name(&s.name)), run_id.clone());
        }
    }
    spec
}

fn set_condition(status: &mut PipelineRunStatus, type_: &str, reason: &str, message: &str, now: i64) {
    status.conditions.retain(|c| c.type_ != type_);
    status.conditions.push(Condition {
        type_: type_.into(),
        status: "True".into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: rfc3339(now),
    });
}

fn finish(step: &mut StepStatus, phase: StepPhase, reason: &str, message: String, now: i64) {
    step.phase = phase;
    step.reason = Some(reason.into());
    step.message = Some(message);
    step.completion_time = Some(rfc3339(now));
    step.next_attempt_time = None;
}

/// A failed attempt: retry after the backoff while retries remain, else fail.
fn attempt_failed(def: &Step, step: &mut StepStatus, reason: &str, message: String, now: i64) {
    let limit = def.retries.as_ref().map_or(0, |r| r.limit);
    let retries_used = step.attempts.saturating_sub(1);
    if retries_used < limit {
        let delay = def.retries.as_ref().map_or(0, |r| r.delay_seconds(retries_used + 1));
        step.phase = StepPhase::Retrying;
        step.reason = Some(reason.into());
        step.message = Some(format!("attempt {} failed: {message}; retrying in {delay}s", step.attempts));
        step.next_attempt_time = Some(rfc3339(now + delay as i64));
    } else {
        let tail = if limit > 0 { format!(" (after {} attempts)", step.attempts) } else { String::new() };
        finish(step, StepPhase::Failed, reason, format!("{message}{tail}"), now);
    }
}

/// Records what a register or deploy action did (the adapter calls this right after
/// carrying it out, then writes the status).
pub fn complete(pipeline: &PipelineSpec, status: &mut PipelineRunStatus, step: &str, outcome: Outcome, now: i64) {
    let Some(def) = pipeline.steps.iter().find(|s| s.name == step) else { return };
    let Some(st) = status.steps.iter_mut().find(|s| s.name == step) else { return };
    if st.phase != StepPhase::Running {
        return;
    }
    match outcome {
        Outcome::Registered(mv) => {
            st.outputs.insert("modelName".into(), mv.name.clone());
            st.outputs.insert("modelVersion".into(), mv.version.to_string());
            let alias = def.register.as_ref().and_then(|r| r.alias.clone());
            let msg = match &alias {
                Some(a) => format!("registered {} version {} and moved alias {a} to it", mv.name, mv.version),
                None => format!("registered {} version {}", mv.name, mv.version),
            };
            st.alias = alias;
            st.model_version = Some(mv);
            finish(st, StepPhase::Succeeded, "Registered", msg, now);
        }
        Outcome::Deployed { deployment } => {
            st.outputs.insert("deployment".into(), deployment.clone());
            st.deployment = Some(deployment.clone());
            finish(st, StepPhase::Succeeded, "Deployed", format!("updated ModelDeployment {deployment}"), now);
        }
        Outcome::Failed { reason, message } => attempt_failed(def, st, &reason, message, now),
    }
}

fn when_values(status: &PipelineRunStatus) -> BTreeMap<String, when::StepValues> {
    status
        .steps
        .iter()
        .map(|s| {
            let mut outputs = s.outputs.clone();
            if let Some(r) = &s.run_id {
                outputs.entry("runId".into()).or_insert_with(|| r.clone());
            }
            (s.name.clone(), when::StepValues { phase: format!("{:?}", s.phase), metrics: s.metrics.clone(), outputs })
        })
        .collect()
}

/// The values an expression reads, for a skip message: `steps.evaluate.metrics.accuracy = 0.71`.
fn read_values(expr: &str, status: &PipelineRunStatus) -> String {
    let mut seen = Vec::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_alphabetic() && (i == 0 || !(chars[i - 1].is_ascii_alphanumeric() || chars[i - 1] == '.'))
        {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '.' | '-')) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let parts: Vec<&str> = word.split('.').collect();
            let value = match parts.as_slice() {
                ["steps", step, "metrics", key] => status
                    .steps
                    .iter()
                    .find(|s| s.name == *step)
                    .map(|s| s.metrics.get(*key).map_or("<missing>".to_string(), |v| v.to_string())),
                ["params", key] => Some(status.parameters.get(*key).map_or("<missing>".into(), |v| format!("{v:?}"))),
                _ => None,
            };
            if let Some(v) = value {
                let entry = format!("{word} = {v}");
                if !seen.contains(&entry) {
                    seen.push(entry);
                }
            }
            continue;
        }
        i += 1;
    }
    seen.join(", ")
}

/// One planning pass over a run.
pub fn plan(
    pipeline_name: &str,
    pipeline: &PipelineSpec,
    run_name: &str,
    run: &PipelineRunSpec,
    current: &PipelineRunStatus,
    obs: &Observations,
) -> Plan {
    let now = obs.now;
    let mut status = current.clone();
    let mut actions = Vec::new();
    if status.phase.is_finished() {
        return Plan { status, actions };
    }
    let Some(order) = pipeline::topo_order(&pipeline.steps) else {
        status.phase = RunPhase::Failed;
        let msg = format!("pipeline {pipeline_name} has a dependency cycle");
        set_condition(&mut status, "Failed", "InvalidPipeline", &msg, now);
        status.message = Some(msg);
        status.completion_time = Some(rfc3339(now));
        return Plan { status, actions };
    };
    if status.phase == RunPhase::Pending {
        match pipeline::effective_parameters(pipeline, run) {
            Ok(p) => status.parameters = p,
            Err(e) => {
                status.phase = RunPhase::Failed;
                status.message = Some(e.clone());
                set_condition(&mut status, "Failed", "InvalidParameters", &e, now);
                status.completion_time = Some(rfc3339(now));
                return Plan { status, actions };
            }
        }
        status.steps =
            pipeline.steps.iter().map(|s| StepStatus { name: s.name.clone(), ..Default::default() }).collect();
        status.phase = RunPhase::Running;
        status.start_time = Some(rfc3339(now));
    }
    // Steps added to the pipeline since the run started are not part of it; steps removed
    // are kept in the status as they were.
    let index: HashMap<String, usize> = status.steps.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();

    for &si in &order {
        let def = &pipeline.steps[si];
        let Some(&ix) = index.get(&def.name) else { continue };

        // 1. Observe running job steps.
        if status.steps[ix].phase == StepPhase::Running {
            if let (Some(job), Some(_)) = (status.steps[ix].job_name.clone(), def.job()) {
                let st = &mut status.steps[ix];
                match obs.jobs.get(&job).cloned().unwrap_or(JobObs::Missing) {
                    JobObs::Succeeded { run_id, metrics } => {
                        if let Some(r) = &run_id {
                            st.outputs.insert("runId".into(), r.clone());
                        }
                        st.outputs.insert("jobName".into(), job.clone());
                        st.run_id = run_id.or(st.run_id.take());
                        st.metrics = metrics;
                        finish(st, StepPhase::Succeeded, "JobSucceeded", format!("TrainingJob {job} succeeded"), now);
                    }
                    JobObs::Failed { run_id, message } => {
                        st.run_id = run_id.or(st.run_id.take());
                        attempt_failed(def, st, "JobFailed", format!("TrainingJob {job} failed: {message}"), now);
                    }
                    other => {
                        let started = parse_time(st.start_time.as_deref()).unwrap_or(now);
                        match def.timeout_seconds {
                            Some(t) if now - started >= t as i64 => {
                                actions.push(Action::DeleteJob { step: def.name.clone(), name: job.clone() });
                                attempt_failed(def, st, "Timeout", format!("attempt took longer than {t}s"), now);
                            }
                            _ if other == JobObs::Missing => {
                                // Not created yet (or lost): create it again (idempotent).
                                let template = def.job().map(|j| &j.template).cloned().unwrap_or_default();
                                let spec = job_spec(&template, pipeline_name, run_name, &status);
                                actions.push(Action::CreateJob {
                                    step: def.name.clone(),
                                    name: job,
                                    spec: Box::new(spec),
                                });
                            }
                            _ => {}
                        }
                    }
                }
            } else if status.steps[ix].phase == StepPhase::Running {
                // A register or deploy step left Running by a pass that did not finish: redo it.
                if let Some(a) = instant_action(def, &status) {
                    actions.push(a);
                }
            }
        }

        // 2. Retries whose time has come.
        if status.steps[ix].phase == StepPhase::Retrying {
            let due = parse_time(status.steps[ix].next_attempt_time.as_deref()).unwrap_or(now);
            if now >= due {
                status.steps[ix].phase = StepPhase::Pending;
                status.steps[ix].next_attempt_time = None;
            } else {
                continue;
            }
        }

        // 3. Start pending steps whose dependencies finished.
        if status.steps[ix].phase != StepPhase::Pending {
            continue;
        }
        let deps: Vec<&StepStatus> =
            def.depends_on.iter().filter_map(|d| index.get(d).map(|&j| &status.steps[j])).collect();
        if deps.iter().any(|d| !d.phase.is_finished()) {
            continue;
        }
        if let Some(d) = deps.iter().find(|d| d.phase == StepPhase::Failed) {
            let msg = format!("step {} failed", d.name);
            finish(&mut status.steps[ix], StepPhase::Skipped, "DependencyFailed", msg, now);
            continue;
        }
        if let Some(d) = deps.iter().find(|d| d.phase == StepPhase::Skipped) {
            let msg = format!("step {} was skipped: {}", d.name, d.message.clone().unwrap_or_default());
            finish(&mut status.steps[ix], StepPhase::Skipped, "DependencySkipped", msg, now);
            continue;
        }
        if let Some(expr) = &def.when {
            match when::evaluate(expr, &when_values(&status), &status.parameters) {
                Ok(true) => {}
                Ok(false) => {
                    let values = read_values(expr, &status);
                    let msg = if values.is_empty() {
                        format!("when `{expr}` was false")
                    } else {
                        format!("when `{expr}` was false ({values})")
                    };
                    finish(&mut status.steps[ix], StepPhase::Skipped, "WhenFalse", msg, now);
                    continue;
                }
                Err(e) => {
                    let msg = format!("when `{expr}` could not be evaluated: {e}");
                    finish(&mut status.steps[ix], StepPhase::Failed, "WhenError", msg, now);
                    continue;
                }
            }
        }
        let attempt = status.steps[ix].attempts + 1;
        {
            let st = &mut status.steps[ix];
            st.attempts = attempt;
            st.phase = StepPhase::Running;
            st.start_time = Some(rfc3339(now));
            st.reason = None;
            st.message = None;
        }
        match def.kind() {
            Some(StepKind::Train | StepKind::Evaluate | StepKind::Container) => {
                let name = job_name(run_name, &def.name, attempt);
                let template = def.job().map(|j| &j.template).cloned().unwrap_or_default();
                let spec = job_spec(&template, pipeline_name, run_name, &status);
                let st = &mut status.steps[ix];
                st.job_name = Some(name.clone());
                st.run_id = None;
                st.message = Some(format!("TrainingJob {name} created"));
                actions.push(Action::CreateJob { step: def.name.clone(), name, spec: Box::new(spec) });
            }
            Some(StepKind::Register | StepKind::Deploy) => match instant_action(def, &status) {
                Some(a) => actions.push(a),
                None => {
                    let msg = "the step it takes its model from has no run or version".to_string();
                    finish(&mut status.steps[ix], StepPhase::Failed, "MissingInput", msg, now);
                }
            },
            None => {
                let msg = "a step sets exactly one of train, evaluate, register, deploy and container".to_string();
                finish(&mut status.steps[ix], StepPhase::Failed, "InvalidStep", msg, now);
            }
        }
    }

    // 4. The run's phase.
    if status.steps.iter().all(|s| s.phase.is_finished()) {
        status.completion_time = Some(rfc3339(now));
        match status.steps.iter().find(|s| s.phase == StepPhase::Failed).cloned() {
            Some(f) => {
                let msg = format!("step {} failed: {}", f.name, f.message.clone().unwrap_or_default());
                status.phase = RunPhase::Failed;
                set_condition(&mut status, "Failed", f.reason.clone().unwrap_or_default().as_str(), &msg, now);
                status.message = Some(msg);
            }
            None => {
                let skipped: Vec<String> = status
                    .steps
                    .iter()
                    .filter(|s| s.phase == StepPhase::Skipped)
                    .map(|s| format!("{} ({})", s.name, s.message.clone().unwrap_or_default()))
                    .collect();
                let msg = if skipped.is_empty() {
                    "every step succeeded".to_string()
                } else {
                    format!("succeeded; skipped: {}", skipped.join("; "))
                };
                status.phase = RunPhase::Succeeded;
                set_condition(&mut status, "Succeeded", "AllStepsFinished", &msg, now);
                status.message = Some(msg);
            }
        }
    } else {
        let running: Vec<&str> =
            status.steps.iter().filter(|s| !s.phase.is_finished()).map(|s| s.name.as_str()).collect();
        status.message = Some(format!("waiting on: {}", running.join(", ")));
    }
    Plan { status, actions }
}

/// The register or deploy action of a step, from the status of the step it reads.
fn instant_action(def: &Step, status: &PipelineRunStatus) -> Option<Action> {
    let find = |name: &str| status.steps.iter().find(|s| s.name == name);
    if let Some(r) = &def.register {
        let run_id = find(&r.from_step)?.run_id.clone()?;
        return Some(Action::Register {
            step: def.name.clone(),
            model: r.model.clone(),
            run_id,
            artifact_path: r.artifact_path().to_string(),
            alias: r.alias.clone(),
        });
    }
    if let Some(d) = &def.deploy {
        let version = match &d.from_step {
            Some(s) => Some(find(s)?.model_version.clone()?),
            None => None,
        };
        return Some(Action::Deploy {
            step: def.name.clone(),
            deployment: d.deployment.clone(),
            version,
            alias: d.alias.clone(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_crds::pipeline::{DeployStep, JobStep, RegisterStep, RetryPolicy};
    use proptest::prelude::*;

    fn job_step(name: &str, deps: &[&str], kind: StepKind) -> Step {
        let j = Some(JobStep::default());
        let mut s =
            Step { name: name.into(), depends_on: deps.iter().map(|d| d.to_string()).collect(), ..Default::default() };
        match kind {
            StepKind::Train => s.train = j,
            StepKind::Evaluate => s.evaluate = j,
            _ => s.container = j,
        }
        s
    }

    fn gated_pipeline() -> PipelineSpec {
        let mut reg = Step {
            name: "register".into(),
            depends_on: vec!["evaluate".into()],
            when: Some("steps.evaluate.metrics.accuracy > 0.9".into()),
            register: Some(RegisterStep {
                model: "iris".into(),
                from_step: "train".into(),
                alias: Some("champion".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        reg.retries = None;
        PipelineSpec {
            steps: vec![
                job_step("train", &[], StepKind::Train),
                job_step("evaluate", &["train"], StepKind::Evaluate),
                reg,
                Step {
                    name: "deploy".into(),
                    depends_on: vec!["register".into()],
                    deploy: Some(DeployStep {
                        deployment: "iris".into(),
                        from_step: Some("register".into()),
                        alias: None,
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    fn run_spec() -> PipelineRunSpec {
        PipelineRunSpec { pipeline_ref: "p".into(), ..Default::default() }
    }

    fn step<'a>(s: &'a PipelineRunStatus, name: &str) -> &'a StepStatus {
        s.steps.iter().find(|x| x.name == name).unwrap()
    }

    /// Drives a run: job outcomes from `outcome(step) -> obs`, register/deploy succeed.
    fn drive(p: &PipelineSpec, outcome: impl Fn(&str) -> JobObs, passes: usize) -> (PipelineRunStatus, Vec<Action>) {
        let mut status = PipelineRunStatus::default();
        let mut all = Vec::new();
        let mut jobs: HashMap<String, JobObs> = HashMap::new();
        for pass in 0..passes {
            let obs = Observations { jobs: jobs.clone(), now: 1_000 + pass as i64 * 100 };
            let plan = plan("p", p, "run", &run_spec(), &status, &obs);
            status = plan.status;
            for a in &plan.actions {
                match a {
                    Action::CreateJob { step, name, .. } => {
                        jobs.insert(name.clone(), outcome(step));
                    }
                    Action::Register { step, model, run_id, .. } => complete(
                        p,
                        &mut status,
                        step,
                        Outcome::Registered(ModelVersionRef {
                            name: model.clone(),
                            version: 3,
                            source: format!("runs:/{run_id}/model"),
                        }),
                        obs.now,
                    ),
                    Action::Deploy { step, deployment, .. } => {
                        complete(p, &mut status, step, Outcome::Deployed { deployment: deployment.clone() }, obs.now)
                    }
                    Action::DeleteJob { .. } => {}
                }
            }
            all.extend(plan.actions);
            if status.phase.is_finished() {
                break;
            }
        }
        (status, all)
    }

    fn ok(acc: f64) -> impl Fn(&str) -> JobObs {
        move |step: &str| JobObs::Succeeded {
            run_id: Some(format!("run-{step}")),
            metrics: [("accuracy".to_string(), acc)].into(),
        }
    }

    #[test]
    fn the_gate_passes_registers_and_deploys_in_order() {
        let (status, actions) = drive(&gated_pipeline(), ok(0.95), 20);
        assert_eq!(status.phase, RunPhase::Succeeded, "{status:#?}");
        let order: Vec<&str> = actions
            .iter()
            .map(|a| match a {
                Action::CreateJob { step, .. }
                | Action::Register { step, .. }
                | Action::Deploy { step, .. }
                | Action::DeleteJob { step, .. } => step.as_str(),
            })
            .collect();
        assert_eq!(order, ["train", "evaluate", "register", "deploy"]);
        let reg = step(&status, "register");
        assert_eq!(reg.model_version.as_ref().unwrap().source, "runs:/run-train/model");
        assert_eq!(reg.alias.as_deref(), Some("champion"));
        assert_eq!(step(&status, "deploy").deployment.as_deref(), Some("iris"));
        let Action::CreateJob { spec, .. } = &actions[1] else { panic!() };
        assert!(spec.env.iter().any(|e| e.name == "CAPSTAN_STEP_TRAIN_RUN_ID" && e.value == "run-train"));
    }

    #[test]
    fn a_failed_gate_skips_register_and_deploy_and_says_why() {
        let (status, actions) = drive(&gated_pipeline(), ok(0.71), 20);
        assert_eq!(status.phase, RunPhase::Succeeded);
        assert!(!actions.iter().any(|a| matches!(a, Action::Register { .. } | Action::Deploy { .. })));
        let reg = step(&status, "register");
        assert_eq!((reg.phase, reg.reason.as_deref()), (StepPhase::Skipped, Some("WhenFalse")));
        let msg = reg.message.as_deref().unwrap();
        assert!(msg.contains("steps.evaluate.metrics.accuracy = 0.71"), "{msg}");
        let dep = step(&status, "deploy");
        assert_eq!((dep.phase, dep.reason.as_deref()), (StepPhase::Skipped, Some("DependencySkipped")));
        assert!(status.message.as_deref().unwrap().contains("register (when"), "{:?}", status.message);
    }

    #[test]
    fn a_missing_metric_fails_the_gate_step_loudly() {
        let p = gated_pipeline();
        let (status, _) = drive(&p, |s| JobObs::Succeeded { run_id: Some(s.into()), metrics: BTreeMap::new() }, 20);
        assert_eq!(status.phase, RunPhase::Failed);
        assert_eq!(step(&status, "register").reason.as_deref(), Some("WhenError"));
    }

    #[test]
    fn failures_retry_with_backoff_then_fail() {
        let mut p = gated_pipeline();
        p.steps[0].retries = Some(RetryPolicy { limit: 2, backoff_seconds: Some(150), max_backoff_seconds: None });
        let fail = |_: &str| JobObs::Failed { run_id: None, message: "exit 1".into() };
        let (status, actions) = drive(&p, fail, 40);
        assert_eq!(status.phase, RunPhase::Failed);
        let train = step(&status, "train");
        assert_eq!(train.attempts, 3);
        assert!(train.message.as_deref().unwrap().contains("after 3 attempts"));
        let names: Vec<&str> = actions
            .iter()
            .filter_map(|a| if let Action::CreateJob { name, .. } = a { Some(name.as_str()) } else { None })
            .collect();
        assert_eq!(names, ["run-train-1", "run-train-2", "run-train-3"]);
        assert_eq!(step(&status, "evaluate").reason.as_deref(), Some("DependencyFailed"));
    }

    #[test]
    fn a_timeout_deletes_the_job_and_fails_the_attempt() {
        let mut p = gated_pipeline();
        p.steps[0].timeout_seconds = Some(150);
        let (status, actions) = drive(&p, |_| JobObs::Running, 10);
        assert!(actions.iter().any(|a| matches!(a, Action::DeleteJob { name, .. } if name == "run-train-1")));
        assert_eq!(step(&status, "train").reason.as_deref(), Some("Timeout"));
        assert_eq!(status.phase, RunPhase::Failed);
    }

    #[test]
    fn missing_required_parameters_fail_the_run_at_once() {
        let mut p = gated_pipeline();
        p.parameters.push(capstan_crds::pipeline::ParameterSpec { name: "x".into(), ..Default::default() });
        let plan = plan("p", &p, "run", &run_spec(), &PipelineRunStatus::default(), &Observations::default());
        assert_eq!(plan.status.phase, RunPhase::Failed);
        assert!(plan.actions.is_empty());
        assert!(plan.status.message.unwrap().contains("\"x\" is required"));
    }

    #[test]
    fn job_names_stay_valid() {
        assert_eq!(job_name("run", "train", 1), "run-train-1");
        let n = job_name(&"r".repeat(63), &"s".repeat(40), 12);
        assert_eq!(n.len(), 63);
        assert!(n.ends_with("-12"));
    }

    proptest! {
        /// Over random DAGs and random job outcomes, a run always finishes, each step starts
        /// only after every step it depends on finished, and never more than once per attempt.
        #[test]
        fn runs_finish_and_respect_the_dag(
            edges in proptest::collection::vec((0usize..6, 0usize..6), 0..12),
            fails in proptest::collection::vec(any::<bool>(), 6),
        ) {
            let mut steps: Vec<Step> = (0..6).map(|i| job_step(&format!("s{i}"), &[], StepKind::Container)).collect();
            for (a, b) in edges {
                if a > b && !steps[a].depends_on.contains(&format!("s{b}")) {
                    steps[a].depends_on.push(format!("s{b}"));
                }
            }
            let p = PipelineSpec { steps, ..Default::default() };
            let outcome = |s: &str| {
                let i: usize = s[1..].parse().unwrap();
                if fails[i] { JobObs::Failed { run_id: None, message: "x".into() } } else { ok(1.0)(s) }
            };
            let (status, actions) = drive(&p, outcome, 30);
            prop_assert!(status.phase.is_finished());
            let started: Vec<&str> = actions.iter().filter_map(|a| match a {
                Action::CreateJob { step, .. } => Some(step.as_str()), _ => None }).collect();
            let mut uniq = started.clone();
            uniq.sort();
            uniq.dedup();
            prop_assert_eq!(uniq.len(), started.len());
            for (i, s) in p.steps.iter().enumerate() {
                let st = step(&status, &s.name);
                if let Some(pos) = started.iter().position(|x| *x == s.name) {
                    for d in &s.depends_on {
                        let dpos = started.iter().position(|x| x == d);
                        prop_assert!(dpos.is_some_and(|dp| dp < pos));
                        prop_assert_eq!(step(&status, d).phase, StepPhase::Succeeded);
                    }
                } else {
                    prop_assert_eq!(st.phase, StepPhase::Skipped, "step {} never started", i);
                }
            }
        }
    }
}
