//! Index and query patterns, as plan rules and lints of the
//! SQL text: partial indexes, GIN indexes for jsonb, correlated subqueries a window
//! function could replace, heavy aggregates a materialized view could hold, range
//! filters on a timestamp of a large table (partitioning by month), and lints of the
//! statement's text (`SELECT *`, `count(*) > 0`).
//!
//! The plan rules read the node's `Filter` text, split at its top-level `AND`s; every
//! identifier and literal in a suggestion is re-quoted from the parsed value
//! ([`quote_ident`], [`quote_literal`]), never copied from the filter text.
//!
//! A large `OFFSET` is the plan rule `large_offset`'s job (it measures the rows the
//! Limit discards), so the text lints leave it out; an expression index such as
//! `lower(name)` comes from `indexable_seq_scan`.

use serde::Serialize;

use super::filter::{self, IndexKey, quote_ident, quote_literal};
use super::rules::{Finding, PlanContext, PlanRule, Severity, fmt_num, table_sql};
use super::{NodeKind, PlanNode};

/// Rows a scan reads per loop: returned plus removed by its filter.
fn rows_read(node: &PlanNode) -> Option<f64> {
    Some(node.actual_rows? + node.rows_removed_by_filter.unwrap_or(0.0))
}

/// The rows a sequential scan read (`None` for any other node).
fn seq_scan_rows(node: &PlanNode) -> Option<f64> {
    if node.kind() != NodeKind::SeqScan {
        return None;
    }
    rows_read(node)
}

/// Removes one pair of parentheses wrapping the whole text, if there is one.
fn strip_outer(s: &str) -> &str {
    let t = s.trim();
    if !(t.starts_with('(') && t.ends_with(')')) {
        return t;
    }
    // The first '(' must close at the very end, else "(a) AND (b)" would lose its ends.
    let mut depth = 0i32;
    let mut in_str = false;
    for (i, c) in t.char_indices() {
        match c {
            '\'' => in_str = !in_str,
            '(' if !in_str => depth += 1,
            ')' if !in_str => {
                depth -= 1;
                if depth == 0 && i != t.len() - 1 {
                    return t;
                }
            }
            _ => {}
        }
    }
    &t[1..t.len() - 1]
}

/// The filter's top-level `AND` conjuncts, each without its outer parentheses. A
/// filter with a top-level `OR` is one conjunct (and matches no pattern below).
pub(crate) fn conjuncts(filter: &str) -> Vec<String> {
    let body = strip_outer(filter);
    let mut out = Vec::new();
    let (mut depth, mut in_str, mut start) = (0i32, false, 0usize);
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => in_str = !in_str,
            b'(' if !in_str => depth += 1,
            b')' if !in_str => depth -= 1,
            b' ' if !in_str && depth == 0 && body[i..].starts_with(" AND ") => {
                out.push(strip_outer(&body[start..i]).to_string());
                i += 5;
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(strip_outer(&body[start..]).to_string());
    out
}

/// A column reference as EXPLAIN prints it (`name`, `"Na""me"`, `alias.name`), read
/// by the index-key parser so quoting rules live in one place; the alias is dropped.
fn column(s: &str) -> Option<String> {
    match filter::index_keys(&format!("({} = 0)", s.trim()))?.as_slice() {
        [IndexKey::Column { column }] => Some(column.clone()),
        _ => None,
    }
}

/// `'text'::type` -> (text with quotes undoubled, type).
fn literal(s: &str) -> Option<(String, &str)> {
    let s = s.trim();
    let rest = s.strip_prefix('\'')?;
    let mut value = String::new();
    let mut chars = rest.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if chars.peek().map(|&(_, n)| n) == Some('\'') {
                value.push('\'');
                chars.next();
                continue;
            }
            let ty = rest[i + 1..].strip_prefix("::")?;
            return Some((value, ty));
        }
        value.push(c);
    }
    None
}

/// `col op rhs` split at the first top-level ` op ` from `ops`.
fn binary<'a>(c: &'a str, ops: &[&'static str]) -> Option<(&'a str, &'static str, &'a str)> {
    let mut in_str = false;
    let mut depth = 0i32;
    for (i, ch) in c.char_indices() {
        match ch {
            '\'' => in_str = !in_str,
            '(' if !in_str => depth += 1,
            ')' if !in_str => depth -= 1,
            ' ' if !in_str && depth == 0 => {
                for op in ops {
                    let pat = format!(" {op} ");
                    if c[i..].starts_with(&pat) {
                        return Some((&c[..i], op, &c[i + pat.len()..]));
                    }
                }
            }
            _ => {}
        }
    }
    None
}

/// `col = 'text'::text` (or `character varying`): the column and the constant.
fn text_equality(c: &str) -> Option<(String, String)> {
    let (l, _, r) = binary(c, &["="])?;
    let col = column(l)?;
    let (value, ty) = literal(r)?;
    matches!(ty, "text" | "character varying" | "bpchar").then_some((col, value))
}

/// `col @> '...'::jsonb` or `col ? / ?| / ?& ...`: the column and whether the operator
/// is `@>` (which `jsonb_path_ops` serves).
fn jsonb_operator(c: &str) -> Option<(String, bool)> {
    let (l, op, _) = binary(c, &["@>", "?|", "?&", "?"])?;
    Some((column(l)?, op == "@>"))
}

/// `col <op> '...'::timestamp...|date`: the column and the literal.
fn temporal_range(c: &str) -> Option<(String, String)> {
    let (l, _, r) = binary(c, &[">=", "<=", ">", "<"])?;
    let col = column(l)?;
    let (value, ty) = literal(r)?;
    (ty.starts_with("timestamp") || ty == "date").then_some((col, value))
}

/// `CREATE INDEX CONCURRENTLY ... WHERE col = 'constant'` for a Seq Scan whose filter
/// ANDs an equality on a text constant with other indexable predicates: the index
/// holds only the rows of that constant, smaller than a multi-column index. Worth it
/// when the constant is fixed in the query text (a status, a type), not a parameter.
#[derive(Debug, Clone, Copy)]
pub struct PartialIndex;

impl PlanRule for PartialIndex {
    fn id(&self) -> &'static str {
        "partial_index"
    }
    fn check(&self, node: &PlanNode, ctx: &PlanContext<'_>) -> Option<Finding> {
        let read = seq_scan_rows(node).filter(|&r| r > ctx.thresholds.pattern_min_rows)?;
        let parts = conjuncts(node.filter.as_deref()?);
        let (at, (col, value)) = parts
            .iter()
            .enumerate()
            .find_map(|(i, c)| text_equality(c).map(|e| (i, e)))?;
        let mut keys = Vec::new();
        for (i, c) in parts.iter().enumerate() {
            if i != at {
                keys.extend(filter::index_keys(&format!("({c})"))?);
            }
        }
        if keys.is_empty() {
            return None;
        }
        let table = table_sql(node)?;
        let cols: Vec<String> = keys.iter().map(|k| k.to_sql()).collect();
        let sql = format!(
            "CREATE INDEX CONCURRENTLY ON {table} ({}) WHERE {} = {};",
            cols.join(", "),
            quote_ident(&col),
            quote_literal(&value)
        );
        Some(ctx.finding(
            self.id(),
            node,
            Severity::Info,
            read,
            ctx.thresholds.pattern_min_rows,
            format!(
                "Seq Scan on {} reads {} rows for a filter fixing {col} to a constant",
                node.relation_name.as_deref().unwrap_or("?"),
                fmt_num(read)
            ),
            format!(
                "if the query always uses this constant, a partial index holds only its rows: \
                 {sql}"
            ),
        ))
    }
}

/// A jsonb containment (`@>`) or key-existence (`?`, `?|`, `?&`) filter on a Seq Scan
/// of a large table: a GIN index serves it; `jsonb_path_ops` is smaller and faster
/// but serves `@>` only.
#[derive(Debug, Clone, Copy)]
pub struct GinIndex;

impl PlanRule for GinIndex {
    fn id(&self) -> &'static str {
        "gin_index"
    }
    fn check(&self, node: &PlanNode, ctx: &PlanContext<'_>) -> Option<Finding> {
        let read = seq_scan_rows(node).filter(|&r| r > ctx.thresholds.pattern_min_rows)?;
        let ops: Vec<(String, bool)> = conjuncts(node.filter.as_deref()?)
            .iter()
            .filter_map(|c| jsonb_operator(c))
            .collect();
        let (col, _) = ops.first()?;
        let only_contains = ops.iter().filter(|(c, _)| c == col).all(|(_, p)| *p);
        let table = table_sql(node)?;
        let opclass = if only_contains { " jsonb_path_ops" } else { "" };
        let sql = format!(
            "CREATE INDEX CONCURRENTLY ON {table} USING gin ({}{opclass});",
            quote_ident(col)
        );
        Some(ctx.finding(
            self.id(),
            node,
            Severity::Warning,
            read,
            ctx.thresholds.pattern_min_rows,
            format!(
                "Seq Scan on {} reads {} rows for a jsonb {} filter on {col}",
                node.relation_name.as_deref().unwrap_or("?"),
                fmt_num(read),
                if only_contains {
                    "containment (@>)"
                } else {
                    "key-existence (?)"
                }
            ),
            if only_contains {
                format!("{sql} (jsonb_path_ops serves @> only; use the default opclass for ?)")
            } else {
                sql
            },
        ))
    }
}

/// A SubPlan run once per outer row (a correlated subquery): a join with `GROUP BY`,
/// or a window function over the outer rows, computes it in one pass.
#[derive(Debug, Clone, Copy)]
pub struct CorrelatedSubplan;

impl PlanRule for CorrelatedSubplan {
    fn id(&self) -> &'static str {
        "correlated_subplan"
    }
    fn check(&self, node: &PlanNode, ctx: &PlanContext<'_>) -> Option<Finding> {
        if node.parent_relationship.as_deref() != Some("SubPlan") {
            return None;
        }
        let loops = node.loops();
        let (sev, t) = ctx.thresholds.subplan_loops.grade(loops)?;
        Some(
            ctx.finding(
                self.id(),
                node,
                sev,
                loops,
                t,
                format!(
                    "{} ({}) runs {} times, once per outer row",
                    node.subplan_name.as_deref().unwrap_or("SubPlan"),
                    node.node_type,
                    fmt_num(loops)
                ),
                "rewrite the correlated subquery as a join with GROUP BY, or compute it for all \
             rows at once with a window function (e.g. max(amount) OVER (PARTITION BY \
             customer_id)); at least index the column it correlates on"
                    .to_string(),
            ),
        )
    }
}

fn has_big_seq_scan(node: &PlanNode, min_rows: f64) -> bool {
    node.children.iter().any(|c| {
        (c.kind() == NodeKind::SeqScan && rows_read(c).is_some_and(|r| r * c.loops() > min_rows))
            || (!c.is_subplan() && has_big_seq_scan(c, min_rows))
    })
}

/// A slow grouped Aggregate over a large sequential scan: when the same aggregate is
/// asked for repeatedly, a materialized view with a unique index on the group keys
/// answers it from the stored result, refreshed without blocking readers.
#[derive(Debug, Clone, Copy)]
pub struct MaterializedView;

impl PlanRule for MaterializedView {
    fn id(&self) -> &'static str {
        "materialized_view"
    }
    fn check(&self, node: &PlanNode, ctx: &PlanContext<'_>) -> Option<Finding> {
        let th = ctx.thresholds;
        // A grouped aggregate only: without a group key there is no unique key for
        // REFRESH ... CONCURRENTLY, and a single filtered count is an index's job.
        if node.kind() != NodeKind::Aggregate || node.group_key.is_empty() {
            return None;
        }
        let ms = node.actual_total_time_ms? * node.loops();
        if ms <= th.matview_min_ms || !has_big_seq_scan(node, th.matview_min_rows) {
            return None;
        }
        Some(ctx.finding(
            self.id(),
            node,
            Severity::Info,
            ms,
            th.matview_min_ms,
            format!(
                "Aggregate grouped by {} takes {ms:.2} ms over a sequential scan of more \
                 than {} rows",
                node.group_key.join(", "),
                fmt_num(th.matview_min_rows)
            ),
            "if this aggregate is run often, store it: CREATE MATERIALIZED VIEW mv AS <query>; \
             CREATE UNIQUE INDEX ON mv (<group keys>); and refresh it on a schedule with \
             REFRESH MATERIALIZED VIEW CONCURRENTLY mv; (CONCURRENTLY needs the unique index \
             and keeps the view readable)"
                .to_string(),
        ))
    }
}

/// `YYYY-MM` of a date or timestamp literal, with the first day of that month and of
/// the next.
fn month_bounds(value: &str) -> Option<(String, String, String)> {
    let y: i32 = value.get(0..4)?.parse().ok()?;
    let m: u32 = value.get(5..7)?.parse().ok()?;
    if value.get(4..5)? != "-" || !(1..=12).contains(&m) {
        return None;
    }
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    Some((
        format!("{y:04}_{m:02}"),
        format!("{y:04}-{m:02}-01"),
        format!("{ny:04}-{nm:02}-01"),
    ))
}

/// A range filter on a timestamp or date column in a Seq Scan of a large table:
/// declarative range partitioning by month lets the planner read only the months
/// asked for, and old months are dropped (or detached) instead of deleted.
#[derive(Debug, Clone, Copy)]
pub struct PartitionByMonth;

impl PlanRule for PartitionByMonth {
    fn id(&self) -> &'static str {
        "partition_by_month"
    }
    fn check(&self, node: &PlanNode, ctx: &PlanContext<'_>) -> Option<Finding> {
        let read = seq_scan_rows(node).filter(|&r| r >= ctx.thresholds.partition_min_rows)?;
        let (col, value) = conjuncts(node.filter.as_deref()?)
            .iter()
            .find_map(|c| temporal_range(c))?;
        let table = node.relation_name.as_deref()?;
        let (suffix, from, to) = month_bounds(&value)
            .unwrap_or_else(|| ("YYYY_MM".into(), "YYYY-MM-01".into(), "YYYY-MM-01".into()));
        let qual = |name: &str| match node.schema.as_deref() {
            Some(s) => format!("{}.{}", quote_ident(s), quote_ident(name)),
            None => quote_ident(name),
        };
        let ddl = format!(
            "CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY \
             RANGE ({}); CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({});",
            qual(&format!("{table}_partitioned")),
            qual(table),
            quote_ident(&col),
            qual(&format!("{table}_{suffix}")),
            qual(&format!("{table}_partitioned")),
            quote_literal(&from),
            quote_literal(&to)
        );
        Some(ctx.finding(
            self.id(),
            node,
            Severity::Info,
            read,
            ctx.thresholds.partition_min_rows,
            format!(
                "Seq Scan on {table} reads {} rows for a range on the timestamp column {col}",
                fmt_num(read)
            ),
            format!(
                "partition the table by month on {col} so a range reads only its months \
                 (primary keys and unique indexes must then include {col}); e.g. {ddl} \
                 then copy the rows and swap the names; an index on {col} also helps"
            ),
        ))
    }
}

/// One finding in a statement's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SqlLint {
    /// The lint's id, e.g. `"select_star"`.
    pub rule: &'static str,
    /// How much it matters.
    pub severity: Severity,
    /// What was found.
    pub message: String,
    /// The suggested change.
    pub suggestion: String,
}

/// Lower-cased words, numbers and operators of `sql`, with comments, string literals
/// and quoted identifiers replaced by placeholders (so nothing inside them matches).
fn sql_tokens(sql: &str) -> Vec<String> {
    let c: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '-' && c.get(i + 1) == Some(&'-') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && c.get(i + 1) == Some(&'*') {
            i += 2;
            while i < c.len() && !(c[i] == '*' && c.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
        } else if ch == '\'' || ch == '"' {
            i += 1;
            while i < c.len() {
                if c[i] == ch {
                    if c.get(i + 1) == Some(&ch) {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
            out.push(if ch == '\'' { "'lit'" } else { "\"ident\"" }.to_string());
        } else if ch.is_alphanumeric() || ch == '_' || ch == '$' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_' || c[i] == '$') {
                i += 1;
            }
            out.push(c[start..i].iter().collect::<String>().to_lowercase());
        } else {
            let two: String = c[i..(i + 2).min(c.len())].iter().collect();
            if [">=", "<=", "<>", "!="].contains(&two.as_str()) {
                out.push(two);
                i += 2;
            } else {
                out.push(ch.to_string());
                i += 1;
            }
        }
    }
    out
}

/// Lints of a statement's text: `select_star` (`SELECT *`: fetch only the columns
/// needed, which also lets an index-only scan serve the query) and
/// `count_for_existence` (`count(*) > 0`, `= 0`, `>= 1`, `< 1`, `<> 0`: counts every
/// matching row to learn whether one exists; `EXISTS` stops at the first).
///
/// ```
/// use cortex_dbtune::plan::lint_sql;
///
/// let lints = lint_sql("SELECT * FROM t WHERE (SELECT count(*) FROM u) > 0");
/// assert_eq!(lints.len(), 2);
/// ```
pub fn lint_sql(sql: &str) -> Vec<SqlLint> {
    let t = sql_tokens(sql);
    let mut out = Vec::new();
    let tok = |i: usize| t.get(i).map(String::as_str);
    let star = (0..t.len()).any(|i| {
        tok(i) == Some("select") && {
            let j = if matches!(tok(i + 1), Some("distinct" | "all")) {
                i + 2
            } else {
                i + 1
            };
            tok(j) == Some("*")
                || (tok(j + 1) == Some(".") && tok(j + 2) == Some("*") && tok(j + 3) != Some(","))
        }
    });
    if star {
        out.push(SqlLint {
            rule: "select_star",
            severity: Severity::Info,
            message: "the statement selects every column (SELECT *)".to_string(),
            suggestion: "select only the columns needed: less data is read and sent, and an \
                         index holding those columns can answer with an index-only scan"
                .to_string(),
        });
    }
    // count(*) or count(1), possibly inside a subquery: `( SELECT count(*) ... ) > 0`
    // is matched at the closing parenthesis of count.
    let existence = (0..t.len()).any(|i| {
        tok(i) == Some("count")
            // `HAVING count(*) > 0` filters groups, it asks no existence question.
            && (i == 0 || tok(i - 1) != Some("having"))
            && tok(i + 1) == Some("(")
            && matches!(tok(i + 2), Some("*" | "1"))
            && tok(i + 3) == Some(")")
            && {
                // Past the count's own parenthesis, and a subquery's, if any.
                let mut j = i + 4;
                let cmp = |x: Option<&str>| matches!(x, Some(">" | "=" | "<>" | "!=" | ">=" | "<"));
                if !cmp(tok(j)) {
                    let mut depth = 0i32;
                    while let Some(x) = tok(j) {
                        match x {
                            "(" => depth += 1,
                            ")" if depth == 0 => {
                                j += 1;
                                break;
                            }
                            ")" => depth -= 1,
                            ";" => break,
                            _ => {}
                        }
                        j += 1;
                    }
                }
                matches!(
                    (tok(j), tok(j + 1)),
                    (Some(">" | "<>" | "!=" | "="), Some("0")) | (Some(">=" | "<"), Some("1"))
                )
            }
    });
    if existence {
        out.push(SqlLint {
            rule: "count_for_existence",
            severity: Severity::Warning,
            message: "the statement counts rows to learn whether any exist (count(*) > 0 or = 0)"
                .to_string(),
            suggestion: "use EXISTS (SELECT 1 FROM ... WHERE ...) or NOT EXISTS: it stops at the \
                         first matching row instead of counting them all"
                .to_string(),
        });
    }
    out
}
