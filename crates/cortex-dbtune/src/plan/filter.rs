//! Reading index candidates out of a node's `Filter` text.
//!
//! PostgreSQL deparses every operator expression inside its own parentheses, so the
//! filters worth indexing have a small grammar: `(col = 42)`, `((a = 1) AND (b = 'x'::text))`,
//! `(lower(name) = 'x'::text)`, `((metadata ->> 'status'::text) = 'active'::text)`. This
//! parser reads that subset and answers "not a simple predicate" for anything else, so
//! an index is only suggested for a predicate it understood. Identifiers and literals
//! are re-quoted from the parsed values, never copied from the filter text.

use serde::{Deserialize, Serialize};

/// Quotes an SQL identifier: wraps it in `"` and doubles any `"` inside.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal: wraps it in `'` and doubles any `'` inside
/// (with `standard_conforming_strings`, PostgreSQL's default since 9.1).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// One key of a suggested index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum IndexKey {
    /// A plain column.
    Column {
        /// Column name.
        column: String,
    },
    /// A function of one column, e.g. `lower(name)`.
    Function {
        /// Function name (lowercase identifier).
        function: String,
        /// Column name.
        column: String,
    },
    /// A JSON field, e.g. `metadata ->> 'status'`.
    JsonField {
        /// The json/jsonb column.
        column: String,
        /// `->>` or `->`.
        operator: String,
        /// The key.
        key: String,
    },
}

impl IndexKey {
    /// The column the key reads.
    pub fn column(&self) -> &str {
        match self {
            IndexKey::Column { column }
            | IndexKey::Function { column, .. }
            | IndexKey::JsonField { column, .. } => column,
        }
    }

    /// The key as it goes in `CREATE INDEX ... ( <here> )`, fully quoted.
    pub fn to_sql(&self) -> String {
        match self {
            IndexKey::Column { column } => quote_ident(column),
            // The function name was checked to be a plain lowercase identifier.
            IndexKey::Function { function, column } => {
                format!("({function}({}))", quote_ident(column))
            }
            IndexKey::JsonField {
                column,
                operator,
                key,
            } => format!(
                "(({} {operator} {}))",
                quote_ident(column),
                quote_literal(key)
            ),
        }
    }
}

/// An index that would serve a scan's filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexCandidate {
    /// Schema, when EXPLAIN printed it (VERBOSE).
    pub schema: Option<String>,
    /// Table.
    pub table: String,
    /// Keys: equality predicates first, then at most one range predicate.
    pub keys: Vec<IndexKey>,
}

impl IndexCandidate {
    /// The columns the keys read, in key order.
    pub fn columns(&self) -> Vec<&str> {
        self.keys.iter().map(IndexKey::column).collect()
    }

    /// `CREATE INDEX CONCURRENTLY ON "schema"."table" (keys)`, every identifier quoted.
    pub fn create_sql(&self) -> String {
        let table = match &self.schema {
            Some(s) => format!("{}.{}", quote_ident(s), quote_ident(&self.table)),
            None => quote_ident(&self.table),
        };
        let keys: Vec<String> = self.keys.iter().map(IndexKey::to_sql).collect();
        format!("CREATE INDEX CONCURRENTLY ON {table} ({})", keys.join(", "))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Comma,
    Dot,
    Cast,
    LBracket,
    RBracket,
    Str(String),
    Num(String),
    Param,
    Ident(String),
    Quoted(String),
    Op(String),
}

fn tokenize(s: &str) -> Option<Vec<Tok>> {
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '.' => {
                out.push(Tok::Dot);
                i += 1
            }
            '[' => {
                out.push(Tok::LBracket);
                i += 1
            }
            ']' => {
                out.push(Tok::RBracket);
                i += 1
            }
            ':' if b.get(i + 1) == Some(&':') => {
                out.push(Tok::Cast);
                i += 2
            }
            '\'' | '"' => {
                let quote = c;
                let mut v = String::new();
                i += 1;
                loop {
                    let ch = *b.get(i)?;
                    if ch == quote {
                        if b.get(i + 1) == Some(&quote) {
                            v.push(quote);
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    v.push(ch);
                    i += 1;
                }
                out.push(if quote == '\'' {
                    Tok::Str(v)
                } else {
                    Tok::Quoted(v)
                });
            }
            '$' => {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1
                }
                out.push(Tok::Param);
            }
            c if c.is_ascii_digit() => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == '.') {
                    i += 1
                }
                out.push(Tok::Num(b[start..i].iter().collect()));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_' || b[i] == '$') {
                    i += 1
                }
                out.push(Tok::Ident(b[start..i].iter().collect()));
            }
            c if "+-*/<>=~!@#%^&|`?".contains(c) => {
                let start = i;
                while i < b.len() && "+-*/<>=~!@#%^&|`?".contains(b[i]) {
                    i += 1
                }
                out.push(Tok::Op(b[start..i].iter().collect()));
            }
            _ => return None,
        }
    }
    Some(out)
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    /// A constant for the scan: literal (with its text, for JSON keys), number,
    /// parameter or an outer reference.
    Const(Option<String>),
    /// An unqualified (own) column.
    Column(String),
    Func(String, Vec<Expr>),
    Bin(Box<Expr>, String, Box<Expr>),
    And(Vec<Expr>),
    Other,
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case(kw))
    }

    /// expr := term { (op | AND | OR | other keyword) term }
    fn expr(&mut self) -> Option<Expr> {
        let mut terms = vec![self.term()?];
        let mut ops: Vec<String> = Vec::new();
        loop {
            match self.peek() {
                Some(Tok::Op(o)) => {
                    let o = o.clone();
                    self.pos += 1;
                    ops.push(o);
                }
                Some(Tok::Ident(w)) => {
                    let w = w.to_ascii_uppercase();
                    self.pos += 1;
                    ops.push(w);
                }
                _ => break,
            }
            terms.push(self.term()?);
        }
        Some(if ops.is_empty() {
            terms.swap_remove(0)
        } else if ops.iter().all(|o| o == "AND") {
            Expr::And(terms)
        } else if ops.len() == 1 {
            let rhs = terms.pop()?;
            let lhs = terms.pop()?;
            Expr::Bin(Box::new(lhs), ops.swap_remove(0), Box::new(rhs))
        } else {
            Expr::Other
        })
    }

    fn term(&mut self) -> Option<Expr> {
        let e = match self.next()? {
            Tok::LParen => {
                let e = self.expr()?;
                if self.next()? != Tok::RParen {
                    return None;
                }
                e
            }
            Tok::Str(v) => Expr::Const(Some(v)),
            Tok::Num(_) | Tok::Param => Expr::Const(None),
            Tok::Op(o) if o == "-" => {
                // A negative number: `- 1`.
                match self.term()? {
                    Expr::Const(_) => Expr::Const(None),
                    _ => Expr::Other,
                }
            }
            Tok::Ident(w)
                if ["NOT", "AND", "OR", "IS"].contains(&w.to_ascii_uppercase().as_str()) =>
            {
                return None;
            }
            t @ (Tok::Ident(_) | Tok::Quoted(_)) => {
                let first = match t {
                    Tok::Ident(w) | Tok::Quoted(w) => w,
                    _ => return None,
                };
                if self.peek() == Some(&Tok::Dot) {
                    // Qualified: a column of another relation, i.e. a parameter while
                    // this scan runs (correlated subquery, nested-loop inner side).
                    self.pos += 1;
                    match self.next()? {
                        Tok::Ident(_) | Tok::Quoted(_) => Expr::Const(None),
                        _ => return None,
                    }
                } else if self.peek() == Some(&Tok::LParen) {
                    self.pos += 1;
                    let mut args = Vec::new();
                    if self.peek() == Some(&Tok::RParen) {
                        self.pos += 1;
                    } else {
                        loop {
                            args.push(self.expr()?);
                            match self.next()? {
                                Tok::Comma => continue,
                                Tok::RParen => break,
                                _ => return None,
                            }
                        }
                    }
                    Expr::Func(first, args)
                } else {
                    Expr::Column(first)
                }
            }
            _ => return None,
        };
        self.casts(e)
    }

    /// Skips `::type` suffixes (type names may be several words, `[]`, `(n)`); a cast
    /// keeps what the expression is (a cast column is still that column).
    fn casts(&mut self, e: Expr) -> Option<Expr> {
        while self.peek() == Some(&Tok::Cast) {
            self.pos += 1;
            let mut words = 0;
            while let Some(Tok::Ident(_) | Tok::Quoted(_)) = self.peek() {
                if ["AND", "OR", "IS", "NOT"].iter().any(|k| self.is_kw(k)) {
                    break;
                }
                self.pos += 1;
                words += 1;
                if self.peek() == Some(&Tok::Dot) {
                    self.pos += 1;
                }
            }
            if words == 0 {
                return None;
            }
            if self.peek() == Some(&Tok::LParen) {
                while self.next()? != Tok::RParen {}
            }
            while self.peek() == Some(&Tok::LBracket) {
                self.pos += 1;
                if self.next()? != Tok::RBracket {
                    return None;
                }
            }
        }
        Some(e)
    }
}

fn parse(filter: &str) -> Option<Expr> {
    let mut p = Parser {
        toks: tokenize(filter)?,
        pos: 0,
    };
    let e = p.expr()?;
    (p.pos == p.toks.len()).then_some(e)
}

fn is_plain_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn key_of(e: &Expr) -> Option<IndexKey> {
    match e {
        Expr::Column(c) => Some(IndexKey::Column { column: c.clone() }),
        Expr::Func(f, args) if args.len() == 1 && is_plain_ident(f) => match &args[0] {
            Expr::Column(c) => Some(IndexKey::Function {
                function: f.clone(),
                column: c.clone(),
            }),
            _ => None,
        },
        Expr::Bin(l, op, r) if op == "->>" || op == "->" => match (&**l, &**r) {
            (Expr::Column(c), Expr::Const(Some(k))) => Some(IndexKey::JsonField {
                column: c.clone(),
                operator: op.clone(),
                key: k.clone(),
            }),
            _ => None,
        },
        _ => None,
    }
}

/// How a predicate constrains its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pred {
    Eq,
    Range,
}

fn predicate(e: &Expr) -> Option<(IndexKey, Pred)> {
    let Expr::Bin(l, op, r) = e else {
        return None;
    };
    let kind = match op.as_str() {
        "=" => Pred::Eq,
        "<" | ">" | "<=" | ">=" => Pred::Range,
        _ => return None,
    };
    let k = match (&**l, &**r) {
        (k, Expr::Const(_)) | (Expr::Const(_), k) => k,
        _ => return None,
    };
    let key = key_of(k)?;
    Some((key, kind))
}

/// The index keys for a filter, or `None` when it is not a simple predicate
/// (`key op const`, or an AND of them; ORs, NOT, IS NULL and the like are not).
/// Equalities come first, then at most one range key (a btree can use only one).
pub(crate) fn index_keys(filter: &str) -> Option<Vec<IndexKey>> {
    let e = parse(filter)?;
    let parts = match e {
        Expr::And(parts) => parts,
        other => vec![other],
    };
    let mut eq = Vec::new();
    let mut range = Vec::new();
    for p in &parts {
        let (key, kind) = predicate(p)?;
        let list = if kind == Pred::Eq {
            &mut eq
        } else {
            &mut range
        };
        if !list.contains(&key) {
            list.push(key);
        }
    }
    let mut keys: Vec<IndexKey> = eq;
    if let Some(r) = range.into_iter().find(|r| !keys.contains(r)) {
        keys.push(r);
    }
    (!keys.is_empty()).then_some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(c: &str) -> IndexKey {
        IndexKey::Column {
            column: c.to_string(),
        }
    }

    #[test]
    fn simple_equality() {
        assert_eq!(
            index_keys("(customer_id = 42)"),
            Some(vec![col("customer_id")])
        );
        assert_eq!(
            index_keys("(customer_id = $1)"),
            Some(vec![col("customer_id")])
        );
        assert_eq!(
            index_keys("(42 = customer_id)"),
            Some(vec![col("customer_id")])
        );
        assert_eq!(
            index_keys("(customer_id = c.id)"),
            Some(vec![col("customer_id")])
        );
        assert_eq!(
            index_keys("(amount > '998'::numeric)"),
            Some(vec![col("amount")])
        );
        assert_eq!(
            index_keys("((name)::text = 'x'::character varying)"),
            Some(vec![col("name")])
        );
        assert_eq!(
            index_keys("(created_at >= '2024-01-01 00:00:00'::timestamp without time zone)"),
            Some(vec![col("created_at")])
        );
        assert_eq!(
            index_keys("(\"Odd \"\"Col\" = 1)"),
            Some(vec![col("Odd \"Col")])
        );
    }

    #[test]
    fn multi_column_and_ranges() {
        assert_eq!(
            index_keys("((customer_id = 42) AND (status = 'paid'::text))"),
            Some(vec![col("customer_id"), col("status")])
        );
        // Equalities first, one range last.
        assert_eq!(
            index_keys("((amount > 5) AND (status = 'paid'::text) AND (id < 3))"),
            Some(vec![col("status"), col("amount")])
        );
    }

    #[test]
    fn expressions() {
        assert_eq!(
            index_keys("(lower(name) = 'name42'::text)"),
            Some(vec![IndexKey::Function {
                function: "lower".into(),
                column: "name".into()
            }])
        );
        let k = index_keys("((metadata ->> 'status'::text) = 'archived'::text)").unwrap();
        assert_eq!(
            k,
            vec![IndexKey::JsonField {
                column: "metadata".into(),
                operator: "->>".into(),
                key: "status".into()
            }]
        );
        assert_eq!(k[0].to_sql(), "((\"metadata\" ->> 'status'))");
    }

    #[test]
    fn not_simple() {
        for f in [
            "((a = 1) OR (b = 2))",
            "(a IS NULL)",
            "(NOT a)",
            "(a <> 1)",
            "(a = b)",
            "(name ~~ '%x%'::text)",
            "((a + 1) = 2)",
            "",
            "(a = 1",
        ] {
            assert_eq!(index_keys(f), None, "{f}");
        }
    }

    #[test]
    fn create_sql_quotes_everything() {
        let c = IndexCandidate {
            schema: Some("my\"schema".into()),
            table: "Orders".into(),
            keys: vec![
                col("customer_id"),
                IndexKey::JsonField {
                    column: "meta".into(),
                    operator: "->>".into(),
                    key: "it's".into(),
                },
            ],
        };
        assert_eq!(
            c.create_sql(),
            "CREATE INDEX CONCURRENTLY ON \"my\"\"schema\".\"Orders\" (\"customer_id\", ((\"meta\" ->> 'it''s')))"
        );
        assert_eq!(c.columns(), ["customer_id", "meta"]);
    }
}
