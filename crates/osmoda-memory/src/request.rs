//! Request and response shapes of the memory API, and their validation.

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::{MemoryError, Result};

/// Longest `summary` in characters.
pub const MAX_SUMMARY: usize = 200;
/// Longest `detail` (or ingested text) in bytes.
pub const MAX_DETAIL: usize = 16 * 1024;
/// Longest query in characters.
pub const MAX_QUERY: usize = 2000;
/// Most results one recall returns.
pub const MAX_RESULTS: usize = 50;

fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(MemoryError::Invalid(msg.into()))
}

/// `POST /memory/store`: one note appended to the ground truth.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreRequest {
    /// One line, 1–200 characters; becomes the section heading.
    pub summary: String,
    /// Body text, at most 16 KiB.
    #[serde(default)]
    pub detail: String,
    /// A word such as `incident`, `config`, `preference` (letters, digits, `._-`, ≤ 40).
    #[serde(default)]
    pub category: Option<String>,
    /// Up to 16 tags of the same alphabet.
    #[serde(default)]
    pub tags: Vec<String>,
    /// `true`: append to `MEMORY.md` (durable facts); default: today's daily note.
    #[serde(default)]
    pub durable: bool,
}

/// Where a stored note went.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StoreReceipt {
    /// Note file relative to the memory dir.
    pub path: String,
    /// The note's time (RFC 3339, UTC).
    pub at: String,
}

/// `POST /memory/ingest`: `{ "event": ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestRequest {
    /// The event or conversation snippet.
    pub event: IngestEvent,
}

/// A ledger-style event or a conversation snippet. Ledger rows may be passed as they are
/// (`id`, `hash`, `prev_hash` are accepted and not stored).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestEvent {
    /// Event type, e.g. `service.restart` or `conversation` (one line, ≤ 100 characters).
    #[serde(rename = "type")]
    pub kind: String,
    /// Where it came from: `ledger`, `conversation`, `routine`, ... (default `event`).
    #[serde(default)]
    pub source: Option<String>,
    /// When: RFC 3339 or Unix seconds; default now.
    #[serde(default)]
    pub ts: Option<serde_json::Value>,
    /// Who caused it.
    #[serde(default)]
    pub actor: Option<String>,
    /// Host name; default this machine's.
    #[serde(default)]
    pub host: Option<String>,
    /// systemd unit concerned.
    #[serde(default)]
    pub unit: Option<String>,
    /// Free text (a conversation snippet, a log excerpt).
    #[serde(default)]
    pub text: Option<String>,
    /// Structured payload (a ledger event's); rendered as `key: value` lines.
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
    /// Ledger row id (ignored).
    #[serde(default)]
    pub id: Option<serde_json::Value>,
    /// Ledger row hash (ignored).
    #[serde(default)]
    pub hash: Option<serde_json::Value>,
    /// Ledger previous hash (ignored).
    #[serde(default)]
    pub prev_hash: Option<serde_json::Value>,
}

/// `POST /memory/recall`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecallRequest {
    /// What to look for (1–2000 characters).
    pub query: String,
    /// Most results (1–50, default 8); fewer come back when the token budget is spent or
    /// nothing else is relevant.
    #[serde(default)]
    pub max_results: Option<usize>,
    /// `all` (default), `<N>h`, `<N>d`, `<N>w`, or `SINCE..UNTIL` with RFC 3339 times
    /// (either side may be empty).
    #[serde(default)]
    pub timeframe: Option<String>,
}

/// One recalled chunk.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecallHit {
    /// Note file relative to the memory dir.
    pub path: String,
    /// First line in the file (1-based).
    pub line_start: u32,
    /// Last line (inclusive).
    pub line_end: u32,
    /// Section heading.
    pub heading: String,
    /// The chunk's text (cut to the token budget for a single oversized hit).
    pub text: String,
    /// The note's time (RFC 3339).
    pub at: String,
    /// RRF score.
    pub score: f64,
    /// Cosine similarity to the query (absent in keyword mode).
    pub similarity: Option<f32>,
    /// Voted for by BM25: holds at least half of the query's words (any one of them in
    /// keyword mode).
    pub keyword_match: bool,
}

/// Result of a recall.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecallResponse {
    /// Best first.
    pub results: Vec<RecallHit>,
    /// `hybrid`, or `keyword` when no model is available (see `warning`).
    pub mode: String,
    /// Estimated tokens of the results as injected: each hit's `[path:line, at]` line and
    /// text (ASCII characters / 4 and one per other character; see [`crate::budget`]).
    pub tokens: usize,
    /// Relevant results left out because of `max_results` or the token budget.
    pub omitted: usize,
    /// Why recall fell back to keywords, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// A closed time range in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeframe {
    /// Earliest note time included.
    pub since: i64,
    /// Latest note time included.
    pub until: i64,
}

impl Timeframe {
    /// Parse a `timeframe` value relative to `now`.
    ///
    /// # Errors
    /// [`MemoryError::Invalid`] naming the accepted forms.
    pub fn parse(s: Option<&str>, now: OffsetDateTime) -> Result<Self> {
        let all = Timeframe {
            since: i64::MIN,
            until: i64::MAX,
        };
        let Some(s) = s.map(str::trim) else {
            return Ok(all);
        };
        let help = "timeframe must be \"all\", \"<N>h\", \"<N>d\", \"<N>w\" or \"SINCE..UNTIL\" with RFC 3339 times";
        if s == "all" {
            return Ok(all);
        }
        if let Some((a, b)) = s.split_once("..") {
            let t = |v: &str, d: i64| -> Result<i64> {
                if v.is_empty() {
                    return Ok(d);
                }
                OffsetDateTime::parse(v, &Rfc3339)
                    .map(|t| t.unix_timestamp())
                    .or_else(|e| invalid(format!("{help}; {v:?}: {e}")))
            };
            let tf = Timeframe {
                since: t(a, i64::MIN)?,
                until: t(b, i64::MAX)?,
            };
            if tf.since > tf.until {
                return invalid(format!("timeframe {s:?} ends before it starts"));
            }
            return Ok(tf);
        }
        // Split at the last character, not the last byte: a value ending in a multi-byte
        // character ("5日") is a bad timeframe, never a slice inside that character.
        let (num, unit) = s
            .char_indices()
            .last()
            .map_or(("", ""), |(i, _)| s.split_at(i));
        let secs = match unit {
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => return invalid(format!("{help}; got {s:?}")),
        };
        let n: i64 = match num.parse() {
            Ok(n) if n > 0 && n <= 100_000 => n,
            _ => return invalid(format!("{help}; got {s:?} (N is 1..100000)")),
        };
        Ok(Timeframe {
            since: now.unix_timestamp() - n * secs,
            until: i64::MAX,
        })
    }
}

fn word_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

impl StoreRequest {
    /// Check every field.
    ///
    /// # Errors
    /// [`MemoryError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let s = self.summary.trim();
        if s.is_empty() {
            return invalid("summary is empty; give a one-line summary of the note");
        }
        if s.chars().count() > MAX_SUMMARY || s.contains(['\n', '\r']) {
            return invalid(format!("summary must be one line of at most {MAX_SUMMARY} characters; put the rest in detail"));
        }
        if self.detail.len() > MAX_DETAIL {
            return invalid(format!(
                "detail is {} bytes; at most {MAX_DETAIL} (split it into several notes)",
                self.detail.len()
            ));
        }
        if let Some(c) = &self.category {
            if !word_ok(c) {
                return invalid(format!(
                    "category {c:?}: 1-40 of letters, digits, '.', '_', '-'"
                ));
            }
        }
        if self.tags.len() > 16 {
            return invalid("at most 16 tags");
        }
        if let Some(t) = self.tags.iter().find(|t| !word_ok(t)) {
            return invalid(format!("tag {t:?}: 1-40 of letters, digits, '.', '_', '-'"));
        }
        Ok(())
    }
}

impl RecallRequest {
    /// Check the query and the result count.
    ///
    /// # Errors
    /// [`MemoryError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<usize> {
        if self.query.trim().is_empty() {
            return invalid("query is empty; say what to recall");
        }
        if self.query.chars().count() > MAX_QUERY {
            return invalid(format!("query is longer than {MAX_QUERY} characters"));
        }
        match self.max_results {
            None => Ok(8),
            Some(n) if (1..=MAX_RESULTS).contains(&n) => Ok(n),
            Some(n) => invalid(format!("max_results {n}: must be 1..{MAX_RESULTS}")),
        }
    }
}

/// Time of an ingested event: RFC 3339 string or Unix seconds, as UTC (the note it goes to is
/// that UTC day's, like its `at:` line and every other note), between 1970-01-01 and a day
/// from `now`: an event from year 0 or 9999 is a mistake, and a future one would stay in
/// every "last N days" recall until then.
pub(crate) fn event_time(
    ts: Option<&serde_json::Value>,
    now: OffsetDateTime,
) -> Result<OffsetDateTime> {
    let t = given_time(ts, now)?;
    let latest = now.unix_timestamp() + 86_400;
    if !(0..=latest).contains(&t.unix_timestamp()) {
        return invalid(format!(
            "event.ts {} lies outside 1970-01-01T00:00:00Z..{} (a day from now)",
            t.format(&Rfc3339)
                .unwrap_or_else(|_| t.unix_timestamp().to_string()),
            rfc3339(latest)
        ));
    }
    OffsetDateTime::from_unix_timestamp(t.unix_timestamp())
        .or_else(|e| invalid(format!("event.ts: {e}")))
}

fn given_time(ts: Option<&serde_json::Value>, now: OffsetDateTime) -> Result<OffsetDateTime> {
    match ts {
        None | Some(serde_json::Value::Null) => Ok(now),
        Some(serde_json::Value::String(s)) => OffsetDateTime::parse(s, &Rfc3339)
            .or_else(|e| invalid(format!("event.ts {s:?} is not RFC 3339: {e}"))),
        Some(serde_json::Value::Number(n)) => n
            .as_i64()
            .and_then(|n| OffsetDateTime::from_unix_timestamp(n).ok())
            .map_or_else(
                || invalid(format!("event.ts {n} is not a Unix time in seconds")),
                Ok,
            ),
        Some(other) => invalid(format!(
            "event.ts must be RFC 3339 or Unix seconds, got {other}"
        )),
    }
}

/// RFC 3339 of a Unix time (UTC); out-of-range times print as the number.
pub(crate) fn rfc3339(ts: i64) -> String {
    OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ts.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeframes() {
        let now = OffsetDateTime::from_unix_timestamp(1_000_000).expect("time");
        let p = |s| Timeframe::parse(Some(s), now);
        assert_eq!(p("24h").expect("24h").since, 1_000_000 - 86_400);
        assert_eq!(p("2d").expect("2d").since, 1_000_000 - 2 * 86_400);
        assert_eq!(p("1w").expect("1w").since, 1_000_000 - 7 * 86_400);
        assert_eq!(
            p("all").expect("all"),
            Timeframe::parse(None, now).expect("none")
        );
        let r = p("1970-01-01T00:00:10Z..1970-01-01T00:00:20Z").expect("range");
        assert_eq!((r.since, r.until), (10, 20));
        assert_eq!(p("1970-01-01T00:00:10Z..").expect("open").until, i64::MAX);
        for bad in [
            "",
            "yesterday",
            "0d",
            "-1d",
            "5m",
            "d",
            "99999999999d",
            "x..",
            "1970-01-01T00:00:20Z..1970-01-01T00:00:10Z",
            // Ending in a multi-byte character: refused, not a panic (review memory11 #1).
            "é",
            "5日",
            "1é",
            "１d",
            "5d\u{301}",
            "5\u{1F600}",
        ] {
            assert!(
                matches!(p(bad), Err(MemoryError::Invalid(_))),
                "{bad:?} accepted"
            );
        }
    }

    /// An event is filed under its UTC day, whatever offset it was given in; times before
    /// 1970 or more than a day ahead are refused.
    #[test]
    fn event_times_are_utc_and_bounded() {
        let now = OffsetDateTime::parse("2026-11-30T12:00:00Z", &Rfc3339).expect("now");
        let t = |v: serde_json::Value| event_time(Some(&v), now);
        let late = t(serde_json::json!("2026-11-29T23:30:00-05:00")).expect("offset");
        assert_eq!(late.offset(), time::UtcOffset::UTC);
        assert_eq!(late.date().to_string(), "2026-11-30");
        let early = t(serde_json::json!("2026-11-30T01:00:00+09:00")).expect("offset");
        assert_eq!(early.date().to_string(), "2026-11-29");
        assert_eq!(t(serde_json::json!(0)).expect("epoch").unix_timestamp(), 0);
        t(serde_json::json!("2026-12-01T11:59:59Z")).expect("within a day");
        assert_eq!(event_time(None, now).expect("now"), now);
        for bad in [
            serde_json::json!("0000-01-01T00:00:00Z"),
            serde_json::json!("9999-12-31T23:59:59Z"),
            serde_json::json!("9999-12-31T23:00:00-05:00"),
            serde_json::json!("1969-12-31T23:59:59Z"),
            serde_json::json!("2026-12-01T12:00:01Z"),
            serde_json::json!(-1),
            serde_json::json!(253_402_300_799_i64),
            serde_json::json!(i64::MAX),
        ] {
            let e = t(bad.clone()).expect_err(&bad.to_string());
            assert!(matches!(e, MemoryError::Invalid(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn store_validation() {
        let ok = StoreRequest {
            summary: "s".into(),
            detail: String::new(),
            category: Some("incident".into()),
            tags: vec!["nginx".into()],
            durable: false,
        };
        ok.validate().expect("valid");
        let mut r = ok.clone();
        r.summary = "  ".into();
        assert!(r.validate().is_err());
        let mut r = ok.clone();
        r.summary = "a\n## forged".into();
        assert!(r.validate().is_err());
        let mut r = ok.clone();
        r.detail = "x".repeat(MAX_DETAIL + 1);
        assert!(r.validate().is_err());
        let mut r = ok.clone();
        r.tags = vec!["a b".into()];
        assert!(r.validate().is_err());
        let mut r = ok;
        r.category = Some(String::new());
        assert!(r.validate().is_err());
    }
}
