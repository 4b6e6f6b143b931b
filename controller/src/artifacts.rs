//! Job logs as run artifacts: when a TrainingJob finishes (Succeeded or Failed), every
//! replica log of every attempt is uploaded to the job's tracking run, under
//! `logs/attempt-<n>/replica-<i>.log`, so `mlflow` (and the UI) show them beside the
//! metrics. The upload runs in the background (a big log must not hold up the reconcile
//! loop) and leaves an event on the job: `LogsUploaded`, or a `LogsUploadFailed` warning.
//! The files under `<data-dir>/logs` stay where they are.

use std::path::{Path, PathBuf};

use capstan_core::lifecycle::Phase;
use capstan_store::artifacts::{ArtifactPath, ArtifactStore};
use capstan_store::{Store, StoreError, StoredResource};

use crate::standalone::Context;
use crate::Error;

/// Called when a job's phase changed: starts the log upload when it is now finished.
pub fn on_phase_change(ctx: &Context, job: &StoredResource, run_id: &str, phase: Phase) {
    let (Some(artifacts), Phase::Succeeded | Phase::Failed) = (&ctx.artifacts, phase) else { return };
    let (store, artifacts, data_dir) = (ctx.store.clone(), artifacts.clone(), ctx.data_dir.clone());
    let (job, run_id) = (job.clone(), run_id.to_string());
    tokio::spawn(async move {
        match upload_job_logs(&store, &artifacts, &data_dir, &job, &run_id).await {
            Ok(n) => {
                let message = format!("{n} replica log(s) uploaded to run {run_id} under logs/");
                let _ = store.add_event(&job.uid, "Normal", "LogsUploaded", &message).await;
            }
            Err(e) => {
                tracing::warn!(job = %job.name, run = %run_id, error = %e, "uploading replica logs failed");
                let message = format!("uploading replica logs to run {run_id} failed: {e}");
                let _ = store.add_event(&job.uid, "Warning", "LogsUploadFailed", &message).await;
            }
        }
    });
}

/// Uploads every replica log of `job` to the artifacts of the run `run_id`, as
/// `logs/attempt-<n>/replica-<i>.log`. Returns how many files went up.
pub async fn upload_job_logs(
    store: &Store,
    artifacts: &ArtifactStore,
    data_dir: &Path,
    job: &StoredResource,
    run_id: &str,
) -> Result<usize, Error> {
    let run = store.get_run(run_id).await?.ok_or_else(|| StoreError::NotFound(format!("run {run_id}")))?;
    let root = ArtifactPath::from_artifact_uri(&run.artifact_uri)?;
    let dir = data_dir.join("logs").join(&job.namespace).join(&job.name).join(&job.uid);
    let logs = job_logs(&dir).map_err(|e| Error::Io(dir.display().to_string(), e))?;
    for (file, name) in &logs {
        artifacts.put_file(&root.join(name)?, file).await?;
    }
    Ok(logs.len())
}

/// The replica logs in a job's log folder (`attempt-<n>/replica-<i>.log`), with their
/// artifact names, ordered by attempt then replica. A missing folder has none.
pub fn job_logs(dir: &Path) -> std::io::Result<Vec<(PathBuf, String)>> {
    let mut out: Vec<(u32, u32, PathBuf, String)> = Vec::new();
    let attempts = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    for attempt in attempts {
        let attempt = attempt?;
        let Some(n) = number_of(&attempt.file_name().to_string_lossy(), "attempt-", "") else { continue };
        if !attempt.file_type()?.is_dir() {
            continue;
        }
        for replica in std::fs::read_dir(attempt.path())? {
            let replica = replica?;
            let file_name = replica.file_name().to_string_lossy().into_owned();
            let Some(i) = number_of(&file_name, "replica-", ".log") else { continue };
            if replica.file_type()?.is_file() {
                out.push((n, i, replica.path(), format!("logs/attempt-{n}/replica-{i}.log")));
            }
        }
    }
    out.sort_by_key(|(n, i, _, _)| (*n, *i));
    Ok(out.into_iter().map(|(_, _, path, name)| (path, name)).collect())
}

/// `attempt-3` -> 3 (with prefix `attempt-` and no suffix); None for anything else.
fn number_of(name: &str, prefix: &str, suffix: &str) -> Option<u32> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_only_from_exact_names() {
        assert_eq!(number_of("attempt-12", "attempt-", ""), Some(12));
        assert_eq!(number_of("replica-0.log", "replica-", ".log"), Some(0));
        assert_eq!(number_of("replica-.log", "replica-", ".log"), None);
        assert_eq!(number_of("replica-1.log.tmp", "replica-", ".log"), None);
        assert_eq!(number_of("attempt-x", "attempt-", ""), None);
        assert_eq!(number_of("attempt--1", "attempt-", ""), None);
    }

    #[test]
    fn job_logs_are_found_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for (a, r) in [(2, 0), (1, 1), (1, 0), (10, 3)] {
            let d = dir.path().join(format!("attempt-{a}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(format!("replica-{r}.log")), format!("{a}/{r}")).unwrap();
        }
        std::fs::write(dir.path().join("attempt-1/notes.txt"), "x").unwrap();
        std::fs::create_dir_all(dir.path().join("other")).unwrap();
        let names: Vec<String> = job_logs(dir.path()).unwrap().into_iter().map(|(_, n)| n).collect();
        assert_eq!(
            names,
            [
                "logs/attempt-1/replica-0.log",
                "logs/attempt-1/replica-1.log",
                "logs/attempt-2/replica-0.log",
                "logs/attempt-10/replica-3.log"
            ]
        );
        assert!(job_logs(&dir.path().join("missing")).unwrap().is_empty());
    }

    #[tokio::test]
    async fn logs_go_to_the_runs_artifacts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("db.sqlite")).await.unwrap();
        let exp = store.get_or_create_experiment("e").await.unwrap();
        let run = store.create_run(&exp, "r", 0, &[]).await.unwrap();
        let job = StoredResource {
            kind: "TrainingJob".into(),
            namespace: "default".into(),
            name: "j".into(),
            uid: "u-1".into(),
            generation: 1,
            resource_version: 1,
            creation_timestamp: String::new(),
            deletion_timestamp: None,
            labels: serde_json::json!({}),
            annotations: serde_json::json!({}),
            spec: serde_json::json!({}),
            status: serde_json::json!({}),
        };
        let data_dir = dir.path().join("data");
        let log = crate::standalone::log_path(&data_dir, "default", "j", "u-1", 1, 0);
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(&log, "hello from rank 0\n").unwrap();
        let artifacts = ArtifactStore::in_memory();
        assert_eq!(upload_job_logs(&store, &artifacts, &data_dir, &job, &run.run_id).await.unwrap(), 1);
        let root = ArtifactPath::from_artifact_uri(&run.artifact_uri).unwrap();
        let got = artifacts.get_bytes(&root.join("logs/attempt-1/replica-0.log").unwrap()).await.unwrap();
        assert_eq!(&got[..], b"hello from rank 0\n");
        let missing = upload_job_logs(&store, &artifacts, &data_dir, &job, "nope").await.unwrap_err();
        assert!(matches!(missing, Error::Store(StoreError::NotFound(_))), "{missing:?}");
    }
}
