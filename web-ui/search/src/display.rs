//! The canonical text form: `metrics.acc > 0.9 AND (params.model = 'tree' OR tags.t IS NULL)`.
//! Prefixes are the plural ones, keywords upper case, strings single-quoted, keys that are
//! not plain back-quoted, and parentheses only where precedence needs them.

use std::fmt::{self, Write};

use crate::parser::is_key_char;
use crate::{Comparison, Entity, Expr, Op, OrderBy, Value};

/// A key as written after `prefix.`: bare when every character may appear unquoted,
/// otherwise in backticks with inner backticks doubled.
pub(crate) fn key_text(key: &str) -> String {
    if !key.is_empty() && key.chars().all(is_key_char) {
        key.to_string()
    } else {
        format!("`{}`", key.replace('`', "``"))
    }
}

fn write_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('\'')?;
    for part in s.split('\'').enumerate() {
        if part.0 > 0 {
            f.write_str("''")?;
        }
        f.write_str(part.1)?;
    }
    f.write_char('\'')
}

/// Shortest text that parses back to the same `f64`: plain digits for ordinary magnitudes,
/// exponent notation for very large or small ones. Non-finite numbers (which the parser
/// never produces) are written as `NaN`, `inf` and `-inf`, which do not parse.
fn write_number(f: &mut fmt::Formatter<'_>, n: f64) -> fmt::Result {
    let a = n.abs();
    if n.is_finite() && a != 0.0 && !(1e-5..1e16).contains(&a) {
        write!(f, "{n:e}")
    } else {
        write!(f, "{n}")
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(n) => write_number(f, *n),
            Value::String(s) => write_string(f, s),
            Value::List(items) => {
                f.write_char('(')?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write_string(f, item)?;
                }
                f.write_char(')')
            }
            Value::Null => f.write_str("NULL"),
        }
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{} {}", self.entity, key_text(&self.key), self.op)?;
        match (self.op, &self.value) {
            (Op::IsNull | Op::IsNotNull, _) => Ok(()),
            (_, v) => write!(f, " {v}"),
        }
    }
}

/// Canonical text of a filter; `parse_filter(&e.to_string())` gives back `e` for every
/// normalized `e` (see [`Expr::normalized`]) whose numbers are finite. Empty `And`/`Or`
/// nodes have no textual form and are written as `()`.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (children, sep, is_and) = match self {
            Expr::Cmp(c) => return c.fmt(f),
            Expr::And(v) => (v, " AND ", true),
            Expr::Or(v) => (v, " OR ", false),
        };
        match children.as_slice() {
            [] => return f.write_str("()"),
            // A one-child node is its child (`top_operator` looks through it too).
            [only] => return only.fmt(f),
            _ => {}
        }
        for (i, child) in children.iter().enumerate() {
            if i > 0 {
                f.write_str(sep)?;
            }
            // Inside AND, an OR needs parentheses (precedence) and so does a nested AND (to
            // keep the grouping visible); inside OR only a nested OR does.
            let paren = match top_operator(child) {
                None => false,
                Some(child_is_and) => is_and || !child_is_and,
            };
            if paren {
                write!(f, "({child})")?;
            } else {
                child.fmt(f)?;
            }
        }
        Ok(())
    }
}

/// The operator a node is written with at its top level (`Some(true)` for AND, `Some(false)`
/// for OR), looking through one-child nodes; `None` for a comparison or an empty node.
fn top_operator(e: &Expr) -> Option<bool> {
    match e {
        Expr::Cmp(_) => None,
        Expr::And(v) | Expr::Or(v) if v.len() == 1 => top_operator(&v[0]),
        Expr::And(v) | Expr::Or(v) if v.is_empty() => None,
        Expr::And(_) => Some(true),
        Expr::Or(_) => Some(false),
    }
}

impl fmt::Display for OrderBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = if self.ascending { "ASC" } else { "DESC" };
        write!(f, "{}.{} {dir}", self.entity, key_text(&self.key))
    }
}
