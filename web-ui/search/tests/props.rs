//! Property tests: printing and parsing round-trip, the parsers never panic on any input, and
//! `matches` agrees with a naive reference evaluator.

use std::collections::HashMap;

use capstan_search::{
    like, matches, parse_filter, parse_order_by, AttrValue, Comparison, Entity, Expr, Op, OrderBy, ParseError, RunView,
    Value,
};
use proptest::prelude::*;
use proptest::sample::select;

// ---- generators -------------------------------------------------------------------------

const NUM_OPS: [Op; 6] = [Op::Eq, Op::Ne, Op::Gt, Op::Ge, Op::Lt, Op::Le];
const STR_OPS: [Op; 4] = [Op::Eq, Op::Ne, Op::Like, Op::ILike];
const LIST_OPS: [Op; 2] = [Op::In, Op::NotIn];
const NULL_OPS: [Op; 2] = [Op::IsNull, Op::IsNotNull];
const STRING_ATTRS: [&str; 6] = ["run_id", "run_name", "status", "artifact_uri", "user_id", "lifecycle_stage"];
const NUMBER_ATTRS: [&str; 2] = ["start_time", "end_time"];
const DATASET_FIELDS: [&str; 3] = ["name", "digest", "context"];

/// Leaves drawing keys, strings and numbers from the given strategies.
fn comparison(
    key: BoxedStrategy<String>,
    text: BoxedStrategy<String>,
    number: BoxedStrategy<f64>,
) -> BoxedStrategy<Comparison> {
    let c = |entity, key: String, op, value| Comparison { entity, key, op, value };
    let list = prop::collection::vec(text.clone(), 1..4).prop_map(Value::List);
    let str_or_tag = select(vec![Entity::Param, Entity::Tag]);
    prop_oneof![
        (key.clone(), select(NUM_OPS.to_vec()), number.clone()).prop_map(move |(k, op, n)| c(
            Entity::Metric,
            k,
            op,
            Value::Number(n)
        )),
        (key.clone(), select(NULL_OPS.to_vec())).prop_map(move |(k, op)| c(Entity::Metric, k, op, Value::Null)),
        (str_or_tag.clone(), key.clone(), select(STR_OPS.to_vec()), text.clone()).prop_map(move |(e, k, op, s)| c(
            e,
            k,
            op,
            Value::String(s)
        )),
        (str_or_tag.clone(), key.clone(), select(LIST_OPS.to_vec()), list.clone())
            .prop_map(move |(e, k, op, l)| c(e, k, op, l)),
        (str_or_tag, key, select(NULL_OPS.to_vec())).prop_map(move |(e, k, op)| c(e, k, op, Value::Null)),
        (select(STRING_ATTRS.to_vec()), select(STR_OPS.to_vec()), text.clone()).prop_map(move |(a, op, s)| c(
            Entity::Attribute,
            a.into(),
            op,
            Value::String(s)
        )),
        (select(STRING_ATTRS.to_vec()), select(LIST_OPS.to_vec()), list.clone()).prop_map(move |(a, op, l)| c(
            Entity::Attribute,
            a.into(),
            op,
            l
        )),
        (select(NUMBER_ATTRS.to_vec()), select(NUM_OPS.to_vec()), number).prop_map(move |(a, op, n)| c(
            Entity::Attribute,
            a.into(),
            op,
            Value::Number(n)
        )),
        (select(DATASET_FIELDS.to_vec()), select(STR_OPS.to_vec()), text).prop_map(move |(f, op, s)| c(
            Entity::Dataset,
            f.into(),
            op,
            Value::String(s)
        )),
        (select(DATASET_FIELDS.to_vec()), select(LIST_OPS.to_vec()), list).prop_map(move |(f, op, l)| c(
            Entity::Dataset,
            f.into(),
            op,
            l
        )),
    ]
    .boxed()
}

/// Builds an AND (or OR) node the way the parser does: children of the same kind are
/// spliced in.
fn node(children: Vec<Expr>, and: bool) -> Expr {
    let mut flat = Vec::new();
    for child in children {
        match (child, and) {
            (Expr::And(v), true) | (Expr::Or(v), false) => flat.extend(v),
            (other, _) => flat.push(other),
        }
    }
    if and {
        Expr::And(flat)
    } else {
        Expr::Or(flat)
    }
}

fn expr(leaf: BoxedStrategy<Comparison>) -> BoxedStrategy<Expr> {
    leaf.prop_map(Expr::Cmp)
        .prop_recursive(4, 40, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 2..5).prop_map(|v| node(v, true)),
                prop::collection::vec(inner, 2..5).prop_map(|v| node(v, false)),
            ]
        })
        .boxed()
}

fn any_key() -> BoxedStrategy<String> {
    prop_oneof![
        "[a-z_][a-z0-9_.]{0,8}",
        "[a-zA-Z0-9 `'\"./:%_()-]{1,8}",
        any::<String>().prop_filter("non-empty", |s| !s.is_empty()),
    ]
    .boxed()
}

fn any_text() -> BoxedStrategy<String> {
    prop_oneof!["[a-z%_]{0,6}", "[ '\"`a()%_,]{0,6}", any::<String>()].boxed()
}

fn any_number() -> BoxedStrategy<f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |n| n.is_finite()),
        -1e6..1e6f64,
        any::<i32>().prop_map(f64::from),
        select(vec![0.0, -0.0, 1e-5, 9.99e-6, 1e16, 9.999e15, f64::MAX, f64::MIN_POSITIVE]),
    ]
    .boxed()
}

/// Is `e` shaped like the parser's output (every AND/OR has two or more children, none of
/// its own kind)?
fn is_normalized(e: &Expr) -> bool {
    match e {
        Expr::Cmp(_) => true,
        Expr::And(v) => v.len() >= 2 && v.iter().all(|c| !matches!(c, Expr::And(_)) && is_normalized(c)),
        Expr::Or(v) => v.len() >= 2 && v.iter().all(|c| !matches!(c, Expr::Or(_)) && is_normalized(c)),
    }
}

fn check_error(input: &str, e: &ParseError) {
    assert!(e.position <= input.len(), "{e:?}");
    assert!(input.is_char_boundary(e.position), "{e:?}");
    assert_eq!(e.column, input[..e.position].chars().count() + 1, "{e:?}");
    assert!(!e.message.is_empty());
}

/// Parsing must not panic; errors must point inside the input; a successful parse must be
/// normalized and round-trip through its canonical text.
fn check_parse(input: &str) {
    match parse_filter(input) {
        Ok(None) => assert!(input.trim().is_empty()),
        Ok(Some(e)) => {
            assert!(is_normalized(&e), "{e:?}");
            let text = e.to_string();
            assert_eq!(parse_filter(&text), Ok(Some(e)), "canonical text {text:?}");
        }
        Err(e) => check_error(input, &e),
    }
    let items: Vec<String> = input.split('\n').map(str::to_string).collect();
    match parse_order_by(&items) {
        Ok(orders) => {
            assert_eq!(orders.len(), items.len());
            let texts: Vec<String> = orders.iter().map(|o| o.to_string()).collect();
            assert_eq!(parse_order_by(&texts), Ok(orders));
        }
        Err(e) => assert!(e.message.starts_with("order_by[")),
    }
}

const TOKENS: &[&str] = &[
    "metrics.a",
    "params.p",
    "tags.t",
    "attributes.status",
    "start_time",
    "run_name",
    "datasets.name",
    "metrics.`a b`",
    "tags.\"x.y\"",
    "metric.'q'",
    "attr.",
    "foo.bar",
    "(",
    ")",
    "((",
    "))",
    "AND",
    "and",
    "OR",
    "or",
    "NOT",
    "IN",
    "IS",
    "NULL",
    "LIKE",
    "ILIKE",
    "=",
    "!=",
    "==",
    "<>",
    ">",
    ">=",
    "<",
    "<=",
    "'x'",
    "'it''s'",
    "\"y\"",
    "'",
    "\"",
    "`",
    "1",
    "-2.5",
    "1e9",
    "1e",
    ".",
    "-",
    "+",
    ",",
    "('a', 'b')",
    "('a',",
    "%",
    "é",
    "\u{301}",
    "\n",
    "\t",
    " ",
    "  ",
    "DESC",
    "ASC",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec((select(TOKENS), select(vec!["", " ", " ", "\n"])), 0..24)
        .prop_map(|parts| parts.into_iter().map(|(t, sep)| format!("{t}{sep}")).collect())
}

// ---- a naive reference evaluator ----------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct TestRun {
    metrics: HashMap<String, f64>,
    params: HashMap<String, String>,
    tags: HashMap<String, String>,
    strs: HashMap<String, String>,
    nums: HashMap<String, f64>,
    datasets: Vec<[String; 3]>,
}

impl RunView for TestRun {
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
        if let Some(n) = self.nums.get(key) {
            return Some(AttrValue::Num(*n));
        }
        self.strs.get(key).map(|s| AttrValue::Str(s))
    }
    fn dataset_matches(&self, field: &str, op: &Op, v: &Value) -> bool {
        let i = DATASET_FIELDS.iter().position(|f| *f == field).unwrap();
        self.datasets.iter().any(|d| reference_cmp(*op, Lhs::Str(d[i].clone()), v))
    }
}

enum Lhs {
    Missing,
    Num(f64),
    Str(String),
}

/// LIKE by dynamic programming over (pattern prefix, text prefix).
fn like_reference(pattern: &str, text: &str, ci: bool) -> bool {
    let fold = |c: char| {
        let lower: Vec<char> = c.to_lowercase().collect();
        if ci && lower.len() == 1 {
            lower[0]
        } else {
            c
        }
    };
    let p: Vec<char> = pattern.chars().map(fold).collect();
    let t: Vec<char> = text.chars().map(fold).collect();
    // m[i][j]: p[..i] matches t[..j]
    let mut m = vec![vec![false; t.len() + 1]; p.len() + 1];
    m[0][0] = true;
    for i in 1..=p.len() {
        for j in 0..=t.len() {
            m[i][j] = match p[i - 1] {
                '%' => m[i - 1][j] || (j > 0 && m[i][j - 1]),
                '_' => j > 0 && m[i - 1][j - 1],
                c => j > 0 && t[j - 1] == c && m[i - 1][j - 1],
            };
        }
    }
    m[p.len()][t.len()]
}

fn reference_cmp(op: Op, lhs: Lhs, value: &Value) -> bool {
    match (op, lhs, value) {
        (Op::IsNull, Lhs::Missing, _) => true,
        (Op::IsNull, _, _) => false,
        (Op::IsNotNull, Lhs::Missing, _) => false,
        (Op::IsNotNull, _, _) => true,
        (_, Lhs::Missing, _) => false,
        (_, Lhs::Num(l), Value::Number(r)) if l.is_nan() || r.is_nan() => false,
        (Op::Eq, Lhs::Num(l), Value::Number(r)) => l == *r,
        (Op::Ne, Lhs::Num(l), Value::Number(r)) => l != *r,
        (Op::Gt, Lhs::Num(l), Value::Number(r)) => l > *r,
        (Op::Ge, Lhs::Num(l), Value::Number(r)) => l >= *r,
        (Op::Lt, Lhs::Num(l), Value::Number(r)) => l < *r,
        (Op::Le, Lhs::Num(l), Value::Number(r)) => l <= *r,
        (Op::Eq, Lhs::Str(l), Value::String(r)) => l == *r,
        (Op::Ne, Lhs::Str(l), Value::String(r)) => l != *r,
        (Op::Like, Lhs::Str(l), Value::String(p)) => like_reference(p, &l, false),
        (Op::ILike, Lhs::Str(l), Value::String(p)) => like_reference(p, &l, true),
        (Op::In, Lhs::Str(l), Value::List(v)) => v.contains(&l),
        (Op::NotIn, Lhs::Str(l), Value::List(v)) => !v.contains(&l),
        _ => false,
    }
}

fn reference(e: &Expr, run: &TestRun) -> bool {
    match e {
        Expr::And(v) => v.iter().filter(|c| reference(c, run)).count() == v.len(),
        Expr::Or(v) => v.iter().filter(|c| reference(c, run)).count() > 0,
        Expr::Cmp(c) => {
            let lhs = match c.entity {
                Entity::Metric => run.metrics.get(&c.key).map(|n| Lhs::Num(*n)),
                Entity::Param => run.params.get(&c.key).map(|s| Lhs::Str(s.clone())),
                Entity::Tag => run.tags.get(&c.key).map(|s| Lhs::Str(s.clone())),
                Entity::Attribute => run
                    .nums
                    .get(&c.key)
                    .map(|n| Lhs::Num(*n))
                    .or_else(|| run.strs.get(&c.key).map(|s| Lhs::Str(s.clone()))),
                Entity::Dataset => {
                    let i = DATASET_FIELDS.iter().position(|f| *f == c.key).unwrap();
                    return run.datasets.iter().any(|d| reference_cmp(c.op, Lhs::Str(d[i].clone()), &c.value));
                }
            };
            reference_cmp(c.op, lhs.unwrap_or(Lhs::Missing), &c.value)
        }
    }
}

fn small_key() -> BoxedStrategy<String> {
    select(vec!["a".to_string(), "b".into(), "c d".into()]).boxed()
}
fn small_text() -> BoxedStrategy<String> {
    select(vec![
        "".to_string(),
        "x".into(),
        "X".into(),
        "xy".into(),
        "x%".into(),
        "%y".into(),
        "_".into(),
        "X_".into(),
        "%".into(),
        "é".into(),
        "É".into(),
    ])
    .boxed()
}
fn small_number() -> BoxedStrategy<f64> {
    select(vec![-1.0, 0.0, 1.0, 2.5, f64::NAN, f64::INFINITY]).boxed()
}

fn test_run() -> impl Strategy<Value = TestRun> {
    let map_n = || prop::collection::hash_map(small_key(), small_number(), 0..3);
    let map_s = || prop::collection::hash_map(small_key(), small_text(), 0..3);
    let attr_s = prop::collection::hash_map(select(STRING_ATTRS.to_vec()), small_text(), 0..4);
    let attr_n = prop::collection::hash_map(select(NUMBER_ATTRS.to_vec()), small_number(), 0..2);
    let datasets =
        prop::collection::vec((small_text(), small_text(), small_text()).prop_map(|(a, b, c)| [a, b, c]), 0..3);
    (map_n(), map_s(), map_s(), attr_s, attr_n, datasets).prop_map(|(metrics, params, tags, strs, nums, datasets)| {
        TestRun {
            metrics,
            params,
            tags,
            strs: strs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            nums: nums.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            datasets,
        }
    })
}

// ---- properties ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn display_then_parse_gives_the_same_ast(
        e in expr(comparison(any_key(), any_text(), any_number()))
    ) {
        let text = e.to_string();
        prop_assert_eq!(parse_filter(&text), Ok(Some(e.clone())), "text: {}", text);
        // The canonical text is a fixed point.
        prop_assert_eq!(parse_filter(&text).unwrap().unwrap().to_string(), text);
        prop_assert_eq!(e.clone().normalized(), e);
    }

    #[test]
    fn order_by_display_round_trips(
        key in any_key(),
        entity in select(vec![Entity::Metric, Entity::Param, Entity::Tag]),
        ascending: bool,
    ) {
        let o = OrderBy { entity, key, ascending };
        prop_assert_eq!(parse_order_by(&[o.to_string()]), Ok(vec![o]));
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_strings(s in any::<String>()) {
        check_parse(&s);
    }

    #[test]
    fn parsers_never_panic_on_token_soup(s in token_soup()) {
        check_parse(&s);
    }

    #[test]
    fn parsers_never_panic_on_mutated_filters(
        e in expr(comparison(any_key(), any_text(), any_number())),
        cut in any::<prop::sample::Index>(),
        insert in select(TOKENS),
        delete in 0usize..4,
    ) {
        let text = e.to_string();
        let mut at = cut.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let mut end = (at + delete).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        check_parse(&format!("{}{}{}", &text[..at], insert, &text[end..]));
    }

    #[test]
    fn parsers_never_panic_on_deep_nesting(
        open in 0usize..300,
        close in 0usize..300,
        middle in token_soup(),
    ) {
        check_parse(&format!("{}{middle}{}", "(".repeat(open), ")".repeat(close)));
    }

    #[test]
    fn matches_agrees_with_reference(
        e in expr(comparison(small_key(), small_text(), small_number())),
        run in test_run(),
    ) {
        prop_assert_eq!(matches(&e, &run), reference(&e, &run), "{}", e);
    }

    #[test]
    fn like_agrees_with_reference(
        pattern in "[ab%_Aé]{0,8}",
        text in "[abAÉé]{0,10}",
        ci: bool,
    ) {
        prop_assert_eq!(like(&pattern, &text, ci), like_reference(&pattern, &text, ci));
    }
}

/// The fuzz seed corpus (table-test strings and small inputs the fuzzer found) replays
/// through the same checks as the fuzz target, without a nightly toolchain.
#[test]
fn fuzz_corpus_replays_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/parse_filter");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz corpus directory") {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        if let Ok(input) = std::str::from_utf8(&bytes) {
            check_parse(input);
            replayed += 1;
        }
    }
    assert!(replayed >= 30, "only {replayed} corpus entries");
}
