//! A hand-written, depth-checked recursive-descent parser. Lexing is done on demand by the
//! parser (the meaning of a character depends on where it stands: `-` is part of a key in
//! `metrics.val-loss` and a sign in `> -1`).

use crate::schema::{AttrKind, DATASET_FIELDS};
use crate::{Comparison, Entity, Expr, Op, OrderBy, ParseError, SearchTarget, Value};

/// Longer filters (and `order_by` entries) are rejected.
pub const MAX_FILTER_LEN: usize = 100_000;
/// Parentheses may nest this deep; one more level is an error.
pub const MAX_NESTING: usize = 100;

const OPERATORS: &str = "=, !=, >, >=, <, <=, LIKE, ILIKE, IN, NOT IN, IS NULL, IS NOT NULL";
const KEYWORDS: &[&str] = &["and", "or", "not", "in", "like", "ilike", "is", "null", "asc", "desc"];
/// How much of the offending text an error message quotes.
const SNIPPET_CHARS: usize = 40;

/// Parses a `search_runs` filter. Empty (or all-whitespace) input means "no filter":
/// `Ok(None)`.
pub fn parse_filter(s: &str) -> Result<Option<Expr>, ParseError> {
    parse_filter_for(SearchTarget::Runs, s)
}

/// Parses a filter for `target` (which decides the entities and attributes it may use).
pub fn parse_filter_for(target: SearchTarget, s: &str) -> Result<Option<Expr>, ParseError> {
    check_len(s, "filter")?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    let mut p = Parser { src: s, pos: 0, target, order_by: false };
    let expr = p.parse_or(0)?;
    p.skip_ws();
    match p.peek() {
        None => Ok(Some(expr)),
        Some(')') => Err(p.err(p.pos, "unexpected ')': no '(' is open")),
        Some(_) => Err(p.err(p.pos, format!("expected AND, OR or end of input, found {}", p.found(p.pos)))),
    }
}

/// Parses `search_runs` `order_by` entries (`metrics.acc DESC`, `params.p`, `start_time ASC`;
/// ascending unless `DESC`). An error's message starts with `order_by[i]: ` and its position
/// and column are within entry `i`.
pub fn parse_order_by(items: &[String]) -> Result<Vec<OrderBy>, ParseError> {
    parse_order_by_for(SearchTarget::Runs, items)
}

/// Parses `order_by` entries for `target`.
pub fn parse_order_by_for(target: SearchTarget, items: &[String]) -> Result<Vec<OrderBy>, ParseError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            parse_order_by_item(target, item)
                .map_err(|e| ParseError { message: format!("order_by[{i}]: {}", e.message), ..e })
        })
        .collect()
}

fn parse_order_by_item(target: SearchTarget, s: &str) -> Result<OrderBy, ParseError> {
    check_len(s, "order_by entry")?;
    let mut p = Parser { src: s, pos: 0, target, order_by: true };
    p.skip_ws();
    if p.peek().is_none() {
        return Err(p.err(p.pos, "empty order_by entry: expected a key such as metrics.acc or start_time"));
    }
    let (entity, key) = p.parse_identifier()?;
    p.skip_ws();
    let mut ascending = true;
    if p.peek().is_some() {
        let word = p.word_at(p.pos);
        if word.eq_ignore_ascii_case("asc") {
            p.pos += word.len();
        } else if word.eq_ignore_ascii_case("desc") {
            ascending = false;
            p.pos += word.len();
        } else {
            return Err(p.err(p.pos, format!("expected ASC, DESC or the end of the entry, found {}", p.found(p.pos))));
        }
    }
    p.skip_ws();
    if p.peek().is_some() {
        let hint = if p.peek() == Some(',') { "; give each ordering as its own order_by entry" } else { "" };
        return Err(p.err(p.pos, format!("expected the end of the entry, found {}{hint}", p.found(p.pos))));
    }
    Ok(OrderBy { entity, key, ascending })
}

fn check_len(s: &str, what: &str) -> Result<(), ParseError> {
    if s.len() > MAX_FILTER_LEN {
        return Err(ParseError {
            position: 0,
            column: 1,
            message: format!("{what} is too long: {} bytes (the limit is {MAX_FILTER_LEN})", s.len()),
        });
    }
    Ok(())
}

/// Characters allowed in an unquoted key (`metrics.val-loss`, `tags.mlflow.runName`,
/// `metrics.train/loss`). Anything else needs quoting.
pub(crate) fn is_key_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | ':')
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// What the value of a comparison must be.
#[derive(Clone, Copy)]
enum Kind<'k> {
    Metric,
    Param,
    Tag,
    Attr(&'k str, AttrKind),
    Dataset,
}

impl Kind<'_> {
    fn of<'k>(target: SearchTarget, entity: Entity, key: &'k str) -> Kind<'k> {
        match entity {
            Entity::Metric => Kind::Metric,
            Entity::Param => Kind::Param,
            Entity::Tag => Kind::Tag,
            Entity::Dataset => Kind::Dataset,
            Entity::Attribute => Kind::Attr(key, crate::attribute_kind(target, key).unwrap_or(AttrKind::String)),
        }
    }

    fn numeric(self) -> bool {
        matches!(self, Kind::Metric | Kind::Attr(_, AttrKind::Number))
    }

    /// "metrics", "the numeric attribute 'start_time'", ...
    fn describe(self) -> String {
        match self {
            Kind::Metric => "metrics".into(),
            Kind::Param => "params".into(),
            Kind::Tag => "tags".into(),
            Kind::Dataset => "datasets".into(),
            Kind::Attr(k, AttrKind::Number) => format!("the numeric attribute '{k}'"),
            Kind::Attr(k, AttrKind::String) => format!("the string attribute '{k}'"),
        }
    }

    fn allowed_ops(self) -> &'static [Op] {
        use Op::*;
        match self {
            Kind::Metric => &[Eq, Ne, Gt, Ge, Lt, Le, IsNull, IsNotNull],
            Kind::Param | Kind::Tag => &[Eq, Ne, Like, ILike, In, NotIn, IsNull, IsNotNull],
            Kind::Attr(_, AttrKind::Number) => &[Eq, Ne, Gt, Ge, Lt, Le],
            Kind::Attr(_, AttrKind::String) | Kind::Dataset => &[Eq, Ne, Like, ILike, In, NotIn],
        }
    }
}

fn list_ops(ops: &[Op]) -> String {
    let names: Vec<&str> = ops.iter().map(|o| o.as_str()).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

struct Parser<'a> {
    src: &'a str,
    /// Byte offset of the next unread character (always on a char boundary).
    pos: usize,
    target: SearchTarget,
    order_by: bool,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_at(&self, pos: usize) -> Option<char> {
        self.src.get(pos..).and_then(|r| r.chars().next())
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn column(&self, pos: usize) -> usize {
        self.src[..pos].chars().count() + 1
    }

    fn err(&self, pos: usize, message: impl Into<String>) -> ParseError {
        let mut position = pos.min(self.src.len());
        while !self.src.is_char_boundary(position) {
            position -= 1;
        }
        ParseError { position, column: self.column(position), message: message.into() }
    }

    /// The run of word characters (alphanumeric, `_`) at `pos`.
    fn word_at(&self, pos: usize) -> &'a str {
        let rest = &self.src[pos..];
        let end = rest.find(|c| !is_word_char(c)).unwrap_or(rest.len());
        &rest[..end]
    }

    /// Skips whitespace, then consumes `kw` (case-insensitive) if it is the next word.
    fn eat_keyword(&mut self, kw: &str) -> bool {
        self.skip_ws();
        let word = self.word_at(self.pos);
        if word.eq_ignore_ascii_case(kw) {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    /// Describes the token at `pos` for an error message: `'foo'`, `the string 'abc'`,
    /// `end of input`.
    fn found(&self, pos: usize) -> String {
        let rest = &self.src[pos..];
        let Some(first) = rest.chars().next() else {
            return "end of input".into();
        };
        let (len, what) = match first {
            '\'' | '"' | '`' => {
                // Up to and including the closing quote (a doubled quote does not close).
                let mut end = rest.len();
                let mut i = 1;
                while let Some(off) = rest[i..].find(first) {
                    let at = i + off;
                    if rest[at + 1..].starts_with(first) {
                        i = at + 2;
                    } else {
                        end = at + 1;
                        break;
                    }
                }
                let what = if first == '`' { "the quoted name " } else { "the string " };
                (end, what)
            }
            c if is_key_char(c) => (rest.find(|c| !is_key_char(c)).unwrap_or(rest.len()), ""),
            '=' | '!' | '<' | '>' => (rest.find(|c| !matches!(c, '=' | '!' | '<' | '>')).unwrap_or(rest.len()), ""),
            c => (c.len_utf8(), ""),
        };
        let text = &rest[..len];
        let mut snippet: String = text.chars().take(SNIPPET_CHARS).collect();
        if snippet.len() < text.len() {
            snippet.push('…');
        }
        if what.is_empty() {
            format!("'{snippet}'")
        } else {
            format!("{what}{snippet}")
        }
    }

    // ---- expressions -------------------------------------------------------------------

    /// `or_expr := and_expr (OR and_expr)*`. `depth` is the number of enclosing parentheses.
    fn parse_or(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut ors = Vec::new();
        loop {
            let mut ands = Vec::new();
            push_flat(&mut ands, self.parse_primary(depth)?, true);
            while self.eat_keyword("and") {
                push_flat(&mut ands, self.parse_primary(depth)?, true);
            }
            let and = if ands.len() == 1 { ands.pop().expect("one element") } else { Expr::And(ands) };
            push_flat(&mut ors, and, false);
            if !self.eat_keyword("or") {
                break;
            }
        }
        Ok(if ors.len() == 1 { ors.pop().expect("one element") } else { Expr::Or(ors) })
    }

    fn parse_primary(&mut self, depth: usize) -> Result<Expr, ParseError> {
        self.skip_ws();
        if self.peek() != Some('(') {
            return self.parse_comparison();
        }
        let open = self.pos;
        if depth >= MAX_NESTING {
            return Err(
                self.err(open, format!("parentheses are nested too deeply (the limit is {MAX_NESTING} levels)"))
            );
        }
        self.pos += 1;
        let inner = self.parse_or(depth + 1)?;
        self.skip_ws();
        if self.peek() == Some(')') {
            self.pos += 1;
            Ok(inner)
        } else {
            Err(self.err(
                self.pos,
                format!(
                    "expected AND, OR or ')' to close the '(' at column {}, found {}",
                    self.column(open),
                    self.found(self.pos)
                ),
            ))
        }
    }

    fn parse_comparison(&mut self) -> Result<Expr, ParseError> {
        let (entity, key) = self.parse_identifier()?;
        self.skip_ws();
        let op_pos = self.pos;
        let op = self.parse_op()?;
        let kind = Kind::of(self.target, entity, &key);
        if !kind.allowed_ops().contains(&op) {
            return Err(self.err(op_pos, op_error(kind, op)));
        }
        let value = match op {
            Op::IsNull | Op::IsNotNull => Value::Null,
            Op::In | Op::NotIn => self.parse_list(op)?,
            _ => {
                self.skip_ws();
                let value_pos = self.pos;
                let value = self.parse_scalar(op)?;
                match (&value, kind.numeric()) {
                    (Value::String(s), true) => {
                        let hint = if s.trim().parse::<f64>().is_ok() { " (remove the quotes)" } else { "" };
                        return Err(self.err(
                            value_pos,
                            format!(
                                "{} compare numerically: expected a number, found {}{hint}",
                                capitalize(&kind.describe()),
                                self.found(value_pos)
                            ),
                        ));
                    }
                    (Value::Number(_), false) => {
                        let raw = &self.src[value_pos..self.pos];
                        return Err(self.err(
                            value_pos,
                            format!(
                                "{} hold strings: expected a quoted string (e.g. '{raw}'), \
                                 found {raw}",
                                capitalize(&kind.describe())
                            ),
                        ));
                    }
                    _ => value,
                }
            }
        };
        Ok(Expr::Cmp(Comparison { entity, key, op, value }))
    }

    // ---- identifiers -------------------------------------------------------------------

    /// `prefix.key`, a bare attribute name or a quoted attribute name. Returns the entity
    /// and the key (canonical for attributes and datasets).
    fn parse_identifier(&mut self) -> Result<(Entity, String), ParseError> {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            Some('"' | '`') => {
                let name = self.read_quoted("quoted name")?;
                self.resolve_attribute(&name, start, true)
            }
            Some(c) if c.is_alphabetic() || c == '_' => {
                let word = self.word_at(start);
                self.pos += word.len();
                if self.peek() != Some('.') {
                    if KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word)) {
                        return Err(self.err(start, self.expected_identifier(start)));
                    }
                    return self.resolve_attribute(word, start, true);
                }
                let entity = self.resolve_prefix(word, start)?;
                self.pos += 1; // '.'
                let key_pos = self.pos;
                let key = match self.peek() {
                    Some('"' | '`' | '\'') => self.read_quoted("quoted key")?,
                    Some(c) if is_key_char(c) => {
                        let rest = self.rest();
                        let end = rest.find(|c| !is_key_char(c)).unwrap_or(rest.len());
                        self.pos += end;
                        rest[..end].to_string()
                    }
                    _ => {
                        return Err(
                            self.err(key_pos, format!("expected a key after '{word}.', found {}", self.found(key_pos)))
                        )
                    }
                };
                if key.is_empty() {
                    return Err(self.err(key_pos, format!("empty key after '{word}.'")));
                }
                match entity {
                    Entity::Attribute => self.resolve_attribute(&key, key_pos, false),
                    Entity::Dataset => match DATASET_FIELDS.iter().find(|f| f.eq_ignore_ascii_case(&key)) {
                        Some(field) => Ok((Entity::Dataset, field.to_string())),
                        None => Err(self.err(
                            key_pos,
                            format!("unknown dataset field '{key}'; valid fields are {}", DATASET_FIELDS.join(", ")),
                        )),
                    },
                    _ => Ok((entity, key)),
                }
            }
            _ => Err(self.err(start, self.expected_identifier(start))),
        }
    }

    fn expected_identifier(&self, pos: usize) -> String {
        if self.order_by {
            format!("expected a key such as metrics.acc or start_time, found {}", self.found(pos))
        } else {
            format!(
                "expected a filter clause such as metrics.acc > 0.9 or params.model = 'tree', \
                 found {}",
                self.found(pos)
            )
        }
    }

    fn resolve_prefix(&self, word: &str, pos: usize) -> Result<Entity, ParseError> {
        let entity = match word.to_ascii_lowercase().as_str() {
            "metric" | "metrics" => Some(Entity::Metric),
            "param" | "params" | "parameter" | "parameters" => Some(Entity::Param),
            "tag" | "tags" => Some(Entity::Tag),
            "attribute" | "attributes" | "attr" | "run" => Some(Entity::Attribute),
            "dataset" | "datasets" => Some(Entity::Dataset),
            _ => None,
        };
        let allowed = self.target.entities(self.order_by);
        let allowed_list = || {
            let names: Vec<&str> = allowed.iter().map(|e| e.prefix()).collect();
            names.join(", ")
        };
        match entity {
            Some(e) if allowed.contains(&e) => Ok(e),
            Some(e) => {
                let context = if self.order_by {
                    format!("in order_by when searching {}", self.target.describe())
                } else {
                    format!("when searching {}", self.target.describe())
                };
                Err(self.err(pos, format!("{} cannot be used {context}; use one of: {}", e.prefix(), allowed_list())))
            }
            None => Err(self.err(
                pos,
                format!(
                    "unknown entity type '{word}'; expected one of: {} (e.g. {}.<key>)",
                    allowed_list(),
                    allowed[0].prefix()
                ),
            )),
        }
    }

    fn resolve_attribute(&self, name: &str, pos: usize, bare: bool) -> Result<(Entity, String), ParseError> {
        let def = self.target.find_attribute(name);
        if let Some(def) = def {
            if def.searchable || self.order_by {
                return Ok((Entity::Attribute, def.name.to_string()));
            }
        }
        let valid: Vec<&str> =
            self.target.attributes().iter().filter(|d| d.searchable || self.order_by).map(|d| d.name).collect();
        let mut message = match def {
            Some(def) => format!(
                "attribute '{}' can only be used in order_by, not in a filter; valid attributes \
                 are: {}",
                def.name,
                valid.join(", ")
            ),
            None => format!("unknown attribute '{name}'; valid attributes are: {}", valid.join(", ")),
        };
        if bare && def.is_none() {
            let key = crate::display::key_text(name);
            let allowed = self.target.entities(self.order_by);
            let others: Vec<String> = allowed
                .iter()
                .filter(|e| matches!(e, Entity::Metric | Entity::Param | Entity::Tag))
                .map(|e| format!("{}.{key}", e.prefix()))
                .collect();
            if !others.is_empty() {
                message.push_str(&format!(
                    " (a name without a prefix is an attribute; did you mean {}?)",
                    others.join(" or ")
                ));
            }
        }
        Err(self.err(pos, message))
    }

    /// Reads a quoted string or name starting at the opening quote. A doubled quote
    /// character inside stands for one.
    fn read_quoted(&mut self, what: &str) -> Result<String, ParseError> {
        let open = self.pos;
        let quote = self.peek().expect("caller saw a quote");
        self.pos += quote.len_utf8();
        let mut out = String::new();
        loop {
            let rest = self.rest();
            let Some(i) = rest.find(quote) else {
                return Err(self.err(open, format!("unterminated {what}: no closing {quote} for the {quote} here")));
            };
            out.push_str(&rest[..i]);
            self.pos += i + 1;
            if self.peek() == Some(quote) {
                out.push(quote);
                self.pos += 1;
            } else {
                return Ok(out);
            }
        }
    }

    // ---- operators and values ----------------------------------------------------------

    fn parse_op(&mut self) -> Result<Op, ParseError> {
        let start = self.pos;
        let next = self.peek_at(start + 1);
        let (op, len) = match self.peek() {
            Some('=') if next == Some('=') => {
                return Err(self.err(start, "unknown operator '=='; use '='"));
            }
            Some('=') => (Op::Eq, 1),
            Some('!') if next == Some('=') => (Op::Ne, 2),
            Some('<') if next == Some('>') => {
                return Err(self.err(start, "unknown operator '<>'; use '!='"));
            }
            Some('<') if next == Some('=') => (Op::Le, 2),
            Some('<') => (Op::Lt, 1),
            Some('>') if next == Some('=') => (Op::Ge, 2),
            Some('>') => (Op::Gt, 1),
            Some(c) if is_word_char(c) => {
                let word = self.word_at(start);
                let op = match word.to_ascii_lowercase().as_str() {
                    "like" => Op::Like,
                    "ilike" => Op::ILike,
                    "in" => Op::In,
                    "not" => {
                        self.pos += word.len();
                        if self.eat_keyword("in") {
                            return Ok(Op::NotIn);
                        }
                        return Err(self.err(
                            self.pos,
                            format!(
                                "expected IN after NOT (NOT is only supported in NOT IN and IS \
                                 NOT NULL), found {}",
                                self.found(self.pos)
                            ),
                        ));
                    }
                    "is" => {
                        self.pos += word.len();
                        let negated = self.eat_keyword("not");
                        if self.eat_keyword("null") {
                            return Ok(if negated { Op::IsNotNull } else { Op::IsNull });
                        }
                        let expected = if negated { "NULL" } else { "NULL or NOT NULL" };
                        return Err(
                            self.err(self.pos, format!("expected {expected} after IS, found {}", self.found(self.pos)))
                        );
                    }
                    _ => return Err(self.op_expected(start)),
                };
                (op, word.len())
            }
            _ => return Err(self.op_expected(start)),
        };
        self.pos += len;
        Ok(op)
    }

    fn op_expected(&self, pos: usize) -> ParseError {
        self.err(pos, format!("expected a comparison operator ({OPERATORS}), found {}", self.found(pos)))
    }

    /// `'(' string (',' string)* ')'` after IN / NOT IN.
    fn parse_list(&mut self, op: Op) -> Result<Value, ParseError> {
        self.skip_ws();
        if self.peek() != Some('(') {
            return Err(self.err(
                self.pos,
                format!(
                    "expected a parenthesised list of quoted strings after {}, e.g. ('a', 'b'), \
                     found {}",
                    op.as_str(),
                    self.found(self.pos)
                ),
            ));
        }
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                Some('\'' | '"') => items.push(self.read_quoted("string")?),
                Some(')') if items.is_empty() => {
                    return Err(self.err(self.pos, format!("the list after {} cannot be empty", op.as_str())))
                }
                _ => {
                    return Err(self.err(
                        self.pos,
                        format!("expected a quoted string in the {} list, found {}", op.as_str(), self.found(self.pos)),
                    ))
                }
            }
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(')') => {
                    self.pos += 1;
                    return Ok(Value::List(items));
                }
                _ => {
                    return Err(self.err(
                        self.pos,
                        format!("expected ',' or ')' in the {} list, found {}", op.as_str(), self.found(self.pos)),
                    ))
                }
            }
        }
    }

    /// A number or a quoted string.
    fn parse_scalar(&mut self, op: Op) -> Result<Value, ParseError> {
        let start = self.pos;
        match self.peek() {
            Some('\'' | '"') => Ok(Value::String(self.read_quoted("string")?)),
            Some(c) if c.is_ascii_digit() || matches!(c, '-' | '+' | '.') => self.parse_number().map(Value::Number),
            Some(c) if is_word_char(c) => {
                let word = self.word_at(start);
                if word.eq_ignore_ascii_case("null") {
                    let fix = if op == Op::Ne { "IS NOT NULL" } else { "IS NULL" };
                    Err(self.err(start, format!("'{} NULL' is not supported; use {fix}", op.as_str())))
                } else {
                    Err(self.err(
                        start,
                        format!(
                            "expected a value (a number or a quoted string), found {}; quote \
                             strings, e.g. '{word}'",
                            self.found(start)
                        ),
                    ))
                }
            }
            _ => {
                Err(self
                    .err(start, format!("expected a value (a number or a quoted string), found {}", self.found(start))))
            }
        }
    }

    /// `[+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?`, not followed by a word
    /// character or '.'.
    fn parse_number(&mut self) -> Result<f64, ParseError> {
        let start = self.pos;
        let bytes = self.src.as_bytes();
        let digits = |mut i: usize| {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            i
        };
        let mut i = start;
        if matches!(bytes[i], b'+' | b'-') {
            i += 1;
        }
        let int_end = digits(i);
        let mut mantissa_digits = int_end - i;
        i = int_end;
        if i < bytes.len() && bytes[i] == b'.' {
            let frac_end = digits(i + 1);
            mantissa_digits += frac_end - (i + 1);
            i = frac_end;
        }
        let mut valid = mantissa_digits > 0;
        if valid && i < bytes.len() && matches!(bytes[i], b'e' | b'E') {
            let mut j = i + 1;
            if j < bytes.len() && matches!(bytes[j], b'+' | b'-') {
                j += 1;
            }
            let exp_end = digits(j);
            if exp_end == j {
                valid = false;
            }
            i = exp_end;
        }
        if let Some(c) = self.peek_at(i) {
            if is_word_char(c) || c == '.' {
                valid = false;
            }
        }
        if !valid {
            // Quote the whole malformed token.
            let rest = &self.src[start..];
            let end = rest
                .char_indices()
                .skip(1)
                .find(|&(_, c)| !(is_key_char(c) || c == '+'))
                .map_or(rest.len(), |(k, _)| k);
            let text: String = rest[..end].chars().take(SNIPPET_CHARS).collect();
            return Err(self.err(start, format!("invalid number '{text}'")));
        }
        let text = &self.src[start..i];
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => {
                self.pos = i;
                Ok(v)
            }
            _ => Err(self.err(start, format!("number out of range: {text}"))),
        }
    }
}

fn push_flat(out: &mut Vec<Expr>, e: Expr, and: bool) {
    match (e, and) {
        (Expr::And(v), true) => out.extend(v),
        (Expr::Or(v), false) => out.extend(v),
        (e, _) => out.push(e),
    }
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn op_error(kind: Kind<'_>, op: Op) -> String {
    let allowed = list_ops(kind.allowed_ops());
    let why = match (kind, op) {
        (_, Op::IsNull | Op::IsNotNull) => {
            format!("{} is only supported for metrics, params and tags", op.as_str())
        }
        (Kind::Metric, _) => "metrics are numbers".to_string(),
        (Kind::Param, _) => "MLflow compares params as strings".to_string(),
        (Kind::Tag, _) => "MLflow compares tags as strings".to_string(),
        (Kind::Dataset, _) => "dataset fields are strings".to_string(),
        (Kind::Attr(_, AttrKind::Number), _) => "it holds a number".to_string(),
        (Kind::Attr(_, AttrKind::String), _) => "it holds a string".to_string(),
    };
    format!("{} is not supported for {} ({why}); use {allowed}", op.as_str(), kind.describe())
}
