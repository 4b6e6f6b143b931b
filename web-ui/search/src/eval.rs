//! In-memory evaluation of a filter, with MLflow's semantics.

use crate::{Entity, Expr, Op, Value};

/// An attribute's value as seen by [`matches()`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttrValue<'a> {
    Str(&'a str),
    Num(f64),
}

/// What [`matches()`] needs to know about a run (or experiment, model, model version).
pub trait RunView {
    /// The latest value of metric `key`, if the run has it.
    fn metric(&self, key: &str) -> Option<f64>;
    fn param(&self, key: &str) -> Option<&str>;
    fn tag(&self, key: &str) -> Option<&str>;
    /// A canonical attribute name (`run_id`, `start_time`, ...): `Str` for string attributes,
    /// `Num` for numeric ones; `None` if unset (e.g. `end_time` of a running run).
    fn attribute(&self, key: &str) -> Option<AttrValue<'_>>;
    /// Whether any of the run's dataset inputs has `field` (`name`, `digest` or `context`)
    /// satisfying `op v`. [`compare_str`] does the comparison for one dataset. By default no
    /// dataset matches.
    fn dataset_matches(&self, _field: &str, _op: &Op, _v: &Value) -> bool {
        false
    }
}

/// Whether `run` satisfies `expr`. A run lacking the metric, param, tag or attribute a
/// comparison names does not match it (not even `!=` or `NOT IN`), except `IS NULL`. `LIKE`
/// is case-sensitive, `ILIKE` not; `=` and `IN` are case-sensitive. Metrics and numeric
/// attributes compare as numbers, and every comparison with a NaN (including `!=`) is
/// false. An empty `And` is true and an empty `Or` false.
pub fn matches<R: RunView + ?Sized>(expr: &Expr, run: &R) -> bool {
    match expr {
        Expr::And(children) => children.iter().all(|c| matches(c, run)),
        Expr::Or(children) => children.iter().any(|c| matches(c, run)),
        Expr::Cmp(c) => match c.entity {
            Entity::Metric => compare_num(&c.op, run.metric(&c.key), &c.value),
            Entity::Param => compare_str(&c.op, run.param(&c.key), &c.value),
            Entity::Tag => compare_str(&c.op, run.tag(&c.key), &c.value),
            Entity::Attribute => match run.attribute(&c.key) {
                Some(AttrValue::Num(n)) => compare_num(&c.op, Some(n), &c.value),
                Some(AttrValue::Str(s)) => compare_str(&c.op, Some(s), &c.value),
                None => compare_str(&c.op, None, &c.value),
            },
            Entity::Dataset => run.dataset_matches(&c.key, &c.op, &c.value),
        },
    }
}

/// `lhs op value` for a number (`lhs` is `None` when the run lacks it). Only
/// `= != > >= < <=` against a `Value::Number`, and `IS [NOT] NULL`, can be true.
pub fn compare_num(op: &Op, lhs: Option<f64>, value: &Value) -> bool {
    match (op, lhs) {
        (Op::IsNull, lhs) => lhs.is_none(),
        (Op::IsNotNull, lhs) => lhs.is_some(),
        (_, None) => false,
        (op, Some(l)) => {
            let Value::Number(r) = *value else {
                return false;
            };
            match op {
                Op::Eq => l == r,
                Op::Ne => !l.is_nan() && !r.is_nan() && l != r,
                Op::Gt => l > r,
                Op::Ge => l >= r,
                Op::Lt => l < r,
                Op::Le => l <= r,
                _ => false,
            }
        }
    }
}

/// `lhs op value` for a string (`lhs` is `None` when the run lacks it). `=`, `!=` and
/// `LIKE`/`ILIKE` take a `Value::String`, `IN`/`NOT IN` a `Value::List`; ordering operators
/// are never true (MLflow does not order strings).
pub fn compare_str(op: &Op, lhs: Option<&str>, value: &Value) -> bool {
    match (op, lhs) {
        (Op::IsNull, lhs) => lhs.is_none(),
        (Op::IsNotNull, lhs) => lhs.is_some(),
        (_, None) => false,
        (op, Some(l)) => match (op, value) {
            (Op::Eq, Value::String(r)) => l == r,
            (Op::Ne, Value::String(r)) => l != r,
            (Op::Like, Value::String(p)) => like(p, l, false),
            (Op::ILike, Value::String(p)) => like(p, l, true),
            (Op::In, Value::List(items)) => items.iter().any(|i| i == l),
            (Op::NotIn, Value::List(items)) => !items.iter().any(|i| i == l),
            _ => false,
        },
    }
}

/// Lower-cases one character when that gives one character (almost always); otherwise keeps
/// it, so that `_` still stands for exactly one character of the original text.
fn fold(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => l,
        _ => c,
    }
}

/// SQL `LIKE`: `%` matches any run of characters (also none), `_` exactly one character,
/// everything else itself; the whole of `s` must match. There is no escape character (as in
/// MLflow). Runs in O(|pattern| × |s|) time at worst, with no recursion.
pub fn like(pattern: &str, s: &str, case_insensitive: bool) -> bool {
    let map = |c: char| if case_insensitive { fold(c) } else { c };
    let p: Vec<char> = pattern.chars().map(map).collect();
    let t: Vec<char> = s.chars().map(map).collect();
    let (mut pi, mut ti) = (0, 0);
    // After the latest '%': where the pattern resumes, and where in `t` that try started.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('%') => {
                pi += 1;
                star = Some((pi, ti));
            }
            Some(&c) if c == '_' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the latest '%' swallow one more character and retry from there. Any
                // earlier '%' need not be revisited: the latest one can absorb whatever an
                // earlier one would have.
                Some((resume, start)) => {
                    pi = resume;
                    ti = start + 1;
                    star = Some((resume, start + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '%')
}
