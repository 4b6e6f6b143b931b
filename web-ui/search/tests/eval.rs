//! In-memory evaluation and LIKE.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use capstan_search::{compare_str, like, matches, parse_filter, AttrValue, Expr, Op, RunView, Value};

#[derive(Default)]
struct Run {
    metrics: HashMap<String, f64>,
    params: HashMap<String, String>,
    tags: HashMap<String, String>,
    attrs: HashMap<String, AttrValue<'static>>,
    /// (name, digest, context) of each dataset input.
    datasets: Vec<[&'static str; 3]>,
}

impl RunView for Run {
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
        self.attrs.get(key).copied()
    }
    fn dataset_matches(&self, field: &str, op: &Op, v: &Value) -> bool {
        let i = match field {
            "name" => 0,
            "digest" => 1,
            _ => 2,
        };
        self.datasets.iter().any(|d| compare_str(op, Some(d[i]), v))
    }
}

fn run() -> Run {
    let mut r = Run::default();
    r.metrics.insert("rmse".into(), 0.5);
    r.metrics.insert("f1 score".into(), 0.75);
    r.metrics.insert("nan".into(), f64::NAN);
    r.metrics.insert("inf".into(), f64::INFINITY);
    r.params.insert("model".into(), "GPT-3.5".into());
    r.params.insert("lr".into(), "0.1".into());
    r.tags.insert("mlflow.runName".into(), "brave-owl-42".into());
    r.tags.insert("empty".into(), String::new());
    r.attrs.insert("run_id".into(), AttrValue::Str("abc"));
    r.attrs.insert("run_name".into(), AttrValue::Str("brave-owl-42"));
    r.attrs.insert("status".into(), AttrValue::Str("FINISHED"));
    r.attrs.insert("start_time".into(), AttrValue::Num(1000.0));
    r.datasets.push(["custom", "s8ds293b", "train"]);
    r
}

fn eval(filter: &str) -> bool {
    let r = run();
    match parse_filter(filter).unwrap() {
        Some(e) => matches(&e, &r),
        None => true,
    }
}

#[test]
fn mlflow_semantics() {
    let table: &[(&str, bool)] = &[
        ("", true),
        ("metrics.rmse < 1", true),
        ("metrics.rmse < 0.5", false),
        ("metrics.rmse <= 0.5", true),
        ("metrics.rmse = 0.5", true),
        ("metrics.rmse != 0.5", false),
        ("metrics.rmse >= 0.5 and metrics.rmse > 0.4", true),
        ("metrics.`f1 score` >= 0.5", true),
        ("metrics.missing < 1", false),
        ("metrics.missing != 1", false),
        ("metrics.missing IS NULL", true),
        ("metrics.rmse IS NULL", false),
        ("metrics.rmse IS NOT NULL", true),
        // NaN compares false, even with !=.
        ("metrics.nan = 0", false),
        ("metrics.nan != 0", false),
        ("metrics.nan < 0", false),
        ("metrics.nan > 0", false),
        ("metrics.nan IS NOT NULL", true),
        ("metrics.inf > 1e308", true),
        ("params.model = 'GPT-3.5'", true),
        ("params.model = 'gpt-3.5'", false),
        ("params.model LIKE 'GPT%'", true),
        ("params.model LIKE 'gpt%'", false),
        ("params.model ILIKE 'gpt%'", true),
        ("params.model LIKE 'GPT-_._'", true),
        ("params.model LIKE 'GPT-_'", false),
        ("params.model != 'x'", true),
        ("params.missing != 'x'", false),
        ("params.missing NOT IN ('x')", false),
        ("params.missing IS NULL", true),
        ("params.lr IN ('0.01', '0.1')", true),
        ("params.lr NOT IN ('0.01', '0.1')", false),
        ("params.lr NOT IN ('0.01')", true),
        ("tags.\"mlflow.runName\" = 'brave-owl-42'", true),
        ("tags.empty = ''", true),
        ("tags.empty IS NOT NULL", true),
        ("tags.t IS NULL", true),
        ("attributes.status = 'FINISHED'", true),
        ("status != 'FINISHED'", false),
        ("run_name LIKE 'brave%'", true),
        ("attributes.run_id IN ('abc','def')", true),
        ("attributes.run_id NOT IN ('abc')", false),
        ("attributes.start_time > 999", true),
        ("created < 1000", false),
        ("attributes.end_time > 0", false),
        ("attributes.user_id != 'x'", false),
        ("datasets.name = 'custom'", true),
        ("datasets.context IN ('test')", false),
        ("datasets.digest LIKE 's8%'", true),
        // OR and parentheses.
        ("metrics.rmse > 1 OR params.model = 'GPT-3.5'", true),
        ("metrics.rmse > 1 OR params.model = 'x'", false),
        ("metrics.rmse > 1 OR params.model = 'x' AND tags.t IS NULL", false),
        ("(metrics.rmse > 1 OR params.model != 'x') AND tags.t IS NULL", true),
        ("metrics.rmse < 1 AND (params.lr = '0.2' OR status = 'FINISHED')", true),
        ("metrics.rmse < 1 AND (params.lr = '0.2' OR status = 'FAILED')", false),
    ];
    for &(filter, want) in table {
        assert_eq!(eval(filter), want, "{filter}");
    }
}

#[test]
fn matches_takes_trait_objects_and_empty_nodes() {
    let r = run();
    let dynamic: &dyn RunView = &r;
    assert!(matches(&Expr::And(vec![]), dynamic));
    assert!(!matches(&Expr::Or(vec![]), dynamic));
}

#[test]
fn like_wildcards() {
    let table: &[(&str, &str, bool, bool)] = &[
        ("", "", false, true),
        ("", "a", false, false),
        ("%", "", false, true),
        ("%", "anything", false, true),
        ("_", "", false, false),
        ("_", "é", false, true),
        ("a%", "abc", false, true),
        ("%c", "abc", false, true),
        ("%b%", "abc", false, true),
        ("a_c", "abc", false, true),
        ("a_c", "abbc", false, false),
        ("a%c", "ac", false, true),
        ("a%%c", "abbbc", false, true),
        ("%a%b", "aaab", false, true),
        ("%a%b", "aaaba", false, false),
        ("abc", "ABC", false, false),
        ("abc", "ABC", true, true),
        ("ÄB%", "äbc", true, true),
        ("exp%", "exp", false, true),
        ("exp%", "ex", false, false),
        ("%ab%ab", "abab", false, true),
        ("%ab%ab", "abaab", false, true),
        ("%ab%ab", "aba", false, false),
        ("_%_", "ab", false, true),
        ("_%_", "a", false, false),
        ("100%", "100%", false, true),
        ("a\nb", "a\nb", false, true),
        ("a_b", "a\nb", false, true),
    ];
    for &(pattern, s, ci, want) in table {
        assert_eq!(like(pattern, s, ci), want, "{pattern:?} {s:?} ci={ci}");
    }
}

#[test]
fn like_has_no_exponential_backtracking() {
    let text = "a".repeat(10_000);
    let started = Instant::now();
    assert!(!like("%a%a%a%a%a%a%a%b", &text, false));
    assert!(!like("%a%a%a%a%a%a%a%b", &text, true));
    assert!(like("%a%a%a%a%a%a%a%a", &text, false));
    assert!(!like(&"%a".repeat(50).replace("a%a%a", "a%_a%b"), &text, false));
    let long_pattern = format!("{}b", "%a".repeat(2_000));
    assert!(!like(&long_pattern, &text[..5_000], false));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}
