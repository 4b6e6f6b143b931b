//! Experiments and runs beyond create/log over real HTTP, on SQLite and PostgreSQL:
//! experiments/{search, update, delete, restore, set-experiment-tag, delete-experiment-tag},
//! runs/{delete, restore, delete-tag, search, log-inputs, outputs},
//! metrics/get-history-bulk-interval and `GET /version`.
//!
//! runs/search is checked against a brute-force evaluation (`capstan_search::matches` over
//! every run, sorted by MLflow's order) for hundreds of generated filters with AND, OR,
//! parentheses, LIKE/ILIKE, IN, IS NULL, NaN metrics, datasets and attributes, paging
//! through each answer in small pages.

mod mlflow_api_common;

use std::cmp::Ordering;
use std::collections::HashMap;

use capstan_search::{AttrValue, Op, RunView, Value as FilterValue};
use capstan_store::test_db::Backend;
use capstan_store::MetricPoint;
use mlflow_api_common::{assert_error, kv, message, start, Api};
use reqwest::Method;
use serde_json::{json, Value};

on_both_backends!(
    experiments_search_rename_delete_restore_and_tags,
    runs_delete_restore_and_delete_tag,
    runs_search_answers_filters_orders_and_errors,
    runs_search_matches_brute_force,
    runs_search_pages_are_complete_and_stable,
    log_inputs_and_outputs_show_on_runs,
    bulk_interval_and_version,
);

/// Every page of a search: (items, number of requests).
async fn all_pages(api: &Api, path: &str, mut body: Value, list: &str) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut pages = 0;
    loop {
        let answer = api.post_ok(path, body.clone()).await;
        pages += 1;
        let page = answer[list].as_array().cloned().unwrap_or_default();
        items.extend(page);
        match answer.get("next_page_token").and_then(Value::as_str) {
            Some(token) => body["page_token"] = json!(token),
            None => return (items, pages),
        }
        assert!(pages < 10_000, "paging does not end");
    }
}

fn names(items: &[Value], field: &str) -> Vec<String> {
    items.iter().map(|e| e[field].as_str().unwrap().to_owned()).collect()
}

async fn experiments_search_rename_delete_restore_and_tags(backend: Backend) {
    let api = start(backend).await;
    let a = api.experiment("exp-a").await;
    let b = api.experiment("exp-b").await;
    let c = api.experiment("other").await;
    api.post_ok("experiments/set-experiment-tag", json!({"experiment_id": a, "key": "team", "value": "vision"})).await;
    api.post_ok("experiments/set-experiment-tag", json!({"experiment_id": b, "key": "team", "value": "nlp"})).await;

    // Default order: newest first (ties by id); "Default" (id 0) is there too.
    let (all, _) = all_pages(&api, "experiments/search", json!({"max_results": 1}), "experiments").await;
    let ids = names(&all, "experiment_id");
    assert_eq!(ids.len(), 4, "{ids:?}");
    assert!(ids.contains(&"0".to_owned()));
    let answer =
        api.post_ok("experiments/search", json!({"filter": "name LIKE 'exp-%'", "order_by": ["name DESC"]})).await;
    assert_eq!(names(answer["experiments"].as_array().unwrap(), "name"), ["exp-b", "exp-a"]);
    let answer = api
        .post_ok(
            "experiments/search",
            json!({"filter": "tags.team = 'vision' OR name = 'other'", "order_by": ["name"]}),
        )
        .await;
    assert_eq!(names(answer["experiments"].as_array().unwrap(), "name"), ["exp-a", "other"]);
    assert_eq!(kv(&answer["experiments"][0]["tags"], "team").as_deref(), Some("vision"));
    // GET works too, with repeated order_by keys.
    let answer =
        api.get_ok("experiments/search", json!({"filter": "name ILIKE 'EXP%'", "order_by": ["name ASC"]})).await;
    assert_eq!(names(answer["experiments"].as_array().unwrap(), "name"), ["exp-a", "exp-b"]);

    // Rename; a taken name is RESOURCE_ALREADY_EXISTS.
    api.post_ok("experiments/update", json!({"experiment_id": c, "new_name": "renamed"})).await;
    let got = api.get_ok("experiments/get", json!({"experiment_id": c})).await;
    assert_eq!(got["experiment"]["name"], "renamed");
    assert_error(
        &api.post("experiments/update", json!({"experiment_id": c, "new_name": "exp-a"})).await,
        400,
        "RESOURCE_ALREADY_EXISTS",
    );
    assert_error(
        &api.post("experiments/update", json!({"experiment_id": "999", "new_name": "x"})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );
    assert_error(&api.post("experiments/update", json!({"experiment_id": c})).await, 400, "INVALID_PARAMETER_VALUE");

    // Delete: it and its runs leave the active views; delete again is 404 (as MLflow).
    let run = api.run(&b, "r", 1).await;
    api.post_ok("experiments/delete", json!({"experiment_id": b})).await;
    assert_error(&api.post("experiments/delete", json!({"experiment_id": b})).await, 404, "RESOURCE_DOES_NOT_EXIST");
    let run_info = api.get_ok("runs/get", json!({"run_id": run})).await;
    assert_eq!(run_info["run"]["info"]["lifecycle_stage"], "deleted");
    let deleted = api.post_ok("experiments/search", json!({"view_type": "DELETED_ONLY"})).await;
    assert_eq!(names(deleted["experiments"].as_array().unwrap(), "name"), ["exp-b"]);
    let active = api.post_ok("experiments/search", json!({"view_type": "ACTIVE_ONLY"})).await;
    assert!(!names(active["experiments"].as_array().unwrap(), "name").contains(&"exp-b".to_owned()));
    let every = api.post_ok("experiments/search", json!({"view_type": "ALL"})).await;
    assert_eq!(every["experiments"].as_array().unwrap().len(), 4);
    // A deleted experiment takes no runs and cannot be renamed.
    assert_error(&api.post("runs/create", json!({"experiment_id": b})).await, 400, "INVALID_PARAMETER_VALUE");
    assert_error(
        &api.post("experiments/update", json!({"experiment_id": b, "new_name": "zz"})).await,
        400,
        "INVALID_STATE",
    );
    // Restore brings the runs back.
    assert_error(&api.post("experiments/restore", json!({"experiment_id": a})).await, 404, "RESOURCE_DOES_NOT_EXIST");
    api.post_ok("experiments/restore", json!({"experiment_id": b})).await;
    let run_info = api.get_ok("runs/get", json!({"run_id": run})).await;
    assert_eq!(run_info["run"]["info"]["lifecycle_stage"], "active");

    // Tags: replace, delete, delete a missing one.
    api.post_ok("experiments/set-experiment-tag", json!({"experiment_id": a, "key": "team", "value": "robots"})).await;
    let got = api.get_ok("experiments/get", json!({"experiment_id": a})).await;
    assert_eq!(kv(&got["experiment"]["tags"], "team").as_deref(), Some("robots"));
    api.post_ok("experiments/delete-experiment-tag", json!({"experiment_id": a, "key": "team"})).await;
    let got = api.get_ok("experiments/get", json!({"experiment_id": a})).await;
    assert_eq!(kv(&got["experiment"]["tags"], "team"), None);
    let missing = api.post("experiments/delete-experiment-tag", json!({"experiment_id": a, "key": "team"})).await;
    assert_error(&missing, 404, "RESOURCE_DOES_NOT_EXIST");
    assert!(message(&missing).contains("No tag with name: team"), "{}", missing.1);
    assert_error(
        &api.post("experiments/set-experiment-tag", json!({"experiment_id": "12345", "key": "k", "value": "v"})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );

    // Bad input: a 400 naming the problem.
    let bad = api.post("experiments/search", json!({"filter": "name = 'a' AND"})).await;
    assert_error(&bad, 400, "INVALID_PARAMETER_VALUE");
    assert!(message(&bad).contains("column"), "{}", bad.1);
    let bad = api.post("experiments/search", json!({"filter": "metrics.acc > 1"})).await;
    assert_error(&bad, 400, "INVALID_PARAMETER_VALUE");
    for n in [0, -3, 50_001] {
        let bad = api.post("experiments/search", json!({"max_results": n})).await;
        assert_error(&bad, 400, "INVALID_PARAMETER_VALUE");
        assert!(message(&bad).contains("max_results"), "{}", bad.1);
    }
    assert_error(
        &api.post("experiments/search", json!({"view_type": "SOMETIMES"})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    assert_error(
        &api.post("experiments/search", json!({"page_token": "garbage"})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    assert_error(
        &api.post("experiments/search", json!({"order_by": ["name", "name DESC"]})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
}

async fn runs_delete_restore_and_delete_tag(backend: Backend) {
    let api = start(backend).await;
    let exp = api.experiment("e").await;
    let run = api.run(&exp, "r", 1000).await;
    api.post_ok("runs/set-tag", json!({"run_id": run, "key": "t", "value": "v"})).await;
    api.post_ok("runs/delete-tag", json!({"run_id": run, "key": "t"})).await;
    let got = api.get_ok("runs/get", json!({"run_id": run})).await;
    assert_eq!(kv(&got["run"]["data"]["tags"], "t"), None);
    let missing = api.post("runs/delete-tag", json!({"run_id": run, "key": "t"})).await;
    assert_error(&missing, 404, "RESOURCE_DOES_NOT_EXIST");
    assert!(message(&missing).contains("No tag with name: t"), "{}", missing.1);

    api.post_ok("runs/delete", json!({"run_id": run})).await;
    // Deleting again is fine (MLflow does not check), and the run is still there.
    api.post_ok("runs/delete", json!({"run_id": run})).await;
    let got = api.get_ok("runs/get", json!({"run_id": run})).await;
    assert_eq!(got["run"]["info"]["lifecycle_stage"], "deleted");
    let active = api.post_ok("runs/search", json!({"experiment_ids": [exp]})).await;
    assert!(active["runs"].as_array().unwrap().is_empty(), "{active}");
    let deleted = api.post_ok("runs/search", json!({"experiment_ids": [exp], "run_view_type": "DELETED_ONLY"})).await;
    assert_eq!(deleted["runs"].as_array().unwrap().len(), 1);
    // A deleted run's tags cannot be deleted.
    assert_error(
        &api.post("runs/delete-tag", json!({"run_id": run, "key": "mlflow.runName"})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    api.post_ok("runs/restore", json!({"run_id": run})).await;
    let active = api.post_ok("runs/search", json!({"experiment_ids": [exp]})).await;
    assert_eq!(active["runs"].as_array().unwrap().len(), 1);

    for path in ["runs/delete", "runs/restore", "runs/delete-tag"] {
        let answer = api.post(path, json!({"run_id": "0123456789abcdef0123456789abcdef", "key": "k"})).await;
        assert_error(&answer, 404, "RESOURCE_DOES_NOT_EXIST");
        assert_error(&api.post(path, json!({})).await, 400, "INVALID_PARAMETER_VALUE");
    }
}

/// A run as the brute-force check sees it.
#[derive(Debug, Clone, Default)]
struct Fixture {
    run_id: String,
    name: String,
    status: String,
    start_time: i64,
    end_time: Option<i64>,
    user: Option<String>,
    metrics: HashMap<String, f64>,
    params: HashMap<String, String>,
    tags: HashMap<String, String>,
    /// (name, digest, context)
    datasets: Vec<[Option<String>; 3]>,
}

impl RunView for Fixture {
    fn metric(&self, key: &str) -> Option<f64> {
        self.metrics.get(key).copied()
    }
    fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
    fn attribute(&self, key: &str) -> Option<AttrValue<'_>> {
        match key {
            "run_id" => Some(AttrValue::Str(&self.run_id)),
            "run_name" => Some(AttrValue::Str(&self.name)),
            "status" => Some(AttrValue::Str(&self.status)),
            "start_time" => Some(AttrValue::Num(self.start_time as f64)),
            "end_time" => self.end_time.map(|t| AttrValue::Num(t as f64)),
            "user_id" => Some(AttrValue::Str(self.user.as_deref().unwrap_or(""))),
            "lifecycle_stage" => Some(AttrValue::Str("active")),
            _ => None,
        }
    }
    fn dataset_matches(&self, field: &str, op: &Op, v: &FilterValue) -> bool {
        let i = match field {
            "name" => 0,
            "digest" => 1,
            _ => 2,
        };
        self.datasets.iter().any(|d| capstan_search::compare_str(op, d[i].as_deref(), v))
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Values that test case folding: the Kelvin sign (U+212A) folds to 'k', 'İ' (U+0130)
/// lower-cases to two characters in PostgreSQL.
const PARAM_VALUES: [&str; 12] = ["a", "A", "ab", "b%c", "Kx", "kx", "\u{212A}x", "é", "É", "x_y", "xİ", "[z]"];
const METRIC_VALUES: [f64; 8] = [0.0, 0.5, 1.0, 2.0, -1.0, f64::NAN, f64::INFINITY, 1e300];

/// Runs with random metrics, params, tags, users and datasets in experiment `exp`, plus
/// noise the searches must not return (another experiment, deleted runs).
async fn fixtures(api: &Api, rng: &mut Rng, exp: &str, n: usize) -> Vec<Fixture> {
    let store = api.store();
    let other = api.experiment("noise").await;
    for i in 0..3 {
        let r = store.create_run(&other, &format!("noise-{i}"), 5, &[]).await.unwrap();
        store.log_batch(&r.run_id, &[], &[("p0".into(), "a".into())], &[]).await.unwrap();
    }
    let mut out = Vec::new();
    for i in 0..n {
        let name = format!("r{i}");
        // Few distinct start times, so ties are common and run_id must break them.
        let start_time = rng.below(6) as i64;
        let mut tags: Vec<(String, String)> = vec![("mlflow.runName".into(), name.clone())];
        let user = match rng.below(3) {
            0 => None,
            1 => Some("alice".to_owned()),
            _ => Some("bob".to_owned()),
        };
        if let Some(u) = &user {
            tags.push(("mlflow.user".into(), u.clone()));
        }
        let run = store.create_run(exp, &name, start_time, &tags).await.unwrap();
        let mut f = Fixture {
            run_id: run.run_id.clone(),
            name,
            status: "RUNNING".into(),
            start_time,
            user,
            ..Fixture::default()
        };
        f.tags.extend(tags);
        let mut metrics = Vec::new();
        for k in 0..3 {
            if rng.chance(70) {
                let value = *rng.pick(&METRIC_VALUES);
                metrics.push(MetricPoint { key: format!("m{k}"), value, timestamp: 1, step: 0 });
                f.metrics.insert(format!("m{k}"), value);
            }
        }
        let mut params = Vec::new();
        for k in 0..3 {
            if rng.chance(70) {
                let value = rng.pick(&PARAM_VALUES).to_string();
                params.push((format!("p{k}"), value.clone()));
                f.params.insert(format!("p{k}"), value);
            }
        }
        let mut run_tags = Vec::new();
        for k in 0..2 {
            if rng.chance(60) {
                let value = rng.pick(&PARAM_VALUES).to_string();
                run_tags.push((format!("t{k}"), value.clone()));
                f.tags.insert(format!("t{k}"), value);
            }
        }
        store.log_batch(&run.run_id, &metrics, &params, &run_tags).await.unwrap();
        if rng.chance(40) {
            let status = *rng.pick(&["FINISHED", "FAILED"]);
            let end = 10 + rng.below(5) as i64;
            store.update_run(&run.run_id, Some(status), Some(end), None).await.unwrap();
            f.status = status.into();
            f.end_time = Some(end);
        }
        let mut inputs = Vec::new();
        for ds in ["ds1", "ds2"] {
            if rng.chance(35) {
                let context = rng.pick(&["training", "eval"]).to_string();
                inputs.push(json!({
                    "tags": [{"key": "mlflow.data.context", "value": context}],
                    "dataset": {"name": ds, "digest": format!("{ds}-digest"), "source_type": "local", "source": "{}"}
                }));
                f.datasets.push([Some(ds.to_owned()), Some(format!("{ds}-digest")), Some(context)]);
            }
        }
        if !inputs.is_empty() {
            api.post_ok("runs/log-inputs", json!({"run_id": run.run_id, "datasets": inputs})).await;
        }
        out.push(f);
    }
    // Deleted runs never show in ACTIVE_ONLY searches.
    for i in 0..3 {
        let r = store.create_run(exp, &format!("gone-{i}"), 3, &[]).await.unwrap();
        store.log_batch(&r.run_id, &[], &[("p0".into(), "a".into())], &[]).await.unwrap();
        store.set_run_lifecycle(&r.run_id, "deleted").await.unwrap();
    }
    out
}

fn quote(s: impl AsRef<str>) -> String {
    format!("'{}'", s.as_ref().replace('\'', "''"))
}

fn atom(rng: &mut Rng) -> String {
    let patterns =
        ["a%", "A%", "%b%", "k%", "K%", "é%", "É", "_", "%", "%\\_%", "x_y", "x_", "[z]", "%[%", "b%%c", "kx"];
    match rng.below(11) {
        0 | 1 => {
            let op = rng.pick(&["=", "!=", ">", ">=", "<", "<="]);
            let v = rng.pick(&["0", "0.5", "1", "2", "-1", "1e300", "-0.25"]);
            format!("metrics.m{} {op} {v}", rng.below(3))
        }
        2 | 3 => {
            let key = format!("{}.{}{}", rng.pick(&["params", "param"]), "p", rng.below(3));
            match rng.below(5) {
                0 => format!("{key} = {}", quote(rng.pick(&PARAM_VALUES))),
                1 => format!("{key} != {}", quote(rng.pick(&PARAM_VALUES))),
                2 => format!("{key} LIKE {}", quote(rng.pick(&patterns))),
                3 => format!("{key} ILIKE {}", quote(rng.pick(&patterns))),
                _ => format!(
                    "{key} {} ({}, {})",
                    rng.pick(&["IN", "NOT IN"]),
                    quote(rng.pick(&PARAM_VALUES)),
                    quote(rng.pick(&PARAM_VALUES))
                ),
            }
        }
        4 => {
            let key = format!("tags.t{}", rng.below(2));
            match rng.below(4) {
                0 => format!("{key} IS NULL"),
                1 => format!("{key} IS NOT NULL"),
                2 => format!("{key} ILIKE {}", quote(rng.pick(&patterns))),
                _ => format!("{key} = {}", quote(rng.pick(&PARAM_VALUES))),
            }
        }
        5 => format!("metrics.m{} IS {}", rng.below(3), rng.pick(&["NULL", "NOT NULL"])),
        6 => format!(
            "attributes.status {} {}",
            rng.pick(&["=", "!="]),
            quote(rng.pick(&["FINISHED", "FAILED", "RUNNING"]))
        ),
        7 => format!(
            "{} {} {}",
            rng.pick(&["start_time", "end_time", "created"]),
            rng.pick(&[">", "<=", "="]),
            rng.below(12)
        ),
        8 => format!(
            "attributes.user_id {} {}",
            rng.pick(&["=", "!=", "LIKE"]),
            quote(rng.pick(&["alice", "bob", "", "a%"]))
        ),
        9 => format!("run_name {} {}", rng.pick(&["LIKE", "ILIKE", "="]), quote(rng.pick(&["r1%", "R1%", "r7", "%0"]))),
        _ => format!(
            "datasets.{} {} {}",
            rng.pick(&["name", "digest", "context"]),
            rng.pick(&["=", "!=", "LIKE", "IN"]),
            match rng.below(3) {
                0 => "'ds1'".to_owned(),
                1 => "'training'".to_owned(),
                _ => "('ds2', 'eval', 'ds1-digest')".to_owned(),
            }
        ),
    }
}

fn filter(rng: &mut Rng, depth: usize) -> String {
    if depth == 0 || rng.chance(35) {
        return atom(rng);
    }
    let n = 2 + rng.below(2);
    let joiner = if rng.chance(50) { " AND " } else { " OR " };
    let parts: Vec<String> = (0..n)
        .map(|_| {
            let inner = filter(rng, depth - 1);
            if rng.chance(60) {
                format!("({inner})")
            } else {
                inner
            }
        })
        .collect();
    parts.join(joiner)
}

/// MLflow's order for `order_by` on one metric: present values by the direction, then NaN,
/// then missing; then start_time DESC, run_id ASC.
fn brute_order(runs: &mut [&Fixture], metric: Option<(&str, bool)>) {
    runs.sort_by(|a, b| {
        let by_metric = match metric {
            None => Ordering::Equal,
            Some((key, ascending)) => {
                let class = |f: &Fixture| match f.metrics.get(key) {
                    Some(v) if v.is_nan() => (1, 0.0),
                    Some(v) => (0, *v),
                    None => (2, 0.0),
                };
                let (ca, va) = class(a);
                let (cb, vb) = class(b);
                ca.cmp(&cb).then_with(|| {
                    let o = va.partial_cmp(&vb).unwrap();
                    if ascending {
                        o
                    } else {
                        o.reverse()
                    }
                })
            }
        };
        by_metric.then(b.start_time.cmp(&a.start_time)).then(a.run_id.cmp(&b.run_id))
    });
}

async fn runs_search_matches_brute_force(backend: Backend) {
    let api = start(backend).await;
    let exp = api.experiment("brute").await;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let runs = fixtures(&api, &mut rng, &exp, 70).await;
    let (mut checked, mut selective) = (0, 0);
    for i in 0..220 {
        let text = filter(&mut rng, 3);
        let order = match i % 4 {
            0 => Some((format!("m{}", rng.below(3)), rng.chance(50))),
            _ => None,
        };
        let order_by: Vec<String> =
            order.iter().map(|(k, asc)| format!("metrics.{k} {}", if *asc { "ASC" } else { "DESC" })).collect();
        let page_size = 1 + rng.below(9);
        let body = json!({"experiment_ids": [exp], "filter": text, "order_by": order_by, "max_results": page_size});
        let parsed = capstan_search::parse_filter(&text);
        let Ok(Some(expr)) = parsed else {
            let answer = api.post("runs/search", body).await;
            assert_error(&answer, 400, "INVALID_PARAMETER_VALUE");
            continue;
        };
        let (got, pages) = all_pages(&api, "runs/search", body, "runs").await;
        let got: Vec<String> = got.iter().map(|r| r["info"]["run_id"].as_str().unwrap().to_owned()).collect();
        let mut expected: Vec<&Fixture> = runs.iter().filter(|f| capstan_search::matches(&expr, *f)).collect();
        brute_order(&mut expected, order.as_ref().map(|(k, a)| (k.as_str(), *a)));
        let expected: Vec<String> = expected.iter().map(|f| f.run_id.clone()).collect();
        assert_eq!(got, expected, "filter {text:?} order {order_by:?} (page size {page_size})");
        // Exact pages: no token points at an empty page.
        assert_eq!(pages, expected.len().div_ceil(page_size).max(1), "filter {text:?}");
        checked += 1;
        if !expected.is_empty() && expected.len() < runs.len() {
            selective += 1;
        }
    }
    assert!(checked > 150, "only {checked} generated filters parsed");
    // The generated filters select something, but not everything, most of the time.
    assert!(selective > checked / 3, "only {selective} of {checked} filters were selective");
}

async fn runs_search_answers_filters_orders_and_errors(backend: Backend) {
    let api = start(backend).await;
    let exp = api.experiment("search").await;
    let store = api.store();
    let mut ids = HashMap::new();
    for (name, start, acc, lr, model) in [
        ("a", 1, Some(0.9), "0.1", "tree"),
        ("b", 2, Some(0.7), "0.01", "Tree"),
        ("c", 3, Some(f64::NAN), "0.1", "forest"),
        ("d", 4, None, "0.001", "tree-deep"),
    ] {
        let run = api.run(&exp, name, start).await;
        let metrics: Vec<MetricPoint> =
            acc.map(|v| MetricPoint { key: "acc".into(), value: v, timestamp: 1, step: 0 }).into_iter().collect();
        store
            .log_batch(&run, &metrics, &[("lr".into(), lr.into()), ("model".into(), model.into())], &[])
            .await
            .unwrap();
        ids.insert(name, run);
    }
    let search = |filter: &str, order_by: Value| {
        let body = json!({"experiment_ids": [exp.clone()], "filter": filter, "order_by": order_by});
        let api = &api;
        async move {
            let answer = api.post_ok("runs/search", body).await;
            answer["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["info"]["run_name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    // Default order: start_time DESC.
    assert_eq!(search("", json!([])).await, ["d", "c", "b", "a"]);
    assert_eq!(search("metrics.acc > 0.5", json!([])).await, ["b", "a"]);
    // NaN compares false, even with !=; a missing metric does not match.
    assert_eq!(search("metrics.acc != 0.7", json!([])).await, ["a"]);
    assert_eq!(search("metrics.acc IS NULL", json!([])).await, ["d"]);
    // AND binds tighter than OR; parentheses change that.
    assert_eq!(search("params.lr = '0.1' AND params.model = 'tree' OR run_name = 'd'", json!([])).await, ["d", "a"]);
    assert_eq!(search("params.lr = '0.1' AND (params.model = 'tree' OR run_name = 'c')", json!([])).await, ["c", "a"]);
    // LIKE is case-sensitive, ILIKE not.
    assert_eq!(search("params.model LIKE 'tree%'", json!([])).await, ["d", "a"]);
    assert_eq!(search("params.model ILIKE 'tree%'", json!([])).await, ["d", "b", "a"]);
    assert_eq!(search("params.lr IN ('0.01', '0.001')", json!([])).await, ["d", "b"]);
    // Case folding beyond ASCII, checked in memory: the Kelvin sign is a 'k'; 'İ' is one
    // character (PostgreSQL's lower() makes it two).
    store.log_batch(&ids["a"], &[], &[("u".into(), "xİ".into())], &[]).await.unwrap();
    store.log_batch(&ids["b"], &[], &[("u".into(), "\u{212A}X".into())], &[]).await.unwrap();
    assert_eq!(search("params.u ILIKE 'x_'", json!([])).await, ["a"]);
    assert_eq!(search("params.u ILIKE 'kx'", json!([])).await, ["b"]);
    assert_eq!(search("params.u LIKE 'kx'", json!([])).await, Vec::<String>::new());
    assert_eq!(search("params.lr NOT IN ('0.01', '0.001')", json!([])).await, ["c", "a"]);
    // Order by a metric: NaN and missing last either way.
    assert_eq!(search("", json!(["metrics.acc DESC"])).await, ["a", "b", "c", "d"]);
    assert_eq!(search("", json!(["metrics.acc ASC"])).await, ["b", "a", "c", "d"]);
    assert_eq!(search("", json!(["params.lr ASC", "start_time ASC"])).await, ["d", "b", "a", "c"]);
    assert_eq!(search("", json!(["attributes.run_name DESC"])).await, ["d", "c", "b", "a"]);
    let answer = api.post_ok("runs/search", json!({"experiment_ids": [exp], "filter": "run_name = 'a'"})).await;
    let run = &answer["runs"][0];
    assert_eq!(run["info"]["run_id"], ids["a"].as_str());
    assert_eq!(kv(&run["data"]["params"], "lr").as_deref(), Some("0.1"));
    assert_eq!(run["data"]["metrics"][0]["key"], "acc");

    // Errors: filter with its position, bad max_results, bad ids, bad tokens.
    let bad = api.post("runs/search", json!({"experiment_ids": [exp], "filter": "metrics.acc > 'high'"})).await;
    assert_error(&bad, 400, "INVALID_PARAMETER_VALUE");
    assert!(message(&bad).contains("column"), "{}", bad.1);
    let bad = api.post("runs/search", json!({"experiment_ids": [exp], "filter": "(params.a = 'x'"})).await;
    assert_error(&bad, 400, "INVALID_PARAMETER_VALUE");
    for n in [0, 50_001] {
        assert_error(
            &api.post("runs/search", json!({"experiment_ids": [exp], "max_results": n})).await,
            400,
            "INVALID_PARAMETER_VALUE",
        );
    }
    let ok = api.post_ok("runs/search", json!({"experiment_ids": [exp], "max_results": 50_000})).await;
    assert_eq!(ok["runs"].as_array().unwrap().len(), 4);
    assert_error(&api.post("runs/search", json!({"experiment_ids": ["abc"]})).await, 400, "INVALID_PARAMETER_VALUE");
    assert_error(&api.post("runs/search", json!({"experiment_ids": "1"})).await, 400, "INVALID_PARAMETER_VALUE");
    assert_error(
        &api.post("runs/search", json!({"experiment_ids": [exp], "page_token": "xyz"})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    assert_error(
        &api.post("runs/search", json!({"experiment_ids": [exp], "order_by": ["metrics.acc", "metrics.acc DESC"]}))
            .await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    assert_error(
        &api.post("runs/search", json!({"experiment_ids": [exp], "order_by": ["bogus.x"]})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    // No experiments: no runs.
    let none = api.post_ok("runs/search", json!({})).await;
    assert!(none["runs"].as_array().unwrap().is_empty());
}

async fn runs_search_pages_are_complete_and_stable(backend: Backend) {
    let api = start(backend).await;
    let exp = api.experiment("many").await;
    let store = api.store();
    // More runs than one scan chunk, so a filter checked in memory crosses chunks.
    let n = 1300;
    let mut expected_users = 0;
    for i in 0..n {
        let mut tags = vec![];
        if i % 3 == 0 {
            tags.push(("mlflow.user".to_owned(), "kim".to_owned()));
            tags.push(("owner".to_owned(), "Kim".to_owned()));
            expected_users += 1;
        } else if i % 3 == 1 {
            // Also a candidate of the SQL prefilter of `ILIKE 'kim'` ('_im'), rejected in memory.
            tags.push(("owner".to_owned(), "Jim".to_owned()));
        }
        let run = store.create_run(&exp, &format!("run-{i}"), (i % 97) as i64, &tags).await.unwrap();
        let m = MetricPoint { key: "loss".into(), value: (i % 10) as f64, timestamp: 1, step: 0 };
        store.log_batch(&run.run_id, &[m], &[], &[]).await.unwrap();
    }
    // Exact (SQL) filters, and one checked in memory over candidates read in chunks (an
    // ILIKE pattern with a 'k': the Kelvin sign folds to it, which SQL does not know).
    for (filter, expected) in [
        ("metrics.loss < 5", n / 2),
        ("attributes.user_id = 'kim'", expected_users),
        ("tags.owner ILIKE 'kim'", expected_users),
    ] {
        let body = json!({"experiment_ids": [exp], "filter": filter, "max_results": 97});
        let (first, _) = all_pages(&api, "runs/search", body.clone(), "runs").await;
        let (second, _) = all_pages(&api, "runs/search", body, "runs").await;
        let ids: Vec<&str> = first.iter().map(|r| r["info"]["run_id"].as_str().unwrap()).collect();
        let again: Vec<&str> = second.iter().map(|r| r["info"]["run_id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), expected, "{filter}");
        assert_eq!(ids, again, "{filter}: the same query pages the same way");
        let unique: std::collections::HashSet<&&str> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{filter}: no run twice");
        let starts: Vec<i64> = first.iter().map(|r| r["info"]["start_time"].as_i64().unwrap()).collect();
        assert!(starts.windows(2).all(|w| w[0] >= w[1]), "{filter}: start_time DESC");
    }
    let all = api.post_ok("runs/search", json!({"experiment_ids": [exp], "max_results": 50_000})).await;
    assert_eq!(all["runs"].as_array().unwrap().len(), n);
    assert!(all.get("next_page_token").is_none());
}

async fn log_inputs_and_outputs_show_on_runs(backend: Backend) {
    let api = start(backend).await;
    let exp = api.experiment("io").await;
    let run = api.run(&exp, "r", 1).await;
    let inputs = json!({
        "run_id": run,
        "datasets": [{
            "tags": [{"key": "mlflow.data.context", "value": "training"}],
            "dataset": {"name": "iris", "digest": "abc123", "source_type": "local", "source": "{\"uri\": \"/d\"}",
                        "schema": "{\"cols\": []}", "profile": "{\"rows\": 150}"}
        }],
        "models": [{"model_id": "m-input"}]
    });
    api.post_ok("runs/log-inputs", inputs.clone()).await;
    // A retry adds nothing.
    api.post_ok("runs/log-inputs", inputs).await;
    api.post_ok("runs/outputs", json!({"run_id": run, "models": [{"model_id": "m-out", "step": 3}]})).await;
    api.post_ok("runs/outputs", json!({"run_id": run, "models": [{"model_id": "m-out", "step": 3}]})).await;
    let got = api.get_ok("runs/get", json!({"run_id": run})).await;
    let inputs = &got["run"]["inputs"];
    assert_eq!(inputs["dataset_inputs"].as_array().unwrap().len(), 1, "{got}");
    let d = &inputs["dataset_inputs"][0];
    assert_eq!(d["dataset"]["name"], "iris");
    assert_eq!(d["dataset"]["digest"], "abc123");
    assert_eq!(d["dataset"]["profile"], "{\"rows\": 150}");
    assert_eq!(kv(&d["tags"], "mlflow.data.context").as_deref(), Some("training"));
    assert_eq!(inputs["model_inputs"], json!([{"model_id": "m-input"}]));
    assert_eq!(got["run"]["outputs"]["model_outputs"], json!([{"model_id": "m-out", "step": 3}]));
    // Searchable by dataset.
    for (filter, hits) in
        [("datasets.name = 'iris'", 1), ("datasets.context = 'training'", 1), ("datasets.digest = 'zzz'", 0)]
    {
        let answer = api.post_ok("runs/search", json!({"experiment_ids": [exp], "filter": filter})).await;
        assert_eq!(answer["runs"].as_array().unwrap().len(), hits, "{filter}");
        if hits == 1 {
            assert_eq!(answer["runs"][0]["inputs"]["dataset_inputs"][0]["dataset"]["name"], "iris");
            assert_eq!(answer["runs"][0]["outputs"]["model_outputs"][0]["model_id"], "m-out");
        }
    }
    // runs/log-model (MLflow 2's way) appends to the mlflow.log-model.history tag.
    let model = |path: &str| {
        json!({"run_id": run, "artifact_path": path, "utc_time_created": "2024-01-01 00:00:00.000000",
               "flavors": {"python_function": {}}, "model_uuid": "u", "extra": "dropped"})
        .to_string()
    };
    api.post_ok("runs/log-model", json!({"run_id": run, "model_json": model("a")})).await;
    api.post_ok("runs/log-model", json!({"run_id": run, "model_json": model("b")})).await;
    let got = api.get_ok("runs/get", json!({"run_id": run})).await;
    let history: Value =
        serde_json::from_str(&kv(&got["run"]["data"]["tags"], "mlflow.log-model.history").unwrap()).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 2);
    assert_eq!(history[1]["artifact_path"], "b");
    assert!(history[0].get("extra").is_none());
    let bad = api.post("runs/log-model", json!({"run_id": run, "model_json": "{\"artifact_path\": \"x\"}"})).await;
    assert_error(&bad, 400, "INVALID_PARAMETER_VALUE");
    assert!(message(&bad).contains("flavors"), "{}", bad.1);
    assert_error(
        &api.post("runs/log-model", json!({"run_id": run, "model_json": "not json"})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );

    // Bad input names the field.
    let bad = api.post("runs/log-inputs", json!({"run_id": run, "datasets": [{"dataset": {"name": "x"}}]})).await;
    assert_error(&bad, 400, "INVALID_PARAMETER_VALUE");
    assert!(message(&bad).contains("datasets[0].dataset.digest"), "{}", bad.1);
    let long = "d".repeat(37);
    let bad = api
        .post("runs/log-inputs", json!({"run_id": run, "datasets": [{"dataset": {"name": "x", "digest": long, "source_type": "l", "source": "s"}}]}))
        .await;
    assert_error(&bad, 400, "INVALID_PARAMETER_VALUE");
    assert_error(&api.post("runs/outputs", json!({"run_id": run})).await, 400, "INVALID_PARAMETER_VALUE");
    assert_error(
        &api.post("runs/outputs", json!({"run_id": run, "models": [{"step": 1}]})).await,
        400,
        "INVALID_PARAMETER_VALUE",
    );
    let missing = "0123456789abcdef0123456789abcdef";
    assert_error(
        &api.post("runs/log-inputs", json!({"run_id": missing, "datasets": []})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    );
}

async fn bulk_interval_and_version(backend: Backend) {
    let api = start(backend).await;
    let version = reqwest::get(format!("{}/version", api.base)).await.unwrap();
    assert_eq!(version.status(), 200);
    assert_eq!(version.text().await.unwrap(), capstan_server::mlflow::MLFLOW_VERSION);

    let exp = api.experiment("bulk").await;
    let a = api.run(&exp, "a", 1).await;
    let b = api.run(&exp, "b", 2).await;
    let points: Vec<MetricPoint> = (0..1000)
        .map(|s| MetricPoint { key: "loss".into(), value: 1.0 / (s + 1) as f64, timestamp: s, step: s })
        .collect();
    api.store().log_batch(&a, &points, &[], &[]).await.unwrap();
    api.store().log_batch(&b, &points[..10], &[], &[]).await.unwrap();
    let answer = api
        .ok(
            Method::GET,
            "metrics/get-history-bulk-interval",
            json!({"run_ids": [a, b], "metric_key": "loss", "max_results": 50}),
        )
        .await;
    let metrics = answer["metrics"].as_array().unwrap();
    let of = |run: &str| metrics.iter().filter(|m| m["run_id"] == run).count();
    assert!(of(&a) <= 50 && of(&a) >= 10, "{}", of(&a));
    assert_eq!(of(&b), 10);
    assert!(metrics.iter().all(|m| m["key"] == "loss" && m["step"].is_i64() && m["timestamp"].is_i64()));
    // Default 320 points per run; a step window.
    let answer = api.get_ok("metrics/get-history-bulk-interval", json!({"run_ids": [a], "metric_key": "loss"})).await;
    assert!(answer["metrics"].as_array().unwrap().len() <= 320);
    let answer = api
        .get_ok(
            "metrics/get-history-bulk-interval",
            json!({"run_ids": [a], "metric_key": "loss", "start_step": 100, "end_step": 109}),
        )
        .await;
    let steps: Vec<i64> = answer["metrics"].as_array().unwrap().iter().map(|m| m["step"].as_i64().unwrap()).collect();
    assert_eq!(steps, (100..110).collect::<Vec<_>>());
    // MLflow's checks.
    for bad in [
        json!({"metric_key": "loss"}),
        json!({"run_ids": [a]}),
        json!({"run_ids": [a], "metric_key": "loss", "max_results": 0}),
        json!({"run_ids": [a], "metric_key": "loss", "max_results": 2501}),
        json!({"run_ids": [a], "metric_key": "loss", "start_step": 5}),
        json!({"run_ids": [a], "metric_key": "loss", "start_step": 5, "end_step": 1}),
        json!({"run_ids": (0..101).map(|i| format!("r{i}")).collect::<Vec<_>>(), "metric_key": "loss"}),
    ] {
        assert_error(&api.get("metrics/get-history-bulk-interval", bad).await, 400, "INVALID_PARAMETER_VALUE");
    }
    let missing =
        api.get("metrics/get-history-bulk-interval", json!({"run_ids": ["nope"], "metric_key": "loss"})).await;
    assert_error(&missing, 404, "RESOURCE_DOES_NOT_EXIST");
}
