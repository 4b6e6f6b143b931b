//! The MLflow search filter and `order_by` grammar, as sent by
//! `MlflowClient.search_runs(filter_string=..., order_by=[...])`, `search_experiments`,
//! `search_registered_models` and `search_model_versions`, extended with `OR` and
//! parentheses (MLflow issue #6075).
//!
//! ```text
//! filter     := ws* | or_expr
//! or_expr    := and_expr ( OR and_expr )*            -- AND binds tighter than OR
//! and_expr   := primary ( AND primary )*
//! primary    := '(' or_expr ')' | comparison          -- at most 100 nested parentheses
//! comparison := identifier op value
//!             | identifier ( IN | NOT IN ) '(' string ( ',' string )* ')'
//!             | identifier IS [NOT] NULL
//! identifier := prefix '.' key | attribute | quoted   -- a bare name is an attribute
//! prefix     := metric[s] | param[s] | parameter[s] | tag[s]
//!             | attribute[s] | attr | run | dataset[s]
//! key        := (alphanumeric | _ . - / :)+ | quoted
//! quoted     := `...` | "..." | '...'                 -- the quote doubled inside stands for itself
//! op         := = | != | > | >= | < | <= | LIKE | ILIKE
//! value      := number | string
//! string     := '...' | "..."                         -- '' inside '...' is one quote
//! number     := [+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?
//! ```
//!
//! Keywords and prefixes are case-insensitive. Which operators and value types go with which
//! entity follows MLflow (`metrics` compare numbers with `= != > >= < <=`; `params` and `tags`
//! compare quoted strings with `= != LIKE ILIKE IN NOT IN`; `IS [NOT] NULL` works on metrics,
//! params and tags), and misuse is reported with the position of the offending token.
//!
//! [`parse_filter`] gives an [`Expr`]; its `Display` is a canonical form that parses back to
//! the same `Expr`. [`matches()`] evaluates an `Expr` in memory against a [`RunView`].

mod display;
mod eval;
mod parser;
mod schema;

use serde::{Deserialize, Serialize};

pub use eval::{compare_num, compare_str, like, matches, AttrValue, RunView};
pub use parser::{parse_filter, parse_filter_for, parse_order_by, parse_order_by_for, MAX_FILTER_LEN, MAX_NESTING};
pub use schema::{attribute_kind, AttrKind, SearchTarget};

/// What a comparison looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    Metric,
    Param,
    Tag,
    Attribute,
    Dataset,
}

impl Entity {
    /// The canonical prefix used by `Display` (`metrics`, `params`, `tags`, `attributes`,
    /// `datasets`).
    pub fn prefix(self) -> &'static str {
        match self {
            Entity::Metric => "metrics",
            Entity::Param => "params",
            Entity::Tag => "tags",
            Entity::Attribute => "attributes",
            Entity::Dataset => "datasets",
        }
    }
}

/// The right-hand side of a comparison: a number for metrics and numeric attributes, a
/// string otherwise, a list for `IN` / `NOT IN`, and `Null` for `IS [NOT] NULL`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    Number(f64),
    String(String),
    List(Vec<String>),
    Null,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Like,
    ILike,
    In,
    NotIn,
    IsNull,
    IsNotNull,
}

impl Op {
    /// The operator as written in a filter (`=`, `NOT IN`, `IS NULL`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Like => "LIKE",
            Op::ILike => "ILIKE",
            Op::In => "IN",
            Op::NotIn => "NOT IN",
            Op::IsNull => "IS NULL",
            Op::IsNotNull => "IS NOT NULL",
        }
    }
}

/// One clause: `<entity>.<key> <op> <value>`. For attributes `key` is the canonical
/// attribute name (`created` becomes `start_time`, `run name` becomes `run_name`); for
/// datasets it is `name`, `digest` or `context`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub entity: Entity,
    pub key: String,
    pub op: Op,
    pub value: Value,
}

/// A parsed filter.
///
/// The parser produces *normalized* trees: every `And`/`Or` has at least two children, an
/// `And` never directly contains an `And` and an `Or` never directly contains an `Or`
/// (`(a AND b) AND c` becomes `And([a, b, c])`). See [`Expr::normalized`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expr {
    Cmp(Comparison),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

impl Expr {
    /// The same filter in the shape the parser produces: nested `And`s (and `Or`s) are
    /// flattened and one-child `And`/`Or` nodes are replaced by their child. Empty
    /// `And`/`Or` nodes (true / false) are kept: they have no textual form.
    pub fn normalized(self) -> Expr {
        match self {
            Expr::Cmp(c) => Expr::Cmp(c),
            Expr::And(children) => collapse(children, true),
            Expr::Or(children) => collapse(children, false),
        }
    }

    /// Every comparison in the filter, left to right.
    pub fn comparisons(&self) -> Vec<&Comparison> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            match e {
                Expr::Cmp(c) => out.push(c),
                Expr::And(v) | Expr::Or(v) => stack.extend(v.iter().rev()),
            }
        }
        out
    }
}

fn collapse(children: Vec<Expr>, is_and: bool) -> Expr {
    let mut flat = Vec::with_capacity(children.len());
    for child in children {
        match (child.normalized(), is_and) {
            (Expr::And(v), true) if !v.is_empty() => flat.extend(v),
            (Expr::Or(v), false) if !v.is_empty() => flat.extend(v),
            (other, _) => flat.push(other),
        }
    }
    if flat.len() == 1 {
        flat.pop().expect("one element")
    } else if is_and {
        Expr::And(flat)
    } else {
        Expr::Or(flat)
    }
}

/// A syntax or semantic error in a filter or `order_by` entry. `position` is the 0-based byte
/// offset of the offending token, `column` its 1-based character index. The server reports it
/// as `INVALID_PARAMETER_VALUE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("at column {column}: {message}")]
pub struct ParseError {
    pub position: usize,
    pub column: usize,
    pub message: String,
}

/// One `order_by` entry such as `metrics.acc DESC`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrderBy {
    pub entity: Entity,
    pub key: String,
    pub ascending: bool,
}
