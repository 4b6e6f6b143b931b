//! Long metric histories through the store, on SQLite and on PostgreSQL (each test runs as
//! `sqlite_NAME` and `postgres_NAME`; the PostgreSQL ones need `CAPSTAN_TEST_POSTGRES_URL`,
//! see `scripts/postgres-setup.sh`, and fail without it):
//!
//! - the bulk-interval view computed from tiles equals [`downsample::downsample`] over the
//!   points themselves, whatever the batches, their order, retries, NaN and infinities, and
//!   the step range asked;
//! - paged history equals the full history;
//! - tiles of points stored before the tiles migration are filled in by it.

use capstan_store::downsample::{self, Sample};
use capstan_store::test_db::{Backend, TestDb};
use capstan_store::{MetricPoint, Store, StoreError};
use sea_orm::{ConnectionTrait, Database, Statement};
use sea_orm_migration::MigratorTrait;

/// xorshift64*: deterministic pseudo-random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn value(&mut self) -> f64 {
        match self.below(20) {
            0 => f64::NAN,
            1 => f64::INFINITY,
            2 => f64::NEG_INFINITY,
            3 | 4 => (self.below(5) as f64) - 2.0,
            _ => (self.below(2_000_000) as f64) / 1000.0 - 1000.0,
        }
    }
}

fn point(key: &str, step: i64, timestamp: i64, value: f64) -> MetricPoint {
    MetricPoint { key: key.to_owned(), value, timestamp, step }
}

fn sample(p: &MetricPoint) -> Sample {
    Sample { step: p.step, timestamp: p.timestamp, value: p.value }
}

/// Same points (NaN equal to NaN).
fn assert_same_points(got: &[Sample], want: &[Sample], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {} points, expected {}", got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g == w, "{what}: point {i} is {g:?}, expected {w:?}");
    }
}

/// The step of the i-th point of a scenario.
type StepOf = Box<dyn Fn(usize, &mut Rng) -> i64>;

async fn new_run(store: &Store) -> String {
    store.create_run("0", "long", 0, &[]).await.unwrap().run_id
}

/// The bulk-interval answer for one run, as samples.
async fn bulk(store: &Store, run: &str, key: &str, range: (Option<i64>, Option<i64>), n: usize) -> Vec<Sample> {
    let got = store.metric_history_bulk_interval(&[run.to_owned()], key, range.0, range.1, n).await.unwrap();
    assert!(got.iter().all(|(r, p)| r == run && p.key == key));
    got.iter().map(|(_, p)| sample(p)).collect()
}

/// The pure answer over the points of `history` within the range.
fn expected(history: &[Sample], range: (Option<i64>, Option<i64>), n: usize) -> Vec<Sample> {
    let (lo, hi) = (range.0.unwrap_or(i64::MIN), range.1.unwrap_or(i64::MAX));
    let inside: Vec<Sample> = history.iter().copied().filter(|p| p.step >= lo && p.step <= hi).collect();
    downsample::downsample(&inside, n)
}

async fn bulk_interval_equals_the_pure_downsampling(store: Store) {
    let mut rng = Rng(0x5eed);
    for scenario in 0..6u64 {
        let run = new_run(&store).await;
        // Steps: dense from 0, sparse and wide, negative, or many points per step.
        let (len, step_of): (usize, StepOf) = match scenario {
            0 => (5_000, Box::new(|i, _| i as i64)),
            1 => (3_000, Box::new(|_, r| r.below(10_000_000) as i64)),
            2 => (2_000, Box::new(|i, _| i as i64 * 37 - 40_000)),
            3 => (2_500, Box::new(|_, r| r.below(40) as i64)),
            4 => (1_500, Box::new(|i, _| (i as i64) << 30)),
            _ => (100, Box::new(|i, _| i as i64)),
        };
        let mut points: Vec<MetricPoint> = (0..len)
            .map(|i| {
                let step = step_of(i, &mut rng);
                point("loss", step, rng.below(4) as i64, rng.value())
            })
            .collect();
        // A spike somewhere.
        let spike = rng.below(len as u64) as usize;
        points[spike].value = 1e12;
        // Logged in shuffled batches of various sizes, some of them twice (retries).
        let mut order: Vec<usize> = (0..len).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut at = 0;
        while at < len {
            let size = 1 + rng.below(900) as usize;
            let batch: Vec<MetricPoint> = order[at..(at + size).min(len)].iter().map(|&i| points[i].clone()).collect();
            store.log_batch(&run, &batch, &[], &[]).await.unwrap();
            if rng.below(4) == 0 {
                store.log_batch(&run, &batch, &[], &[]).await.unwrap();
            }
            at += size;
        }
        let history: Vec<Sample> = store.metric_history(&run, "loss").await.unwrap().iter().map(sample).collect();
        let (min_step, max_step) = (history[0].step, history[history.len() - 1].step);
        let mut ranges = vec![(None, None), (Some(min_step), Some(max_step)), (Some(i64::MIN), Some(i64::MAX))];
        for _ in 0..4 {
            let a = min_step + (rng.below((max_step - min_step) as u64 + 1) as i64);
            let b = a + (rng.below((max_step - a) as u64 + 1) as i64);
            ranges.push((Some(a), Some(b)));
        }
        ranges.push((Some(max_step + 1), Some(max_step + 10)));
        for range in ranges {
            for n in [1, 3, 4, 7, 50, 320, 2500] {
                let got = bulk(&store, &run, "loss", range, n).await;
                let want = expected(&history, range, n);
                assert_same_points(&got, &want, &format!("scenario {scenario}, range {range:?}, max_results {n}"));
            }
        }
        // The highest and lowest values (the spike, or an infinity) are in the default view.
        let view = bulk(&store, &run, "loss", (None, None), 320).await;
        let values: Vec<f64> = history.iter().map(|p| p.value).filter(|v| !v.is_nan()).collect();
        let (lowest, highest) =
            values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        assert!(highest >= 1e12);
        assert!(view.iter().any(|p| p.value == highest), "scenario {scenario}: the highest value is lost");
        assert!(view.iter().any(|p| p.value == lowest), "scenario {scenario}: the lowest value is lost");
    }
}

async fn bulk_interval_over_runs_and_errors(store: Store) {
    let a = new_run(&store).await;
    let b = new_run(&store).await;
    let empty = new_run(&store).await;
    let batch: Vec<MetricPoint> = (0..1000).map(|i| point("m", i, i, (i % 10) as f64)).collect();
    store.log_batch(&a, &batch, &[], &[]).await.unwrap();
    store.log_batch(&b, &batch[..10], &[], &[]).await.unwrap();
    let runs = vec![b.clone(), empty.clone(), a.clone()];
    let got = store.metric_history_bulk_interval(&runs, "m", None, None, 100).await.unwrap();
    // By run in the order asked, then by step; all 10 of b, none of the empty run.
    let run_order: Vec<&str> = got.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(run_order.iter().filter(|r| **r == b).count(), 10);
    assert!(run_order.iter().take(10).all(|r| *r == b));
    assert!(run_order.iter().skip(10).all(|r| *r == a));
    assert!((11..=100 + 10).contains(&got.len()), "{}", got.len());
    assert!(got[10..].windows(2).all(|w| w[0].1.step < w[1].1.step));
    // Unknown metric: nothing. Unknown run: NotFound.
    assert!(store
        .metric_history_bulk_interval(std::slice::from_ref(&a), "nope", None, None, 10)
        .await
        .unwrap()
        .is_empty());
    let missing = "0123456789abcdef0123456789abcdef".to_owned();
    let err = store.metric_history_bulk_interval(&[a.clone(), missing], "m", None, None, 10).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    // An empty or inverted range is empty; max_results 0 is taken as 1.
    assert!(bulk(&store, &a, "m", (Some(10), Some(9)), 10).await.is_empty());
    assert_eq!(bulk(&store, &a, "m", (None, None), 0).await.len(), 1);
}

async fn history_pages_cover_the_history(store: Store) {
    let run = new_run(&store).await;
    let mut rng = Rng(7);
    let points: Vec<MetricPoint> =
        (0..2_345).map(|i| point("acc", (i / 3) as i64, rng.below(1000) as i64, rng.value())).collect();
    for chunk in points.chunks(1000) {
        store.log_batch(&run, chunk, &[], &[]).await.unwrap();
    }
    store.log_batch(&run, &[point("other", 1, 1, 1.0)], &[], &[]).await.unwrap();
    let full: Vec<Sample> = store.metric_history(&run, "acc").await.unwrap().iter().map(sample).collect();
    assert_eq!(full.len(), 2_345);
    for page_size in [1u64, 100, 1000, 2_345, 25_000] {
        let mut paged = Vec::new();
        let mut offset = 0;
        loop {
            let (page, more) = store.metric_history_page(&run, "acc", offset, page_size).await.unwrap();
            assert!(page.len() as u64 <= page_size);
            assert!(page.iter().all(|p| p.key == "acc"));
            paged.extend(page.iter().map(sample));
            offset += page.len() as u64;
            if !more {
                break;
            }
            assert_eq!(page.len() as u64, page_size, "a page before the last is full");
        }
        assert_same_points(&paged, &full, &format!("pages of {page_size}"));
    }
    let (page, more) = store.metric_history_page(&run, "acc", 5_000, 10).await.unwrap();
    assert!(page.is_empty() && !more);
    let (page, more) = store.metric_history_page(&run, "nope", 0, 10).await.unwrap();
    assert!(page.is_empty() && !more);
    let err = store.metric_history_page("0123456789abcdef0123456789abcdef", "acc", 0, 10).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
}

async fn tiles_migration_fills_tiles_of_stored_points(db: &TestDb) {
    let store = db.store.clone();
    let run = new_run(&store).await;
    let mut rng = Rng(99);
    let points: Vec<MetricPoint> = (0..3_000).map(|i| point("m", i * 7, 0, rng.value())).collect();
    for chunk in points.chunks(1000) {
        store.log_batch(&run, chunk, &[], &[]).await.unwrap();
    }
    let before = bulk(&store, &run, "m", (None, None), 320).await;
    // Undo the tiles migration (and any later one; it drops the table) and apply them again:
    // it rebuilds every tile from the stored points.
    let conn = Database::connect(db.url.as_str()).await.unwrap();
    let names: Vec<String> =
        capstan_store::migrations::Migrator::migrations().iter().map(|m| m.name().to_owned()).collect();
    let tiles_at = names.iter().position(|n| n == "m20261128_000003_metric_tiles").expect("the tiles migration");
    let undo = (names.len() - tiles_at) as u32;
    capstan_store::migrations::Migrator::down(&conn, Some(undo)).await.unwrap();
    let gone = conn
        .query_one_raw(Statement::from_string(conn.get_database_backend(), "SELECT COUNT(*) FROM metric_tiles"))
        .await;
    assert!(gone.is_err(), "metric_tiles still exists after the migration was undone");
    capstan_store::migrations::Migrator::up(&conn, None).await.unwrap();
    let after = bulk(&db.reopen().await, &run, "m", (None, None), 320).await;
    assert_same_points(&after, &before, "after the backfill");
    let history: Vec<Sample> = store.metric_history(&run, "m").await.unwrap().iter().map(sample).collect();
    assert_same_points(&after, &expected(&history, (None, None), 320), "against the pure downsampling");
}

async fn series_migration_keeps_every_point_and_tile(db: &TestDb) {
    let store = db.store.clone();
    let (run, other) = (new_run(&store).await, new_run(&store).await);
    let mut rng = Rng(7);
    let mut points: Vec<MetricPoint> = (0..2_500).map(|i| point("loss", i * 3, i, rng.value())).collect();
    points.extend((0..500).map(|i| point("acc", i, i, if i % 50 == 7 { f64::NAN } else { rng.value() })));
    for chunk in points.chunks(1000) {
        store.log_batch(&run, chunk, &[], &[]).await.unwrap();
    }
    store.log_batch(&other, &[point("loss", 0, 0, 42.0)], &[], &[]).await.unwrap();
    let history = |store: Store, run: String, key: &'static str| async move {
        store.metric_history(&run, key).await.unwrap().iter().map(sample).collect::<Vec<Sample>>()
    };
    let before = (
        history(store.clone(), run.clone(), "loss").await,
        history(store.clone(), run.clone(), "acc").await,
        bulk(&store, &run, "loss", (None, None), 320).await,
        bulk(&store, &run, "loss", (Some(300), Some(900)), 50).await,
    );
    assert_eq!(before.0.len(), 2_500);
    assert_eq!(before.1.len(), 500);

    // Undo the series migration: the points are keyed by run id and key again, all of them.
    let conn = Database::connect(db.url.as_str()).await.unwrap();
    capstan_store::migrations::Migrator::down(&conn, Some(1)).await.unwrap();
    let count = |sql: &'static str| {
        let conn = &conn;
        async move {
            let row = conn.query_one_raw(Statement::from_string(conn.get_database_backend(), sql)).await.unwrap();
            row.unwrap().try_get_by_index::<i64>(0).unwrap()
        }
    };
    let rows = format!("SELECT COUNT(*) FROM metrics WHERE run_uuid = '{run}' AND key = 'loss'");
    let row = conn.query_one_raw(Statement::from_string(conn.get_database_backend(), rows)).await.unwrap();
    assert_eq!(row.unwrap().try_get_by_index::<i64>(0).unwrap(), 2_500, "points by run id after the undo");
    assert_eq!(count("SELECT COUNT(*) FROM metrics").await, 3_001);
    assert!(count("SELECT COUNT(*) FROM metric_tiles").await > 0);
    let series = conn
        .query_one_raw(Statement::from_string(conn.get_database_backend(), "SELECT COUNT(*) FROM metric_series"))
        .await;
    assert!(series.is_err(), "metric_series still exists after the undo");

    // And again: every point and tile comes back under its series.
    capstan_store::migrations::Migrator::up(&conn, None).await.unwrap();
    assert_eq!(count("SELECT COUNT(*) FROM metric_series").await, 3);
    assert_eq!(count("SELECT COUNT(*) FROM metrics").await, 3_001);
    let store = db.reopen().await;
    let after = (
        history(store.clone(), run.clone(), "loss").await,
        history(store.clone(), run.clone(), "acc").await,
        bulk(&store, &run, "loss", (None, None), 320).await,
        bulk(&store, &run, "loss", (Some(300), Some(900)), 50).await,
    );
    assert_same_points(&after.0, &before.0, "loss history");
    assert_same_points(&after.1, &before.1, "acc history");
    assert_same_points(&after.2, &before.2, "loss bulk interval");
    assert_same_points(&after.3, &before.3, "loss bulk interval of a range");
    assert_eq!(history(store.clone(), other.clone(), "loss").await.len(), 1);
    // New points of an existing series and of a new one after the migration.
    store.log_batch(&run, &[point("loss", 1_000_000, 0, 1.0), point("new", 0, 0, 2.0)], &[], &[]).await.unwrap();
    assert_eq!(history(store.clone(), run.clone(), "loss").await.len(), 2_501);
    assert_eq!(history(store.clone(), run.clone(), "new").await.len(), 1);
}

async fn values_read_back_exactly(store: Store) {
    let run = new_run(&store).await;
    let mut rng = Rng(0xb175);
    let mut values: Vec<f64> = vec![
        0.1,
        1.0 / 3.0,
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        5e-324,
        -5e-324,
        f64::EPSILON,
        1e300,
        -123_456_789.123_456_78,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        9007199254740993.0,
    ];
    while values.len() < 3_000 {
        let v = f64::from_bits(rng.next());
        if v.is_finite() {
            values.push(v);
        }
    }
    let points: Vec<MetricPoint> =
        values.iter().enumerate().map(|(i, v)| point("x", i as i64, i64::MAX - i as i64, *v)).collect();
    for chunk in points.chunks(1000) {
        store.log_batch(&run, chunk, &[], &[]).await.unwrap();
    }
    let (page, more) = store.metric_history_page(&run, "x", 0, 10_000).await.unwrap();
    assert!(!more);
    assert_eq!(page.len(), values.len());
    for (p, v) in page.iter().zip(&values) {
        assert!(p.value.to_bits() == v.to_bits() || (p.value.is_nan() && v.is_nan()), "{} read back as {}", v, p.value);
        assert_eq!(p.timestamp, i64::MAX - p.step);
    }
    // Through the tiles too: the extremes of a 64-point view are input values, bit for bit.
    for (_, p) in store.metric_history_bulk_interval(std::slice::from_ref(&run), "x", None, None, 64).await.unwrap() {
        let v = values[p.step as usize];
        assert!(p.value.to_bits() == v.to_bits() || (p.value.is_nan() && v.is_nan()), "{} read back as {}", v, p.value);
    }
}

async fn batches_without_params_of_a_missing_run_fail_alone(store: Store) {
    // Batches without params are written without reading the run first: one of a missing run
    // must still fail with NotFound and leave nothing, in a group with others that succeed.
    let run = new_run(&store).await;
    let missing = "fedcba9876543210fedcba9876543210".to_owned();
    let calls = (0..48i64).map(|i| {
        let store = store.clone();
        let run_id = if i % 5 == 2 { missing.clone() } else { run.clone() };
        tokio::spawn(async move {
            let key = if i % 3 == 0 { format!("k{i}") } else { "m".to_owned() };
            let points: Vec<MetricPoint> = (0..40).map(|s| point(&key, i * 40 + s, i, s as f64)).collect();
            let tags = if i % 2 == 0 { vec![(format!("t{i}"), "y".to_owned())] } else { Vec::new() };
            (i, key, store.log_batch(&run_id, &points, &[], &tags).await)
        })
    });
    let mut outcomes = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        outcomes.push(call.await.unwrap());
    }
    let stored = store.get_run(&run).await.unwrap().unwrap();
    for (i, key, result) in &outcomes {
        let own_points = store.metric_history(&run, key).await.unwrap().iter().filter(|p| p.step / 40 == *i).count();
        match result {
            Ok(()) => {
                assert!(i % 5 != 2, "batch {i} of a missing run succeeded");
                assert_eq!(own_points, 40, "batch {i} is not all there");
                assert_eq!(stored.tags.iter().any(|(k, _)| *k == format!("t{i}")), i % 2 == 0, "tag of batch {i}");
            }
            Err(StoreError::NotFound(what)) => {
                assert_eq!(i % 5, 2, "batch {i}: {what}");
                assert!(what.contains(&missing), "{what}");
            }
            Err(other) => panic!("batch {i}: {other}"),
        }
    }
    assert_eq!(outcomes.iter().filter(|(_, _, r)| r.is_ok()).count(), 48 - 10);
    let err = store.metric_history(&missing, "m").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
}

async fn concurrent_batches_commit_together_but_fail_alone(store: Store) {
    // 64 batches at once, in groups: those of a missing run fail with NotFound, those giving
    // param `p` another value than the first to commit fail with ParamChanged; each failing
    // batch leaves nothing behind, each other one is there in full.
    let run = new_run(&store).await;
    let missing = "0123456789abcdef0123456789abcdef".to_owned();
    let calls = (0..64i64).map(|i| {
        let store = store.clone();
        let run_id = if i % 7 == 3 { missing.clone() } else { run.clone() };
        tokio::spawn(async move {
            let points: Vec<MetricPoint> = (0..50).map(|s| point("m", i * 50 + s, i, i as f64)).collect();
            let params = vec![("p".to_owned(), (i % 2).to_string()), (format!("own{i}"), "x".to_owned())];
            let tags = vec![(format!("t{i}"), "y".to_owned())];
            (i, store.log_batch(&run_id, &points, &params, &tags).await)
        })
    });
    let mut outcomes = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        outcomes.push(call.await.unwrap());
    }
    let stored = store.get_run(&run).await.unwrap().unwrap();
    let winner = stored.params.iter().find(|(k, _)| k == "p").map(|(_, v)| v.clone()).expect("param p stored");
    let history = store.metric_history(&run, "m").await.unwrap();
    for (i, result) in &outcomes {
        let own_points = history.iter().filter(|p| p.step / 50 == *i).count();
        let own_param = stored.params.iter().any(|(k, _)| *k == format!("own{i}"));
        let own_tag = stored.tags.iter().any(|(k, _)| *k == format!("t{i}"));
        match result {
            Ok(()) => {
                assert!(i % 7 != 3, "batch {i} of a missing run succeeded");
                assert_eq!((i % 2).to_string(), winner, "batch {i} with the other value of p succeeded");
                assert_eq!((own_points, own_param, own_tag), (50, true, true), "batch {i} is not all there");
            }
            Err(StoreError::NotFound(_)) => assert_eq!(i % 7, 3, "batch {i}"),
            Err(StoreError::ParamChanged { key, .. }) => {
                assert_eq!(key, "p");
                assert_ne!((i % 2).to_string(), winner, "batch {i} with the winning value of p failed");
                assert_eq!((own_points, own_param, own_tag), (0, false, false), "batch {i} left something behind");
            }
            Err(other) => panic!("batch {i}: {other}"),
        }
    }
    assert!(outcomes.iter().filter(|(_, r)| r.is_ok()).count() >= 20);
}

macro_rules! on_both_backends {
    ($($kind:ident $name:ident;)*) => {
        mod sqlite {
            use super::*;
            $(on_both_backends!(@one Sqlite $kind $name);)*
        }
        mod postgres {
            use super::*;
            $(on_both_backends!(@one Postgres $kind $name);)*
        }
    };
    (@one $backend:ident store $name:ident) => {
        #[tokio::test]
        async fn $name() {
            let db = TestDb::new(Backend::$backend).await;
            super::$name(db.store.clone()).await;
        }
    };
    (@one $backend:ident multi $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            let db = TestDb::new(Backend::$backend).await;
            super::$name(db.store.clone()).await;
        }
    };
    (@one $backend:ident db $name:ident) => {
        #[tokio::test]
        async fn $name() {
            let db = TestDb::new(Backend::$backend).await;
            super::$name(&db).await;
        }
    };
}

on_both_backends! {
    store bulk_interval_equals_the_pure_downsampling;
    store bulk_interval_over_runs_and_errors;
    store history_pages_cover_the_history;
    store values_read_back_exactly;
    multi concurrent_batches_commit_together_but_fail_alone;
    multi batches_without_params_of_a_missing_run_fail_alone;
    db tiles_migration_fills_tiles_of_stored_points;
    db series_migration_keeps_every_point_and_tile;
}
