//! What peers say to each other once the handshake is done: one [`MeshMessage`] per Noise
//! transport message, serialized as JSON (the plaintext, at most [`MAX_PLAINTEXT`] bytes).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::identity::PublicKeys;

/// Largest plaintext a transport message carries (a Noise message less its 16-byte tag).
pub const MAX_PLAINTEXT: usize = crate::frame::MAX_FRAME - 16;

/// One message on a link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum MeshMessage {
    /// Text for the peer's inbox.
    Text {
        /// The text.
        text: String,
    },
    /// A JSON payload for the peer's inbox.
    Json {
        /// The payload.
        payload: Value,
    },
    /// Keepalive probe; answered with `Pong`.
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// Keepalive answer.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// The sender switches its sending key (`REKEY` of the Noise spec) right after this message;
    /// the receiver switches its receiving key after reading it.
    Rekey,
    /// The sender has a new identity: `new` signed by the old Ed25519 key (`by_old`) and by the
    /// new one (`by_new`) over [`crate::identity::handover_bytes`].
    Rotate {
        /// The new public keys.
        new: PublicKeys,
        /// Seconds since the epoch when made; bound into the signatures.
        issued_at: u64,
        /// Ed25519 signature by the old identity key, base64.
        by_old: String,
        /// Ed25519 signature by the new identity key, base64.
        by_new: String,
    },
    /// A request another daemon made through `POST /peer/{id}/request`; the peer's local
    /// service answers it through `POST /requests/{id}/respond`.
    Request {
        /// Unique per link and direction.
        id: u64,
        /// What is asked (e.g. `ledger.cosign`): 1..=64 of `[A-Za-z0-9._-]`.
        topic: String,
        /// The question.
        body: Value,
    },
    /// The answer to `Request` `id`.
    Response {
        /// The request's id.
        id: u64,
        /// Whether the peer's service answered (`false`: no service, timeout or refusal).
        ok: bool,
        /// The answer or the reason.
        body: Value,
    },
}

impl MeshMessage {
    /// The kind recorded in the ledger (never the content).
    pub fn kind(&self) -> &'static str {
        match self {
            MeshMessage::Text { .. } => "text",
            MeshMessage::Json { .. } => "json",
            MeshMessage::Ping { .. } => "ping",
            MeshMessage::Pong { .. } => "pong",
            MeshMessage::Rekey => "rekey",
            MeshMessage::Rotate { .. } => "rotate",
            MeshMessage::Request { .. } => "request",
            MeshMessage::Response { .. } => "response",
        }
    }
}

/// Whether `t` can be a request topic.
pub fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wire_form_and_refusals() {
        let m = MeshMessage::Text { text: "hi".into() };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({ "type": "text", "text": "hi" })
        );
        assert_eq!(
            serde_json::from_value::<MeshMessage>(json!({ "type": "rekey" })).unwrap(),
            MeshMessage::Rekey
        );
        for bad in [
            json!({ "type": "text" }),
            json!({ "type": "text", "text": "x", "extra": 1 }),
            json!({ "type": "nope" }),
            json!([1]),
        ] {
            assert!(
                serde_json::from_value::<MeshMessage>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        assert!(valid_topic("ledger.cosign") && !valid_topic("") && !valid_topic("a/b"));
    }

    /// The bytes a text message takes on the link, the count `POST /peer/{id}/send` refuses
    /// over [`MAX_PLAINTEXT`]. The bridge's `mesh_peer_send` checks the same cases
    /// (`bridge/test/unit.test.ts`, "mesh_peer_send counts a message's bytes"): these numbers
    /// are the contract between the two.
    #[test]
    fn text_limits_are_bytes_on_the_link() {
        let on_link = |t: String| {
            serde_json::to_vec(&MeshMessage::Text { text: t })
                .unwrap()
                .len()
        };
        assert_eq!(MAX_PLAINTEXT, 65_519);
        for (what, text, bytes) in [
            ("ASCII at the limit", "a".repeat(65_494), 65_519),
            ("ASCII one over", "a".repeat(65_495), 65_520),
            ("2-byte é at the limit", "é".repeat(32_747), 65_519),
            ("é one byte over", "é".repeat(32_747) + "a", 65_520),
            ("3-byte €", "€".repeat(21_831) + "a", 65_519),
            ("€ one over", "€".repeat(21_832), 65_521),
            ("4-byte emoji", "😀".repeat(16_373) + "aa", 65_519),
            ("emoji one over", "😀".repeat(16_373) + "aaa", 65_520),
            (
                "emoji, the bridge's refused case",
                "😀".repeat(16_374),
                65_521,
            ),
            ("quotes escaped", "\"".repeat(32_747), 65_519),
            (
                "control characters as \\u00XX",
                "\u{1}".repeat(10_915) + "aaaa",
                65_519,
            ),
            ("é, the bridge's error text", "é".repeat(32_748), 65_521),
        ] {
            assert_eq!(on_link(text), bytes, "{what}");
        }
    }
}
