//! Turns a [`Query`] or a search string into SQL, rejecting malformed parameters.

use crate::hash::format_ts;
use crate::schema::EVENT_COLUMNS;
use crate::{LedgerError, Query};
use rusqlite::types::Value;

/// Default number of events returned by a query.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest accepted limit.
pub const MAX_LIMIT: usize = 10_000;

/// Checks a limit and converts it for binding.
pub(crate) fn check_limit(limit: usize) -> Result<i64, LedgerError> {
    if limit == 0 || limit > MAX_LIMIT {
        return Err(LedgerError::InvalidQuery(format!(
            "limit must be between 1 and {MAX_LIMIT}, got {limit}"
        )));
    }
    // Bounded by MAX_LIMIT above.
    Ok(i64::try_from(limit).unwrap_or(MAX_LIMIT as i64))
}

/// Normalises `since` to the stored timestamp format so that string comparison is time order.
pub(crate) fn normalize_since(since: &str) -> Result<String, LedgerError> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(since, &Rfc3339) {
        return Ok(format_ts(t));
    }
    let date_fmt = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(since, &date_fmt) {
        return Ok(format_ts(d.midnight().assume_utc()));
    }
    Err(LedgerError::InvalidQuery(format!(
        "since {since:?} is not a timestamp; use RFC 3339 (2026-01-02T03:04:05Z) or a date (2026-01-02)"
    )))
}

/// Adds `column = value`, or a prefix match when `value` ends with `*`.
fn label_filter(
    column: &str,
    value: &str,
    wh: &mut Vec<String>,
    params: &mut Vec<Value>,
) -> Result<(), LedgerError> {
    let (text, prefix) = match value.strip_suffix('*') {
        Some(p) => (p, true),
        None => (value, false),
    };
    if !prefix && text.is_empty() {
        return Err(LedgerError::InvalidQuery(format!(
            "{column} filter is empty"
        )));
    }
    if prefix && text.is_empty() {
        // "*" alone matches everything.
        return Ok(());
    }
    params.push(Value::Text(text.to_owned()));
    let n = params.len();
    if prefix {
        // The range lower bound lets SQLite use the index; substr() does the exact prefix test.
        wh.push(format!(
            "{column} >= ?{n} AND substr({column}, 1, length(?{n})) = ?{n}"
        ));
    } else {
        wh.push(format!("{column} = ?{n}"));
    }
    Ok(())
}

/// SQL and parameters for a query.
pub(crate) fn build(q: &Query) -> Result<(String, Vec<Value>), LedgerError> {
    let limit = check_limit(q.limit.unwrap_or(DEFAULT_LIMIT))?;
    let mut wh = Vec::new();
    let mut params = Vec::new();
    if let Some(kind) = &q.kind {
        label_filter("type", kind, &mut wh, &mut params)?;
    }
    if let Some(actor) = &q.actor {
        label_filter("actor", actor, &mut wh, &mut params)?;
    }
    if let Some(since) = &q.since {
        params.push(Value::Text(normalize_since(since)?));
        wh.push(format!("ts >= ?{}", params.len()));
    }
    if let Some(after) = q.after_id {
        params.push(Value::Integer(after));
        wh.push(format!("id > ?{}", params.len()));
    }
    if let Some(before) = q.before_id {
        params.push(Value::Integer(before));
        wh.push(format!("id < ?{}", params.len()));
    }
    params.push(Value::Integer(limit));
    let where_sql = if wh.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", wh.join(" AND "))
    };
    let order = if q.descending { "DESC" } else { "ASC" };
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events{where_sql} ORDER BY id {order} LIMIT ?{}",
        params.len()
    );
    Ok((sql, params))
}

/// Most words one search may hold: each is one more scan of the full-text index (a prefix word
/// `a*` one over every indexed word it starts), so the count bounds a search's work.
pub const MAX_SEARCH_TERMS: usize = 16;

/// Longest a search may run in SQLite before it is interrupted (with an error saying so): the
/// words bound how many index scans it makes, this bounds how long they take on a large ledger.
pub const SEARCH_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

/// An FTS5 expression matching every word of `text` literally (quoted), so user input can never
/// be an FTS syntax error; a word ending in `*` becomes a prefix query. At most
/// [`MAX_SEARCH_TERMS`] words.
pub(crate) fn fts_expression(text: &str) -> Result<String, LedgerError> {
    if text.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return Err(LedgerError::InvalidQuery(
            "search text contains a control character (such as NUL); search for words".into(),
        ));
    }
    let terms: Vec<String> = text
        .split_whitespace()
        .filter_map(|word| {
            let (body, prefix) = match word.strip_suffix('*') {
                Some(b) => (b, true),
                None => (word, false),
            };
            if body.is_empty() {
                return None;
            }
            let quoted = format!("\"{}\"", body.replace('"', "\"\""));
            Some(if prefix { format!("{quoted}*") } else { quoted })
        })
        .collect();
    if terms.is_empty() {
        return Err(LedgerError::InvalidQuery("search text has no words".into()));
    }
    if terms.len() > MAX_SEARCH_TERMS {
        return Err(LedgerError::InvalidQuery(format!(
            "search text has {} words; at most {MAX_SEARCH_TERMS} are searched at once",
            terms.len()
        )));
    }
    Ok(terms.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts_expressions_are_quoted() {
        assert_eq!(
            fts_expression("nginx restart").ok().as_deref(),
            Some("\"nginx\" \"restart\"")
        );
        assert_eq!(fts_expression("ngi*").ok().as_deref(), Some("\"ngi\"*"));
        assert_eq!(
            fts_expression("a\"b OR").ok().as_deref(),
            Some("\"a\"\"b\" \"OR\"")
        );
        assert!(fts_expression("  * ").is_err());
        assert!(fts_expression("a\0b").is_err());
        assert!(fts_expression("a\u{7f}").is_err());
        assert!(fts_expression("tab\tand\nnewline").is_ok());
        assert!(fts_expression(&"a* ".repeat(MAX_SEARCH_TERMS)).is_ok());
        assert!(fts_expression(&"a* ".repeat(MAX_SEARCH_TERMS + 1)).is_err());
    }

    #[test]
    fn since_is_normalised() {
        assert_eq!(
            normalize_since("2026-01-02").ok().as_deref(),
            Some("2026-01-02T00:00:00.000Z")
        );
        assert_eq!(
            normalize_since("2026-01-02T03:04:05+01:00").ok().as_deref(),
            Some("2026-01-02T02:04:05.000Z")
        );
        assert_eq!(
            normalize_since("2026-01-02T03:04:05.123Z").ok().as_deref(),
            Some("2026-01-02T03:04:05.123Z")
        );
        assert!(normalize_since("yesterday").is_err());
    }

    #[test]
    fn limits_and_filters() {
        assert!(build(&Query {
            limit: Some(0),
            ..Query::default()
        })
        .is_err());
        assert!(build(&Query {
            limit: Some(10_001),
            ..Query::default()
        })
        .is_err());
        assert!(build(&Query {
            kind: Some(String::new()),
            ..Query::default()
        })
        .is_err());
        let (sql, params) = build(&Query {
            kind: Some("config.*".into()),
            actor: Some("agentd".into()),
            after_id: Some(7),
            descending: true,
            ..Query::default()
        })
        .map_err(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            sql.contains("type >= ?1 AND substr(type, 1, length(?1)) = ?1"),
            "{sql}"
        );
        assert!(
            sql.contains("actor = ?2")
                && sql.contains("id > ?3")
                && sql.ends_with("ORDER BY id DESC LIMIT ?4"),
            "{sql}"
        );
        assert_eq!(params.len(), 4);
    }
}
