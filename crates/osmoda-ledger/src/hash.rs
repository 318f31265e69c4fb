//! The chain hash: SHA-256 over `id|ts|type|actor|payload|prev_hash`, and the timestamp format.

use sha2::{Digest, Sha256};
use std::io::Write as _;

/// `prev_hash` of the first event: 64 ASCII zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Writes the exact hash input `"{id}|{ts}|{type}|{actor}|{payload}|{prev_hash}"` into `buf`
/// (cleared first), so callers hashing many rows can reuse one buffer.
pub fn hash_input_into(
    buf: &mut Vec<u8>,
    id: i64,
    ts: &[u8],
    kind: &[u8],
    actor: &[u8],
    payload: &[u8],
    prev_hash: &[u8],
) {
    buf.clear();
    // Writing to a Vec cannot fail.
    let _ = write!(buf, "{id}");
    for part in [ts, kind, actor, payload, prev_hash] {
        buf.push(b'|');
        buf.extend_from_slice(part);
    }
}

/// Lowercase hex SHA-256 of `bytes`, written into a fixed buffer (no allocation).
pub fn sha256_hex(bytes: &[u8]) -> [u8; 64] {
    let digest = Sha256::digest(bytes);
    let mut out = [0u8; 64];
    // The output buffer is exactly twice the digest length, so this cannot fail.
    let _ = hex::encode_to_slice(digest, &mut out);
    out
}

/// The chain hash of one event, as stored in the `hash` column (64 lowercase hex digits).
pub fn event_hash(
    id: i64,
    ts: &str,
    kind: &str,
    actor: &str,
    payload: &str,
    prev_hash: &str,
) -> String {
    let mut buf = Vec::with_capacity(96 + ts.len() + kind.len() + actor.len() + payload.len());
    hash_input_into(
        &mut buf,
        id,
        ts.as_bytes(),
        kind.as_bytes(),
        actor.as_bytes(),
        payload.as_bytes(),
        prev_hash.as_bytes(),
    );
    let hex = sha256_hex(&buf);
    // Hex digits are ASCII, so this is always valid UTF-8.
    String::from_utf8_lossy(&hex).into_owned()
}

/// Formats a UTC instant as `%Y-%m-%dT%H:%M:%S.%3fZ`, the same shape as the SQL column default.
pub fn format_ts(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// The current time in the ledger's timestamp format.
pub fn now_ts() -> String {
    format_ts(time::OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_event_hash_matches_sha256sum() {
        // Computed independently with:
        // printf '1|2026-01-02T03:04:05.678Z|config.edit|agentd[uid=0]|{"k":"v"}|0000000000000000000000000000000000000000000000000000000000000000' | sha256sum
        let h = event_hash(
            1,
            "2026-01-02T03:04:05.678Z",
            "config.edit",
            "agentd[uid=0]",
            r#"{"k":"v"}"#,
            GENESIS_HASH,
        );
        assert_eq!(
            h,
            "7feab274ad052effb4e458bcf1241021d4217bf1adced88dc7a1f3b5a69ddc87"
        );
    }

    #[test]
    fn second_event_hash_chains_on_the_first() {
        // printf '2|2026-01-02T03:04:06.000Z|svc.restart|watch|[1,2]|7feab274ad052effb4e458bcf1241021d4217bf1adced88dc7a1f3b5a69ddc87' | sha256sum
        let h = event_hash(
            2,
            "2026-01-02T03:04:06.000Z",
            "svc.restart",
            "watch",
            "[1,2]",
            "7feab274ad052effb4e458bcf1241021d4217bf1adced88dc7a1f3b5a69ddc87",
        );
        assert_eq!(
            h,
            "64fb91cdb440ce4978327c320cc18116bad3fee9b0a4a1cb626634eb362bdae3"
        );
    }

    #[test]
    fn ts_has_the_sql_default_shape() {
        let t = time::macros::datetime!(2026-03-04 05:06:07.089 UTC);
        assert_eq!(format_ts(t), "2026-03-04T05:06:07.089Z");
        let shifted = time::macros::datetime!(2026-03-04 07:06:07.5 +02:00);
        assert_eq!(format_ts(shifted), "2026-03-04T05:06:07.500Z");
        assert_eq!(now_ts().len(), 24);
    }
}
