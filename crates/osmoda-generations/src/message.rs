//! Commit messages: the reason as written, then `Osmoda-*` trailers, and parsing them back.

use crate::GenError;

/// Trailer naming the ledger event that requested the change.
pub const TRAILER_EVENT: &str = "Osmoda-Event";
/// Trailer naming the actor (person or agent) that made the change.
pub const TRAILER_ACTOR: &str = "Osmoda-Actor";
/// Trailer carrying the kernel identity of the caller (uid, pid, executable).
pub const TRAILER_PEER: &str = "Osmoda-Peer";
/// Trailer naming the generation a revert undoes.
pub const TRAILER_REVERTS: &str = "Osmoda-Reverts";
/// Trailer naming the generation whose tree a restore brings back.
pub const TRAILER_RESTORES: &str = "Osmoda-Restores";

/// The parsed parts of a generation's commit message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub reason: String,
    pub event_id: Option<i64>,
    pub actor: Option<String>,
    pub peer: Option<String>,
    pub reverts: Option<String>,
    pub restores: Option<String>,
}

/// Checks a reason given by a caller: non-empty and free of control characters other than
/// newlines and tabs (a commit message is shown in terminals).
pub(crate) fn check_reason(reason: &str) -> Result<&str, GenError> {
    let trimmed = reason.trim();
    if trimmed.is_empty() {
        return Err(GenError::BadInput {
            field: "reason",
            reason: "it is empty; say why the change is made".into(),
        });
    }
    if trimmed
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(GenError::BadInput {
            field: "reason",
            reason: "it contains control characters".into(),
        });
    }
    if trimmed.len() > 16 * 1024 {
        return Err(GenError::BadInput {
            field: "reason",
            reason: "it is longer than 16 KiB".into(),
        });
    }
    Ok(trimmed)
}

/// Builds `reason`, a blank line, then the trailers in a fixed order.
pub(crate) fn build(reason: &str, trailers: &[(&str, String)]) -> String {
    let mut msg = String::with_capacity(reason.len() + 96);
    msg.push_str(reason);
    msg.push_str("\n\n");
    for (key, value) in trailers {
        msg.push_str(key);
        msg.push_str(": ");
        msg.push_str(value);
        msg.push('\n');
    }
    msg
}

/// Splits a commit message into the reason and the `Osmoda-*` trailers of its last paragraph.
///
/// Only the last paragraph is read as trailers, and only if every line of it is `Key: value`,
/// which is how [`build`] writes them; a reason that merely mentions `Osmoda-Event:` in its
/// text cannot forge a trailer because ours always come after it.
pub(crate) fn parse(message: &str) -> Parsed {
    let body = message.trim_end();
    let (head, last) = match body.rfind("\n\n") {
        Some(i) => (&body[..i], &body[i + 2..]),
        None => ("", body),
    };
    let is_trailer_block = !last.is_empty()
        && last
            .lines()
            .all(|l| l.split_once(": ").is_some_and(|(k, _)| is_trailer_key(k)))
        && last.lines().any(|l| l.starts_with("Osmoda-"));
    if !is_trailer_block {
        return Parsed {
            reason: body.to_string(),
            ..Parsed::default()
        };
    }
    let mut parsed = Parsed {
        reason: head.trim_end().to_string(),
        ..Parsed::default()
    };
    for line in last.lines() {
        let Some((key, value)) = line.split_once(": ") else {
            continue;
        };
        let value = value.trim();
        match key {
            TRAILER_EVENT => parsed.event_id = value.parse().ok(),
            TRAILER_ACTOR => parsed.actor = Some(value.to_string()),
            TRAILER_PEER => parsed.peer = Some(value.to_string()),
            TRAILER_REVERTS => parsed.reverts = Some(value.to_string()),
            TRAILER_RESTORES => parsed.restores = Some(value.to_string()),
            _ => {}
        }
    }
    parsed
}

fn is_trailer_key(key: &str) -> bool {
    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(message: &str, reason: &str, event: Option<i64>, actor: Option<&str>) {
        let p = parse(message);
        assert_eq!(p.reason, reason, "reason of {message:?}");
        assert_eq!(p.event_id, event, "event of {message:?}");
        assert_eq!(p.actor.as_deref(), actor, "actor of {message:?}");
    }

    #[test]
    fn round_trip() {
        let m = build(
            "Open port 443\n\nfor the web app",
            &[
                (TRAILER_EVENT, "42".into()),
                (TRAILER_ACTOR, "alice".into()),
            ],
        );
        assert_eq!(
            m,
            "Open port 443\n\nfor the web app\n\nOsmoda-Event: 42\nOsmoda-Actor: alice\n"
        );
        check(
            &m,
            "Open port 443\n\nfor the web app",
            Some(42),
            Some("alice"),
        );
    }

    #[test]
    fn messages_without_trailers() {
        check("Initial import", "Initial import", None, None);
        check(
            "fix\n\nSigned-off-by: x <y>\n",
            "fix\n\nSigned-off-by: x <y>",
            None,
            None,
        );
        check(
            "mentions Osmoda-Event: 7 in text",
            "mentions Osmoda-Event: 7 in text",
            None,
            None,
        );
    }

    #[test]
    fn forged_trailer_in_reason_is_not_read() {
        let m = build("Osmoda-Event: 999", &[(TRAILER_ACTOR, "bob".into())]);
        check(&m, "Osmoda-Event: 999", None, Some("bob"));
    }

    #[test]
    fn reasons_are_checked() {
        assert!(check_reason("  ").is_err());
        assert!(check_reason("a\u{7}b").is_err());
        assert_eq!(check_reason(" ok\n\tmore ").ok(), Some("ok\n\tmore"));
    }
}
