//! Input checks run before anything reaches the writer: labels, payloads and dedup keys.

use crate::{DedupKey, LedgerError, NewEvent};

/// Longest accepted `type`, `actor` or dedup stream, in bytes.
pub const MAX_LABEL_BYTES: usize = 128;
/// Largest accepted payload, in bytes of JSON text.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Checks a `type` or `actor` label: non-empty, at most 128 bytes, no `|`, no control characters.
///
/// The `|` ban keeps the pipe-delimited hash input unambiguous.
///
/// # Errors
/// [`LedgerError::InvalidLabel`] saying which rule the label breaks.
pub fn validate_label(s: &str) -> Result<(), LedgerError> {
    check_label("label", s)
}

pub(crate) fn check_label(field: &'static str, s: &str) -> Result<(), LedgerError> {
    let reason = if s.is_empty() {
        Some("it is empty")
    } else if s.len() > MAX_LABEL_BYTES {
        Some("it is longer than 128 bytes")
    } else if s.contains('|') {
        Some("it contains '|'")
    } else if s.chars().any(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(LedgerError::InvalidLabel {
            field,
            value: truncate(s, 160),
            reason,
        }),
    }
}

/// Checks that `payload` is one JSON document of at most [`MAX_PAYLOAD_BYTES`].
///
/// # Errors
/// [`LedgerError::InvalidPayload`] with the size or the JSON parse error.
pub fn validate_payload(payload: &str) -> Result<(), LedgerError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(LedgerError::InvalidPayload(format!(
            "it is {} bytes, the limit is {MAX_PAYLOAD_BYTES}",
            payload.len()
        )));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(payload)
        .map(|_| ())
        .map_err(|e| LedgerError::InvalidPayload(format!("not valid JSON ({e})")))
}

/// Checks every field of a new event.
pub(crate) fn validate_event(ev: &NewEvent) -> Result<(), LedgerError> {
    check_label("type", &ev.kind)?;
    check_label("actor", &ev.actor)?;
    validate_payload(&ev.payload)?;
    if let Some(d) = &ev.dedup {
        validate_dedup(d)?;
    }
    Ok(())
}

fn validate_dedup(d: &DedupKey) -> Result<(), LedgerError> {
    check_label("dedup.stream", &d.stream)?;
    if i64::try_from(d.seq).is_err() {
        return Err(LedgerError::InvalidDedup(format!(
            "seq {} is above the largest storable value {}",
            d.seq,
            i64::MAX
        )));
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label_err(s: &str) -> Option<&'static str> {
        match validate_label(s) {
            Ok(()) => None,
            Err(LedgerError::InvalidLabel { reason, .. }) => Some(reason),
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn labels() {
        assert_eq!(label_err("config.edit"), None);
        assert_eq!(label_err("agentd[uid=0,pid=1,exe=agentd]"), None);
        assert_eq!(label_err(&"x".repeat(128)), None);
        assert_eq!(label_err("ünïcødé"), None);
        assert_eq!(label_err(""), Some("it is empty"));
        assert_eq!(
            label_err(&"x".repeat(129)),
            Some("it is longer than 128 bytes")
        );
        assert_eq!(label_err("a|b"), Some("it contains '|'"));
        assert_eq!(label_err("a\nb"), Some("it contains a control character"));
        assert_eq!(
            label_err("a\u{7f}"),
            Some("it contains a control character")
        );
        assert_eq!(
            label_err("a\u{85}"),
            Some("it contains a control character")
        );
    }

    #[test]
    fn payloads() {
        assert!(validate_payload(r#"{"a":[1,2,{"b":null}]}"#).is_ok());
        assert!(validate_payload("42").is_ok());
        assert!(validate_payload(" \"s\" ").is_ok());
        for bad in ["", "{", "{\"a\":1} trailing", "nul", "{'a':1}"] {
            assert!(
                matches!(validate_payload(bad), Err(LedgerError::InvalidPayload(_))),
                "{bad:?}"
            );
        }
        let big = format!("\"{}\"", "x".repeat(MAX_PAYLOAD_BYTES));
        let err = validate_payload(&big)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("the limit is 1048576"), "{err}");
    }

    #[test]
    fn dedup_seq_must_fit_in_i64() {
        let ok = DedupKey {
            stream: "s".into(),
            seq: i64::MAX as u64,
        };
        assert!(validate_dedup(&ok).is_ok());
        let bad = DedupKey {
            stream: "s".into(),
            seq: u64::MAX,
        };
        assert!(matches!(
            validate_dedup(&bad),
            Err(LedgerError::InvalidDedup(_))
        ));
        let bad_stream = DedupKey {
            stream: "a|b".into(),
            seq: 1,
        };
        assert!(matches!(
            validate_dedup(&bad_stream),
            Err(LedgerError::InvalidLabel {
                field: "dedup.stream",
                ..
            })
        ));
    }

    #[test]
    fn long_values_are_truncated_on_a_char_boundary() {
        let s = "é".repeat(200);
        let t = truncate(&s, 161);
        assert!(t.ends_with("..."));
        assert!(t.len() <= 164);
    }
}
