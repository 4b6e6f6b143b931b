//! Tests of the store against real SQLite files (and `sqlite::memory:`) and real PostgreSQL
//! databases: every test listed in [`on_both_backends!`] runs twice, as `sqlite::NAME` and
//! `postgres::NAME` (a fresh database each; the PostgreSQL ones need
//! `CAPSTAN_TEST_POSTGRES_URL`, see `scripts/postgres-setup.sh`, and fail without it).

use super::*;
use crate::test_db::TestDb;
use sea_orm::{DbBackend, Statement};
use serde_json::json;

async fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("capstan.db")).await.unwrap();
    (dir, store)
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn point(key: &str, value: f64, timestamp: i64, step: i64) -> MetricPoint {
    MetricPoint { key: key.to_owned(), value, timestamp, step }
}

/// One PRAGMA's value, as text, through `conn`.
async fn pragma<C: ConnectionTrait>(conn: &C, name: &str) -> String {
    let row =
        conn.query_one_raw(Statement::from_string(DbBackend::Sqlite, format!("PRAGMA {name}"))).await.unwrap().unwrap();
    row.try_get_by_index::<String>(0).or_else(|_| row.try_get_by_index::<i64>(0).map(|v| v.to_string())).unwrap()
}

fn assert_rfc3339_secs_z(ts: &str) {
    assert!(ts.ends_with('Z'), "{ts}");
    assert_eq!(ts.len(), "2026-11-28T12:34:56Z".len(), "{ts}");
    chrono::DateTime::parse_from_rfc3339(ts).unwrap();
}

async fn new_run(store: &Store) -> RunRecord {
    store.create_run("0", "r", 1_000, &[]).await.unwrap()
}

// ---- open, pragmas, migrations, durability ----

#[tokio::test]
async fn every_pooled_connection_is_wal_full_fk_busy_timeout() {
    let (_dir, store) = temp_store().await;
    let check = |journal: String, sync: String, fk: String, busy: String| {
        assert_eq!(journal, "wal");
        assert_eq!(sync, "2", "synchronous=FULL");
        assert_eq!(fk, "1");
        assert_eq!(busy, "5000");
    };
    check(
        pragma(&store.writer, "journal_mode").await,
        pragma(&store.writer, "synchronous").await,
        pragma(&store.writer, "foreign_keys").await,
        pragma(&store.writer, "busy_timeout").await,
    );
    // Hold every reader connection at once, so each one is checked.
    let mut txns = Vec::new();
    for _ in 0..SQLITE_READERS {
        txns.push(store.db.begin().await.unwrap());
    }
    for txn in &txns {
        check(
            pragma(txn, "journal_mode").await,
            pragma(txn, "synchronous").await,
            pragma(txn, "foreign_keys").await,
            pragma(txn, "busy_timeout").await,
        );
    }
}

#[tokio::test]
async fn open_url_creates_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub dir?#x.db");
    let store = Store::open_sqlite(&path).await.unwrap();
    assert!(path.exists());
    assert_eq!(pragma(&store.db, "journal_mode").await, "wal");
    // A URL without mode=rwc still creates the file.
    let other = dir.path().join("plain.db");
    Store::open(&format!("sqlite://{}", other.display())).await.unwrap();
    assert!(other.exists());
}

#[tokio::test]
async fn in_memory_database_works_and_is_private() {
    let a = Store::open("sqlite::memory:").await.unwrap();
    let b = Store::open("sqlite::memory:").await.unwrap();
    a.put_resource("Queue", "", "q", &json!({}), &json!({}), &json!({"x": 1})).await.unwrap();
    assert!(a.get_resource("Queue", "", "q").await.unwrap().is_some());
    assert!(b.get_resource("Queue", "", "q").await.unwrap().is_none());
    let run = new_run(&a).await;
    a.log_batch(&run.run_id, &[point("m", 1.0, 1, 1)], &[], &[]).await.unwrap();
    assert_eq!(a.metric_history(&run.run_id, "m").await.unwrap().len(), 1);
}

async fn migration_inserts_default_experiment_zero(store: Store) {
    let default = store.get_experiment("0").await.unwrap().unwrap();
    assert_eq!(default.name, "Default");
    assert_eq!(default.artifact_location, "mlflow-artifacts:/0");
    assert_eq!(default.lifecycle_stage, "active");
    assert!(default.tags.is_empty());
    assert_eq!(store.get_experiment_by_name("Default").await.unwrap().unwrap(), default);
    assert_eq!(store.create_experiment("first", &[]).await.unwrap(), "1");
    assert_eq!(store.create_experiment("second", &[]).await.unwrap(), "2");
}

async fn data_survives_reopening(db: &TestDb) {
    let (uid, run_id, exp_id) = {
        let store = db.store.clone();
        let (res, _) = store
            .put_resource("TrainingJob", "default", "job", &json!({"a": "b"}), &json!({}), &json!({"image": "x"}))
            .await
            .unwrap();
        store.set_status(&res.uid, &json!({"phase": "Running"})).await.unwrap();
        store.add_event(&res.uid, "Normal", "Started", "started").await.unwrap();
        let exp_id = store.create_experiment("exp", &kv(&[("team", "ml")])).await.unwrap();
        let run = store.create_run(&exp_id, "run", 5, &kv(&[("t", "1")])).await.unwrap();
        store.log_batch(&run.run_id, &[point("loss", 0.5, 10, 1)], &kv(&[("lr", "0.1")]), &[]).await.unwrap();
        (res.uid, run.run_id, exp_id)
    };
    let store = db.reopen().await;
    let res = store.get_resource("TrainingJob", "default", "job").await.unwrap().unwrap();
    assert_eq!(res.uid, uid);
    assert_eq!(res.status, json!({"phase": "Running"}));
    assert_eq!(res.resource_version, 2);
    assert_eq!(store.list_events(&uid).await.unwrap().len(), 1);
    let exp = store.get_experiment(&exp_id).await.unwrap().unwrap();
    assert_eq!(exp.tags, kv(&[("team", "ml")]));
    let run = store.get_run(&run_id).await.unwrap().unwrap();
    assert_eq!(run.params, kv(&[("lr", "0.1")]));
    assert_eq!(run.tags, kv(&[("t", "1")]));
    assert_eq!(run.metrics, vec![point("loss", 0.5, 10, 1)]);
    // The migrations did not run twice: one Default experiment, and ids go on.
    assert_eq!(store.get_experiment("0").await.unwrap().unwrap().name, "Default");
    assert_eq!(store.create_experiment("next", &[]).await.unwrap(), "2");
}

// ---- resources ----

async fn put_resource_created_unchanged_configured(store: Store) {
    let labels = json!({"team": "a"});
    let spec = json!({"image": "x", "replicas": 1});
    let (created, outcome) =
        store.put_resource("TrainingJob", "default", "job", &labels, &json!({}), &spec).await.unwrap();
    assert_eq!(outcome, PutOutcome::Created);
    assert_eq!((created.generation, created.resource_version), (1, 1));
    assert_eq!(created.status, json!({}));
    assert_eq!(created.spec, spec);
    assert_eq!(created.labels, labels);
    assert_eq!(created.deletion_timestamp, None);
    assert_eq!(uuid::Uuid::parse_str(&created.uid).unwrap().get_version_num(), 4);
    assert_rfc3339_secs_z(&created.creation_timestamp);
    assert_eq!(store.get_resource("TrainingJob", "default", "job").await.unwrap().unwrap(), created);

    // Same content, keys in another order: unchanged, nothing bumped.
    let reordered = json!({"replicas": 1, "image": "x"});
    let (same, outcome) =
        store.put_resource("TrainingJob", "default", "job", &labels, &json!({}), &reordered).await.unwrap();
    assert_eq!(outcome, PutOutcome::Unchanged);
    assert_eq!(same, created);

    // Labels only: configured, generation kept.
    let (relabeled, outcome) =
        store.put_resource("TrainingJob", "default", "job", &json!({"team": "b"}), &json!({}), &spec).await.unwrap();
    assert_eq!(outcome, PutOutcome::Configured);
    assert_eq!((relabeled.generation, relabeled.resource_version), (1, 2));
    assert_eq!(relabeled.labels, json!({"team": "b"}));
    assert_eq!(relabeled.uid, created.uid);

    // Annotations only: configured, generation kept.
    let (annotated, outcome) = store
        .put_resource("TrainingJob", "default", "job", &json!({"team": "b"}), &json!({"n": "1"}), &spec)
        .await
        .unwrap();
    assert_eq!(outcome, PutOutcome::Configured);
    assert_eq!((annotated.generation, annotated.resource_version), (1, 3));

    // Spec: configured, generation bumped; status and creation kept.
    store.set_status(&created.uid, &json!({"phase": "Running"})).await.unwrap();
    let new_spec = json!({"image": "y", "replicas": 1});
    let (respecced, outcome) = store
        .put_resource("TrainingJob", "default", "job", &json!({"team": "b"}), &json!({"n": "1"}), &new_spec)
        .await
        .unwrap();
    assert_eq!(outcome, PutOutcome::Configured);
    assert_eq!((respecced.generation, respecced.resource_version), (2, 5));
    assert_eq!(respecced.spec, new_spec);
    assert_eq!(respecced.status, json!({"phase": "Running"}));
    assert_eq!(respecced.creation_timestamp, created.creation_timestamp);
    assert_eq!(store.get_resource("TrainingJob", "default", "job").await.unwrap().unwrap(), respecced);

    // The same name in another namespace or kind is another object.
    let (other, outcome) = store.put_resource("TrainingJob", "other", "job", &labels, &json!({}), &spec).await.unwrap();
    assert_eq!(outcome, PutOutcome::Created);
    assert_ne!(other.uid, created.uid);
    let (_, outcome) = store.put_resource("Queue", "default", "job", &labels, &json!({}), &spec).await.unwrap();
    assert_eq!(outcome, PutOutcome::Created);
}

async fn get_resource_missing_is_none(store: Store) {
    assert_eq!(store.get_resource("TrainingJob", "default", "nope").await.unwrap(), None);
}

async fn set_status_bumps_resource_version_only(store: Store) {
    let (res, _) = store.put_resource("Queue", "", "q", &json!({}), &json!({}), &json!({"cap": 2})).await.unwrap();
    store.set_status(&res.uid, &json!({"used": 1})).await.unwrap();
    store.set_status(&res.uid, &json!({"used": 2})).await.unwrap();
    let got = store.get_resource("Queue", "", "q").await.unwrap().unwrap();
    assert_eq!(got.status, json!({"used": 2}));
    assert_eq!((got.generation, got.resource_version), (1, 3));
    assert_eq!(got.spec, json!({"cap": 2}));
}

async fn set_status_on_missing_uid_is_not_found(store: Store) {
    let err = store.set_status("no-such-uid", &json!({})).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
}

async fn mark_deleted_then_put_is_refused(store: Store) {
    assert!(!store.mark_deleted("TrainingJob", "default", "job").await.unwrap());
    let spec = json!({"image": "x"});
    let (res, _) = store.put_resource("TrainingJob", "default", "job", &json!({}), &json!({}), &spec).await.unwrap();
    assert!(store.mark_deleted("TrainingJob", "default", "job").await.unwrap());
    let deleting = store.get_resource("TrainingJob", "default", "job").await.unwrap().unwrap();
    let ts = deleting.deletion_timestamp.clone().unwrap();
    assert_rfc3339_secs_z(&ts);
    assert_eq!(deleting.resource_version, 2);
    assert_eq!(deleting.generation, 1);

    // Idempotent: no second bump, same timestamp.
    assert!(store.mark_deleted("TrainingJob", "default", "job").await.unwrap());
    assert_eq!(store.get_resource("TrainingJob", "default", "job").await.unwrap().unwrap(), deleting);

    // Neither an update nor an identical put goes through.
    for spec in [json!({"image": "y"}), spec.clone()] {
        let err = store.put_resource("TrainingJob", "default", "job", &json!({}), &json!({}), &spec).await.unwrap_err();
        match err {
            StoreError::BeingDeleted(what) => assert_eq!(what, "TrainingJob default/job"),
            other => panic!("{other}"),
        }
    }

    // The controller can still write status while cleaning up, then remove it.
    store.set_status(&res.uid, &json!({"phase": "Terminating"})).await.unwrap();
    assert_eq!(store.get_resource("TrainingJob", "default", "job").await.unwrap().unwrap().resource_version, 3);
    store.remove_resource(&res.uid).await.unwrap();
    let (again, outcome) =
        store.put_resource("TrainingJob", "default", "job", &json!({}), &json!({}), &spec).await.unwrap();
    assert_eq!(outcome, PutOutcome::Created);
    assert_ne!(again.uid, res.uid);
}

async fn list_resources_by_creation_then_name(store: Store) {
    let put = |ns: &'static str, name: &'static str| {
        let store = store.clone();
        async move {
            store.put_resource("TrainingJob", ns, name, &json!({}), &json!({}), &json!({})).await.unwrap();
        }
    };
    put("default", "zeta").await;
    // Timestamps have seconds precision: let the next ones be created a second later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    put("default", "charlie").await;
    put("team", "bravo").await;
    put("default", "alpha").await;
    store.put_resource("Queue", "", "q", &json!({}), &json!({}), &json!({})).await.unwrap();

    let names =
        |list: Vec<StoredResource>| list.into_iter().map(|r| format!("{}/{}", r.namespace, r.name)).collect::<Vec<_>>();
    assert_eq!(
        names(store.list_resources("TrainingJob", None).await.unwrap()),
        ["default/zeta", "default/alpha", "team/bravo", "default/charlie"]
    );
    assert_eq!(
        names(store.list_resources("TrainingJob", Some("default")).await.unwrap()),
        ["default/zeta", "default/alpha", "default/charlie"]
    );
    assert_eq!(names(store.list_resources("TrainingJob", Some("nobody")).await.unwrap()), Vec::<String>::new());
    assert_eq!(names(store.list_resources("Queue", None).await.unwrap()), ["/q"]);
}

async fn remove_resource_removes_its_events(store: Store) {
    let (a, _) = store.put_resource("TrainingJob", "default", "a", &json!({}), &json!({}), &json!({})).await.unwrap();
    let (b, _) = store.put_resource("TrainingJob", "default", "b", &json!({}), &json!({}), &json!({})).await.unwrap();
    store.add_event(&a.uid, "Normal", "Created", "made a").await.unwrap();
    store.add_event(&a.uid, "Warning", "Failed", "oops").await.unwrap();
    store.add_event(&b.uid, "Normal", "Created", "made b").await.unwrap();
    store.remove_resource(&a.uid).await.unwrap();
    assert_eq!(store.get_resource("TrainingJob", "default", "a").await.unwrap(), None);
    assert!(store.list_events(&a.uid).await.unwrap().is_empty());
    assert_eq!(store.list_events(&b.uid).await.unwrap().len(), 1);
    assert!(store.get_resource("TrainingJob", "default", "b").await.unwrap().is_some());
    // Removing again (or something never stored) is fine.
    store.remove_resource(&a.uid).await.unwrap();
    store.remove_resource("never-was").await.unwrap();
}

// ---- events ----

async fn repeated_events_fold_into_a_count(store: Store) {
    let uid = "obj-1";
    store.add_event(uid, "Normal", "Pulling", "pulling image").await.unwrap();
    store.add_event(uid, "Normal", "Pulling", "pulling image").await.unwrap();
    store.add_event(uid, "Normal", "Pulling", "pulling image").await.unwrap();
    store.add_event(uid, "Warning", "BackOff", "restarting").await.unwrap();
    // Same as an older event but not the latest: a new event.
    store.add_event(uid, "Normal", "Pulling", "pulling image").await.unwrap();
    // Same reason, other message: a new event.
    store.add_event(uid, "Normal", "Pulling", "pulling other image").await.unwrap();
    store.add_event("obj-2", "Normal", "Pulling", "pulling image").await.unwrap();

    let events = store.list_events(uid).await.unwrap();
    let summary: Vec<_> =
        events.iter().map(|e| (e.type_.as_str(), e.reason.as_str(), e.message.as_str(), e.count)).collect();
    assert_eq!(
        summary,
        [
            ("Normal", "Pulling", "pulling image", 3),
            ("Warning", "BackOff", "restarting", 1),
            ("Normal", "Pulling", "pulling image", 1),
            ("Normal", "Pulling", "pulling other image", 1),
        ]
    );
    for e in &events {
        assert_eq!(e.object_uid, uid);
        assert_rfc3339_secs_z(&e.first_timestamp);
        assert_rfc3339_secs_z(&e.last_timestamp);
        assert!(e.first_timestamp <= e.last_timestamp);
    }
    assert_eq!(store.list_events("obj-2").await.unwrap().len(), 1);
    assert!(store.list_events("nobody").await.unwrap().is_empty());
}

// ---- experiments ----

async fn experiments_create_get_and_conflict(store: Store) {
    let before = now_ms();
    let id = store.create_experiment("exp", &kv(&[("z", "1"), ("a", "2"), ("z", "3")])).await.unwrap();
    let exp = store.get_experiment(&id).await.unwrap().unwrap();
    assert_eq!(exp.experiment_id, id);
    assert_eq!(exp.name, "exp");
    assert_eq!(exp.artifact_location, format!("mlflow-artifacts:/{id}"));
    assert_eq!(exp.lifecycle_stage, "active");
    assert!(exp.creation_time >= before && exp.creation_time <= now_ms());
    assert_eq!(exp.last_update_time, exp.creation_time);
    assert_eq!(exp.tags, kv(&[("a", "2"), ("z", "3")]));
    assert_eq!(store.get_experiment_by_name("exp").await.unwrap().unwrap(), exp);

    let err = store.create_experiment("exp", &[]).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err}");
    let err = store.create_experiment("Default", &[]).await.unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err}");

    assert_eq!(store.get_experiment("12345").await.unwrap(), None);
    assert_eq!(store.get_experiment("not-a-number").await.unwrap(), None);
    assert_eq!(store.get_experiment("-1").await.unwrap(), None);
    assert_eq!(store.get_experiment_by_name("nope").await.unwrap(), None);
}

async fn get_or_create_experiment_is_stable(store: Store) {
    assert_eq!(store.get_or_create_experiment("Default").await.unwrap(), "0");
    let id = store.get_or_create_experiment("jobs").await.unwrap();
    assert_eq!(id, "1");
    assert_eq!(store.get_or_create_experiment("jobs").await.unwrap(), id);
    let exp = store.get_experiment(&id).await.unwrap().unwrap();
    assert_eq!((exp.name.as_str(), exp.lifecycle_stage.as_str()), ("jobs", "active"));
    assert_eq!(exp.artifact_location, "mlflow-artifacts:/1");

    // Racing callers all get the one experiment.
    let ids: Vec<String> = futures(8, |_| {
        let store = store.clone();
        async move { store.get_or_create_experiment("raced").await.unwrap() }
    })
    .await;
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
}

/// Run `n` tasks and collect their results, in order.
async fn futures<T, F, Fut>(n: usize, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(f(i))).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

// ---- runs ----

async fn create_get_update_run(store: Store) {
    let exp_id = store.create_experiment("exp", &[]).await.unwrap();
    let run = store.create_run(&exp_id, "my-run", 1_700_000_000_000, &kv(&[("b", "2"), ("a", "1")])).await.unwrap();
    assert_eq!(run.run_id.len(), 32);
    assert!(run.run_id.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)), "{}", run.run_id);
    assert_eq!(run.experiment_id, exp_id);
    assert_eq!(run.run_name, "my-run");
    assert_eq!(run.status, "RUNNING");
    assert_eq!(run.start_time, 1_700_000_000_000);
    assert_eq!(run.end_time, None);
    assert_eq!(run.lifecycle_stage, "active");
    assert_eq!(run.artifact_uri, format!("mlflow-artifacts:/{exp_id}/{}/artifacts", run.run_id));
    assert_eq!(run.tags, kv(&[("a", "1"), ("b", "2")]));
    assert!(run.metrics.is_empty() && run.params.is_empty());
    assert_eq!(store.get_run(&run.run_id).await.unwrap().unwrap(), run);

    let other = store.create_run(&exp_id, "my-run", 1, &[]).await.unwrap();
    assert_ne!(other.run_id, run.run_id);

    let updated = store.update_run(&run.run_id, Some("FINISHED"), Some(1_700_000_100_000), None).await.unwrap();
    assert_eq!(updated.status, "FINISHED");
    assert_eq!(updated.end_time, Some(1_700_000_100_000));
    assert_eq!(updated.run_name, "my-run");
    let renamed = store.update_run(&run.run_id, None, None, Some("renamed")).await.unwrap();
    assert_eq!((renamed.status.as_str(), renamed.run_name.as_str()), ("FINISHED", "renamed"));
    assert_eq!(renamed.end_time, Some(1_700_000_100_000));
    let untouched = store.update_run(&run.run_id, None, None, None).await.unwrap();
    assert_eq!(untouched, renamed);
    assert_eq!(store.get_run(&run.run_id).await.unwrap().unwrap(), renamed);
}

async fn run_errors(store: Store) {
    for exp in ["999", "x", ""] {
        let err = store.create_run(exp, "r", 0, &[]).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    }
    let missing = "0123456789abcdef0123456789abcdef";
    assert_eq!(store.get_run(missing).await.unwrap(), None);
    let err = store.update_run(missing, Some("FAILED"), None, None).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    let err = store.log_batch(missing, &[point("m", 1.0, 1, 1)], &[], &[]).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    let err = store.metric_history(missing, "m").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
}

// ---- log_batch ----

async fn params_are_immutable(store: Store) {
    let run = new_run(&store).await;
    store.log_batch(&run.run_id, &[], &kv(&[("lr", "0.1"), ("bs", "32")]), &[]).await.unwrap();
    // The same value again is fine.
    store.log_batch(&run.run_id, &[point("m", 1.0, 1, 0)], &kv(&[("lr", "0.1"), ("opt", "adam")]), &[]).await.unwrap();

    // Another value: ParamChanged, and nothing of that batch is written.
    let err = store
        .log_batch(
            &run.run_id,
            &[point("m", 2.0, 2, 1), point("other", 5.0, 2, 1)],
            &kv(&[("new", "x"), ("lr", "0.2")]),
            &kv(&[("t", "v")]),
        )
        .await
        .unwrap_err();
    match err {
        StoreError::ParamChanged { run_id, key, old, new } => {
            assert_eq!(
                (run_id.as_str(), key.as_str(), old.as_str(), new.as_str()),
                (run.run_id.as_str(), "lr", "0.1", "0.2")
            );
        }
        other => panic!("{other}"),
    }
    let got = store.get_run(&run.run_id).await.unwrap().unwrap();
    assert_eq!(got.params, kv(&[("bs", "32"), ("lr", "0.1"), ("opt", "adam")]));
    assert!(got.tags.is_empty());
    assert_eq!(got.metrics, vec![point("m", 1.0, 1, 0)]);
    assert_eq!(store.metric_history(&run.run_id, "m").await.unwrap(), vec![point("m", 1.0, 1, 0)]);
    assert!(store.metric_history(&run.run_id, "other").await.unwrap().is_empty());

    // Two values for one key in one batch: refused too.
    let err = store.log_batch(&run.run_id, &[], &kv(&[("k", "1"), ("k", "2")]), &[]).await.unwrap_err();
    assert!(matches!(err, StoreError::ParamChanged { .. }), "{err}");
    // The same value twice in one batch is fine.
    store.log_batch(&run.run_id, &[], &kv(&[("k", "1"), ("k", "1")]), &[]).await.unwrap();
    assert!(store.get_run(&run.run_id).await.unwrap().unwrap().params.contains(&("k".into(), "1".into())));
}

async fn metric_retry_is_idempotent(store: Store) {
    let run = new_run(&store).await;
    let batch: Vec<MetricPoint> = (0..10).map(|i| point("loss", 1.0 / (i + 1) as f64, 100 + i, i)).collect();
    store.log_batch(&run.run_id, &batch, &[], &[]).await.unwrap();
    store.log_batch(&run.run_id, &batch, &[], &[]).await.unwrap();
    // A point repeated inside one batch is also stored once.
    store.log_batch(&run.run_id, &[batch[3].clone(), batch[3].clone()], &[], &[]).await.unwrap();
    assert_eq!(store.metric_history(&run.run_id, "loss").await.unwrap(), batch);
    // A different value at the same step and timestamp is a distinct point.
    store.log_batch(&run.run_id, &[point("loss", 7.0, 100, 0)], &[], &[]).await.unwrap();
    let history = store.metric_history(&run.run_id, "loss").await.unwrap();
    assert_eq!(history.len(), 11);
    assert_eq!(&history[..2], &[point("loss", 1.0, 100, 0), point("loss", 7.0, 100, 0)]);
}

async fn nan_and_infinities_round_trip(store: Store) {
    let run = new_run(&store).await;
    store
        .log_batch(
            &run.run_id,
            &[
                point("nan", f64::NAN, 1, 0),
                point("inf", f64::INFINITY, 1, 0),
                point("ninf", f64::NEG_INFINITY, 1, 0),
                point("mixed", 0.0, 1, 0),
                point("mixed", f64::NAN, 1, 0),
            ],
            &[],
            &[],
        )
        .await
        .unwrap();
    // Retrying the NaN point does not duplicate it.
    store.log_batch(&run.run_id, &[point("nan", f64::NAN, 1, 0)], &[], &[]).await.unwrap();

    let nan = store.metric_history(&run.run_id, "nan").await.unwrap();
    assert_eq!(nan.len(), 1);
    assert!(nan[0].value.is_nan());
    assert_eq!(store.metric_history(&run.run_id, "inf").await.unwrap(), vec![point("inf", f64::INFINITY, 1, 0)]);
    assert_eq!(store.metric_history(&run.run_id, "ninf").await.unwrap(), vec![point("ninf", f64::NEG_INFINITY, 1, 0)]);
    // A real 0 and a NaN at the same step and time are two points.
    let mixed = store.metric_history(&run.run_id, "mixed").await.unwrap();
    assert_eq!(mixed.len(), 2);
    assert_eq!(mixed.iter().filter(|p| p.value.is_nan()).count(), 1);
    assert_eq!(mixed.iter().filter(|p| p.value == 0.0).count(), 1);

    let latest = store.get_run(&run.run_id).await.unwrap().unwrap().metrics;
    let keys: Vec<_> = latest.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(keys, ["inf", "mixed", "nan", "ninf"]);
    assert_eq!(latest[0].value, f64::INFINITY);
    assert!(latest[2].value.is_nan());
    assert_eq!(latest[3].value, f64::NEG_INFINITY);
}

async fn latest_metric_is_highest_step_then_timestamp(store: Store) {
    let run = new_run(&store).await;
    let latest = |store: Store, run_id: String| async move { store.get_run(&run_id).await.unwrap().unwrap().metrics };
    store.log_batch(&run.run_id, &[point("acc", 0.5, 100, 5)], &[], &[]).await.unwrap();
    // A lower step logged later does not win.
    store.log_batch(&run.run_id, &[point("acc", 0.9, 500, 3)], &[], &[]).await.unwrap();
    assert_eq!(latest(store.clone(), run.run_id.clone()).await, vec![point("acc", 0.5, 100, 5)]);
    // Same step, later timestamp wins.
    store.log_batch(&run.run_id, &[point("acc", 0.6, 200, 5)], &[], &[]).await.unwrap();
    assert_eq!(latest(store.clone(), run.run_id.clone()).await, vec![point("acc", 0.6, 200, 5)]);
    // Same step, earlier timestamp does not.
    store.log_batch(&run.run_id, &[point("acc", 0.1, 150, 5)], &[], &[]).await.unwrap();
    assert_eq!(latest(store.clone(), run.run_id.clone()).await, vec![point("acc", 0.6, 200, 5)]);
    // Within one batch, in any order, the max (step, timestamp) wins.
    store
        .log_batch(
            &run.run_id,
            &[point("acc", 0.7, 300, 9), point("acc", 0.8, 250, 10), point("acc", 0.2, 400, 8), point("b", 1.0, 1, 1)],
            &[],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        latest(store.clone(), run.run_id.clone()).await,
        vec![point("acc", 0.8, 250, 10), point("b", 1.0, 1, 1)]
    );
    // Same step and timestamp: the larger value wins (MLflow's tie-break).
    store.log_batch(&run.run_id, &[point("b", 3.0, 1, 1)], &[], &[]).await.unwrap();
    store.log_batch(&run.run_id, &[point("b", 2.0, 1, 1)], &[], &[]).await.unwrap();
    assert_eq!(latest(store.clone(), run.run_id.clone()).await[1], point("b", 3.0, 1, 1));
    // History is by step then timestamp.
    let steps: Vec<i64> = store.metric_history(&run.run_id, "acc").await.unwrap().iter().map(|p| p.step).collect();
    assert_eq!(steps, [3, 5, 5, 5, 8, 9, 10]);
}

async fn tags_are_mutable_and_everything_sorted(store: Store) {
    let run = store.create_run("0", "r", 0, &kv(&[("mlflow.user", "a")])).await.unwrap();
    store
        .log_batch(
            &run.run_id,
            &[point("z", 1.0, 1, 1), point("a", 2.0, 1, 1)],
            &kv(&[("y", "1"), ("b", "2")]),
            &kv(&[("mlflow.user", "b"), ("note", "x"), ("note", "y")]),
        )
        .await
        .unwrap();
    store.log_batch(&run.run_id, &[], &[], &kv(&[("c", "1")])).await.unwrap();
    let got = store.get_run(&run.run_id).await.unwrap().unwrap();
    assert_eq!(got.metrics.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(), ["a", "z"]);
    assert_eq!(got.params, kv(&[("b", "2"), ("y", "1")]));
    assert_eq!(got.tags, kv(&[("c", "1"), ("mlflow.user", "b"), ("note", "y")]));
    // An empty batch is fine.
    store.log_batch(&run.run_id, &[], &[], &[]).await.unwrap();
}

async fn large_batches_span_several_inserts(store: Store) {
    let run = new_run(&store).await;
    let metrics: Vec<MetricPoint> = (0..1_234).map(|i| point(&format!("m{}", i % 3), i as f64, i, i)).collect();
    let params: Vec<(String, String)> = (0..1_100).map(|i| (format!("p{i:04}"), i.to_string())).collect();
    let tags: Vec<(String, String)> = (0..600).map(|i| (format!("t{i:04}"), i.to_string())).collect();
    store.log_batch(&run.run_id, &metrics, &params, &tags).await.unwrap();
    store.log_batch(&run.run_id, &metrics, &params, &tags).await.unwrap();
    let got = store.get_run(&run.run_id).await.unwrap().unwrap();
    assert_eq!(got.params, params);
    assert_eq!(got.tags, tags);
    assert_eq!(
        got.metrics,
        vec![
            point("m0", 1_233.0, 1_233, 1_233),
            point("m1", 1_231.0, 1_231, 1_231),
            point("m2", 1_232.0, 1_232, 1_232)
        ]
    );
    let total: usize = futures(3, |i| {
        let store = store.clone();
        let run_id = got.run_id.clone();
        async move { store.metric_history(&run_id, &format!("m{i}")).await.unwrap().len() }
    })
    .await
    .into_iter()
    .sum();
    assert_eq!(total, 1_234);
    // Keys interleaved in a batch (each bound once per statement) land on their own points.
    for key in ["m0", "m1", "m2"] {
        let expected: Vec<MetricPoint> = metrics.iter().filter(|m| m.key == key).cloned().collect();
        assert_eq!(store.metric_history(&run.run_id, key).await.unwrap(), expected, "{key}");
    }
}

async fn many_keys_nan_and_infinities_in_one_batch(store: Store) {
    let run = new_run(&store).await;
    // 950 keys of one point and one key of 50 points (with NaN and infinities): more keys than
    // one SQLite insert statement takes.
    let mut metrics: Vec<MetricPoint> = (0..950).map(|i| point(&format!("k{i:04}"), i as f64 * 0.1, i, 7)).collect();
    let special = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -2.5e-300, f64::MIN_POSITIVE, 1e308];
    for i in 0..50 {
        metrics.insert(i * 19, point("many", special[i % special.len()], 1000 + i as i64, i as i64));
    }
    store.log_batch(&run.run_id, &metrics, &[], &[]).await.unwrap();
    store.log_batch(&run.run_id, &metrics, &[], &[]).await.unwrap();
    for key in ["k0000", "k0399", "k0400", "k0949"] {
        let expected: Vec<MetricPoint> = metrics.iter().filter(|m| m.key == key).cloned().collect();
        assert_eq!(store.metric_history(&run.run_id, key).await.unwrap(), expected, "{key}");
    }
    let many = store.metric_history(&run.run_id, "many").await.unwrap();
    assert_eq!(many.len(), 50);
    for (i, m) in many.iter().enumerate() {
        let want = special[i % special.len()];
        assert_eq!((m.step, m.timestamp), (i as i64, 1000 + i as i64));
        assert!(
            m.value.to_bits() == want.to_bits() || (want.is_nan() && m.value.is_nan()),
            "{i}: {} vs {want}",
            m.value
        );
    }
    let got = store.get_run(&run.run_id).await.unwrap().unwrap();
    assert_eq!(got.metrics.len(), 951);
}

async fn failing_batches_in_a_group_are_rolled_back_alone(store: Store) {
    // Many concurrent batches share group commits: the failing ones (an absent run, a changed
    // param, metrics and tags included) write nothing and get their own error; every other
    // batch of their groups lands.
    let run = new_run(&store).await;
    store.log_batch(&run.run_id, &[], &kv(&[("lr", "0.1")]), &[]).await.unwrap();
    let calls = futures(48, |i| {
        let store = store.clone();
        let run_id = run.run_id.clone();
        async move {
            let i = i as i64;
            let metrics = [point("good", i as f64, i, i), point(&format!("k{i}"), 1.0, i, i)];
            match i % 3 {
                0 => store.log_batch(&run_id, &metrics, &[], &kv(&[(format!("t{i}").as_str(), "v")])).await,
                1 => {
                    let bad = [point("bad", i as f64, i, i)];
                    store.log_batch(&run_id, &bad, &kv(&[("lr", "0.2")]), &kv(&[("bad", "x")])).await
                }
                _ => store.log_batch("0123456789abcdef0123456789abcdef", &metrics, &[], &[]).await,
            }
        }
    })
    .await;
    for (i, result) in calls.into_iter().enumerate() {
        match (i % 3, result) {
            (0, Ok(())) => {}
            (1, Err(StoreError::ParamChanged { key, .. })) => assert_eq!(key, "lr"),
            (2, Err(StoreError::NotFound(what))) => assert!(what.contains("0123456789abcdef"), "{what}"),
            (_, other) => panic!("call {i}: {other:?}"),
        }
    }
    let got = store.get_run(&run.run_id).await.unwrap().unwrap();
    assert_eq!(got.params, kv(&[("lr", "0.1")]));
    assert_eq!(got.tags.len(), 16, "{:?}", got.tags);
    assert!(got.tags.iter().all(|(k, _)| k != "bad"));
    let good: Vec<i64> = store.metric_history(&run.run_id, "good").await.unwrap().iter().map(|p| p.step).collect();
    assert_eq!(good, (0..48).step_by(3).collect::<Vec<i64>>());
    assert!(store.metric_history(&run.run_id, "bad").await.unwrap().is_empty());
    assert_eq!(got.metrics.len(), 17, "good and k0, k3, ... k45");
}

// ---- concurrency ----

async fn concurrent_writers_do_not_fail(store: Store) {
    const TASKS: usize = 20;
    const BATCHES: i64 = 50;
    const POINTS: i64 = 100;
    let exp = store.create_experiment("load", &[]).await.unwrap();
    let mut runs = Vec::new();
    for i in 0..TASKS {
        runs.push(store.create_run(&exp, &format!("run{i}"), 0, &[]).await.unwrap().run_id);
    }
    let writers = futures(TASKS, |i| {
        let store = store.clone();
        let run_id = runs[i].clone();
        async move {
            for b in 0..BATCHES {
                let batch: Vec<MetricPoint> =
                    (0..POINTS).map(|p| point("loss", (b * POINTS + p) as f64, b, b * POINTS + p)).collect();
                store
                    .log_batch(
                        &run_id,
                        &batch,
                        &[(format!("p{b}"), "v".to_owned())],
                        &[("batch".to_owned(), b.to_string())],
                    )
                    .await
                    .unwrap();
            }
        }
    });
    // Readers and other writers (resources, events) at the same time.
    let others = futures(4, |i| {
        let store = store.clone();
        let run_id = runs[i].clone();
        async move {
            for n in 0..50 {
                store.get_run(&run_id).await.unwrap().unwrap();
                let name = format!("job-{i}-{n}");
                let (res, _) = store
                    .put_resource("TrainingJob", "default", &name, &json!({}), &json!({}), &json!({"n": n}))
                    .await
                    .unwrap();
                store.set_status(&res.uid, &json!({"phase": "Running"})).await.unwrap();
                store.add_event(&res.uid, "Normal", "Started", "started").await.unwrap();
            }
        }
    });
    let (_, _) = tokio::join!(writers, others);

    for run_id in &runs {
        let history = store.metric_history(run_id, "loss").await.unwrap();
        assert_eq!(history.len() as i64, BATCHES * POINTS);
        let run = store.get_run(run_id).await.unwrap().unwrap();
        assert_eq!(run.params.len() as i64, BATCHES);
        assert_eq!(run.tags, kv(&[("batch", &(BATCHES - 1).to_string())]));
        assert_eq!(run.metrics[0].step, BATCHES * POINTS - 1);
    }
    assert_eq!(store.list_resources("TrainingJob", None).await.unwrap().len(), 200);
}

async fn two_stores_on_one_database_wait_for_each_other(db: &TestDb) {
    // Two pools on one database stand for two processes (server and CLI): on SQLite the busy
    // timeout and BEGIN IMMEDIATE, on PostgreSQL the write lock, make them wait for each
    // other rather than fail.
    let a = db.store.clone();
    let b = db.reopen().await;
    let run_id = a.create_run("0", "shared", 0, &[]).await.unwrap().run_id;
    let results = futures(8, |i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let run_id = run_id.clone();
        async move {
            for n in 0..20i64 {
                let step = i as i64 * 1_000 + n;
                store.log_batch(&run_id, &[point("m", 1.0, step, step)], &[], &[]).await.unwrap();
                store.add_event(&run_id, "Normal", "Logged", &format!("{i}-{n}")).await.unwrap();
            }
        }
    })
    .await;
    assert_eq!(results.len(), 8);
    assert_eq!(b.metric_history(&run_id, "m").await.unwrap().len(), 160);
    assert_eq!(a.list_events(&run_id).await.unwrap().len(), 160);
}

// ---- the web UI's runs table ----

async fn runs_table_reads_only_the_asked_columns(store: Store) {
    use crate::runs_search::{TableCell, ViewType};
    let exp = store.create_experiment("table", &[]).await.unwrap();
    let r1 = store.create_run(&exp, "one", 1_000, &kv(&[("t", "u"), ("mlflow.user", "me")])).await.unwrap().run_id;
    let r2 = store.create_run(&exp, "two", 2_000, &[]).await.unwrap().run_id;
    let r3 = store.create_run(&exp, "gone", 3_000, &[]).await.unwrap().run_id;
    store.log_batch(&r1, &[point("a", 1.0, 1, 0), point("b", f64::NAN, 1, 0)], &kv(&[("p", "éx")]), &[]).await.unwrap();
    store
        .log_batch(&r2, &[point("a", 2.0, 1, 0), point("c", 3.0, 1, 0)], &kv(&[("p", "y"), ("q", "z")]), &[])
        .await
        .unwrap();
    store.log_batch(&r3, &[point("a", 9.0, 1, 0)], &[], &[]).await.unwrap();
    store.set_run_lifecycle(&r3, "deleted").await.unwrap();
    let cols: Vec<String> =
        ["metrics.a", "metrics.b", "params.p", "tags.t", "bogus", "metrics.a"].iter().map(|c| c.to_string()).collect();
    let exps = [exp.clone()];
    let t = store.runs_table(&exps, None, ViewType::ActiveOnly, 100, |_, _, _| cols.clone()).await.unwrap();
    assert_eq!(t.rows.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), [r2.as_str(), r1.as_str()]);
    assert_eq!(t.metric_keys, ["a", "b", "c"]);
    assert_eq!(t.param_keys, ["p", "q"]);
    assert_eq!(t.tag_keys, ["t"], "system tags left out");
    let two = &t.rows[0];
    assert_eq!((two.run_name.as_str(), two.status.as_str(), two.start_time), ("two", "RUNNING", 2_000));
    use TableCell::{Missing, Number, Text};
    assert_eq!(two.cells, [Number(2.0), Missing, Text("y".into()), Missing, Missing, Number(2.0)]);
    let one = &t.rows[1].cells;
    assert_eq!(one[0], Number(1.0));
    assert_eq!(one[1], Missing, "NaN reads as missing");
    assert_eq!(one[2..], [Text("éx".into()), Text("u".into()), Missing, Number(1.0)]);

    // More columns than one query carries: read as rows per table, same values.
    let wide: Vec<String> = (0..150).map(|i| if i % 2 == 0 { "metrics.a" } else { "params.p" }.to_string()).collect();
    let w = store.runs_table(&exps, None, ViewType::ActiveOnly, 100, |_, _, _| wide.clone()).await.unwrap();
    assert_eq!(w.rows.len(), 2);
    assert_eq!(w.rows[0].cells.len(), 150);
    assert_eq!(w.rows[0].cells[..2], [Number(2.0), Text("y".into())]);
    assert_eq!(w.rows[1].cells[148..], [Number(1.0), Text("éx".into())]);

    // An exact filter (SQL), a filter checked in memory (non-ASCII ILIKE), a limit.
    let f = capstan_search::parse_filter("metrics.a > 1").unwrap();
    let t = store.runs_table(&exps, f.as_ref(), ViewType::ActiveOnly, 100, |_, _, _| cols.clone()).await.unwrap();
    assert_eq!(t.rows.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), [r2.as_str()]);
    assert_eq!(t.metric_keys, ["a", "c"]);
    let f = capstan_search::parse_filter("params.p ILIKE 'é%'").unwrap();
    let t = store.runs_table(&exps, f.as_ref(), ViewType::ActiveOnly, 100, |_, _, _| cols.clone()).await.unwrap();
    assert_eq!(t.rows.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), [r1.as_str()]);
    assert_eq!(t.rows[0].cells[..3], [Number(1.0), Missing, Text("éx".into())], "NaN reads as missing here too");
    assert_eq!(t.param_keys, ["p"]);
    let t = store.runs_table(&exps, None, ViewType::ActiveOnly, 1, |_, _, _| cols.clone()).await.unwrap();
    assert_eq!(t.rows.len(), 1);
    assert_eq!(t.rows[0].run_id, r2);
    let t = store.runs_table(&exps, None, ViewType::DeletedOnly, 100, |m, _, _| m.to_vec()).await.unwrap();
    assert_eq!(t.rows.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), [r3.as_str()]);
    assert_eq!(t.metric_keys, ["a"]);
    assert_eq!(t.columns, ["a"], "chosen from the keys");
    assert_eq!(t.rows[0].cells, [Missing], "`a` names no table");
    let none = store.runs_table(&["nope".to_string()], None, ViewType::All, 100, |_, _, _| cols.clone()).await.unwrap();
    assert!(none.rows.is_empty() && none.metric_keys.is_empty());
}

// ---- every backend ----

/// One test on one backend: `store` and `multi` tests take a store on a fresh database,
/// `db` and `multi_db` ones the [`TestDb`] (to open more stores on it); `multi*` run on a
/// multi-threaded runtime.
macro_rules! backend_test {
    ($backend:ident store $name:ident) => {
        #[tokio::test]
        async fn $name() {
            let db = TestDb::new(Backend::$backend).await;
            super::$name(db.store.clone()).await;
        }
    };
    ($backend:ident db $name:ident) => {
        #[tokio::test]
        async fn $name() {
            let db = TestDb::new(Backend::$backend).await;
            super::$name(&db).await;
        }
    };
    ($backend:ident multi $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            let db = TestDb::new(Backend::$backend).await;
            super::$name(db.store.clone()).await;
        }
    };
    ($backend:ident multi_db $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            let db = TestDb::new(Backend::$backend).await;
            super::$name(&db).await;
        }
    };
}

/// The listed tests, once per backend: `sqlite::NAME` and `postgres::NAME`.
macro_rules! on_both_backends {
    ($($kind:ident $name:ident;)*) => {
        mod sqlite {
            use super::*;
            use crate::test_db::Backend;
            $(backend_test!(Sqlite $kind $name);)*
        }
        mod postgres {
            use super::*;
            use crate::test_db::Backend;
            $(backend_test!(Postgres $kind $name);)*
        }
    };
}

on_both_backends! {
    store migration_inserts_default_experiment_zero;
    store put_resource_created_unchanged_configured;
    store get_resource_missing_is_none;
    store set_status_bumps_resource_version_only;
    store set_status_on_missing_uid_is_not_found;
    store mark_deleted_then_put_is_refused;
    store list_resources_by_creation_then_name;
    store remove_resource_removes_its_events;
    store repeated_events_fold_into_a_count;
    store experiments_create_get_and_conflict;
    store get_or_create_experiment_is_stable;
    store create_get_update_run;
    store run_errors;
    store params_are_immutable;
    store metric_retry_is_idempotent;
    store nan_and_infinities_round_trip;
    store latest_metric_is_highest_step_then_timestamp;
    store tags_are_mutable_and_everything_sorted;
    store large_batches_span_several_inserts;
    store many_keys_nan_and_infinities_in_one_batch;
    store failing_batches_in_a_group_are_rolled_back_alone;
    store runs_table_reads_only_the_asked_columns;
    multi concurrent_writers_do_not_fail;
    multi_db two_stores_on_one_database_wait_for_each_other;
    db data_survives_reopening;
}
