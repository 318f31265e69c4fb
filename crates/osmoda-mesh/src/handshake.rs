//! The handshake: `Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s` (snow) with ML-KEM-768 folded in.
//!
//! ```text
//! -> e                    payload: Hello1 { ML-KEM-768 encapsulation key of the initiator }
//! <- e, ee, s, es         payload: Hello2 { ciphertext to that key, Ed25519 key,
//!                                           sig(X25519 s_R ‖ h1) }
//!    both: psk = HKDF-SHA256(ML-KEM shared secret, info = label ‖ h2), set in slot 3
//! -> s, se, psk           payload: Hello3 { Ed25519 key, sig(X25519 s_I ‖ h2), invite?, ... }
//! ```
//! `h1`/`h2` are the handshake hashes after messages 1 and 2, so each signature binds its
//! signer's Noise static key to this session's transcript, and the transport keys depend on
//! both X25519 and ML-KEM (an attacker must break both). The initiator checks the responder's
//! keys against what it expected (the peer record or the invite); the responder admits the
//! initiator only as a declared peer with exactly these keys or with a live invite
//! ([`respond`]'s `admit`), before any application data. Nothing is encrypted twice: after
//! message 3, snow's transport state is the only cipher.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use zeroize::Zeroizing;

use crate::frame::{read_frame, write_frame, MAX_FRAME};
use crate::identity::{handshake_bytes, verify, Identity, Keys};
use crate::pq;

/// The Noise protocol name.
pub const PATTERN: &str = "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s";
/// Prologue: binds the protocol version into the transcript.
pub const PROLOGUE: &[u8] = b"osmoda-mesh/v1";
/// HKDF info label for the PSK (followed by the handshake hash after message 2).
const PSK_INFO: &[u8] = b"osmoda-mesh/v1 psk3 ML-KEM-768\0";
/// The whole handshake must finish within this.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The parsed protocol name.
pub fn params() -> snow::params::NoiseParams {
    // A constant that parses; the unit test below proves it.
    PATTERN
        .parse()
        .unwrap_or_else(|_| unreachable!("PATTERN parses"))
}

/// Message 1's payload.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hello1 {
    v: u32,
    ml_kem_768: String,
}

/// Message 2's payload.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hello2 {
    ct: String,
    ed25519: String,
    sig: String,
}

/// Message 3's payload.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hello3 {
    ed25519: String,
    sig: String,
    #[serde(flatten)]
    extra: Extra,
}

/// What the initiator tells the responder besides its identity (in message 3, encrypted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extra {
    /// An invite's secret (base64url), when pairing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite: Option<String>,
    /// The name the initiator goes by (a hint for the responder's peer record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where the responder can dial the initiator (`host:port`), when it knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The initiator's listen port (with the address the responder sees, an endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
}

/// A finished handshake.
pub struct Established {
    /// The transport cipher state (the only encryption of the link).
    pub transport: snow::TransportState,
    /// The peer's keys, verified.
    pub peer: Keys,
    /// The final handshake hash (unique per session; names it in logs and the ledger).
    pub hash: Vec<u8>,
    /// Whether we initiated.
    pub initiator: bool,
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The connection failed or timed out.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the protocol (bad frame, decryption failure, missing ML-KEM payload,
    /// bad signature, keys other than expected).
    #[error("{0}")]
    Protocol(String),
    /// The responder does not admit this initiator (unknown key, no or dead invite).
    #[error("{0}")]
    Refused(String),
}

fn proto(what: impl std::fmt::Display) -> HandshakeError {
    HandshakeError::Protocol(what.to_string())
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>, HandshakeError> {
    B64.decode(s)
        .map_err(|_| proto(format!("{what} is not base64")))
}

fn ed_key(s: &str) -> Result<VerifyingKey, HandshakeError> {
    let b: [u8; 32] = b64(s, "the Ed25519 key")?
        .try_into()
        .map_err(|_| proto("the Ed25519 key must have 32 bytes"))?;
    VerifyingKey::from_bytes(&b).map_err(|_| proto("the Ed25519 key is not a valid point"))
}

fn psk(ss: &[u8; 32], h2: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    let info = [PSK_INFO, h2].concat();
    hkdf::Hkdf::<sha2::Sha256>::new(None, ss)
        .expand(&info, &mut out[..])
        .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 length"));
    out
}

fn remote_static(hs: &snow::HandshakeState) -> Result<[u8; 32], HandshakeError> {
    hs.get_remote_static()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| proto("no remote static key after the handshake"))
}

async fn send<S: AsyncWrite + Unpin>(
    s: &mut S,
    hs: &mut snow::HandshakeState,
    payload: &[u8],
) -> Result<(), HandshakeError> {
    let mut buf = vec![0u8; MAX_FRAME];
    let n = hs.write_message(payload, &mut buf).map_err(proto)?;
    write_frame(s, &buf[..n]).await?;
    Ok(())
}

async fn recv<S: AsyncRead + Unpin>(
    s: &mut S,
    hs: &mut snow::HandshakeState,
    step: &str,
) -> Result<Vec<u8>, HandshakeError> {
    let frame = read_frame(s).await?;
    let mut buf = vec![0u8; MAX_FRAME];
    let n = hs
        .read_message(&frame, &mut buf)
        .map_err(|e| proto(format!("{step} does not decrypt or parse: {e}")))?;
    buf.truncate(n);
    Ok(buf)
}

/// Runs the initiator side on `s`, expecting the responder to hold exactly `expect`.
///
/// # Errors
/// [`HandshakeError`]; `Protocol` names what the responder got wrong.
pub async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    id: &Identity,
    expect: &Keys,
    extra: Extra,
) -> Result<Established, HandshakeError> {
    tokio::time::timeout(TIMEOUT, initiate_inner(s, id, expect, extra))
        .await
        .map_err(|_| proto("the handshake timed out"))?
}

async fn initiate_inner<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    id: &Identity,
    expect: &Keys,
    extra: Extra,
) -> Result<Established, HandshakeError> {
    let mut hs = snow::Builder::new(params())
        .local_private_key(&id.x25519_private[..])
        .prologue(PROLOGUE)
        .build_initiator()
        .map_err(proto)?;
    let hello1 = serde_json::to_vec(&Hello1 {
        v: 1,
        ml_kem_768: B64.encode(id.ml_kem_ek()),
    })
    .map_err(proto)?;
    send(s, &mut hs, &hello1).await?;

    let h1 = hs.get_handshake_hash().to_vec();
    let p2 = recv(s, &mut hs, "message 2").await?;
    let hello2: Hello2 =
        serde_json::from_slice(&p2).map_err(|e| proto(format!("message 2's payload: {e}")))?;
    let rs = remote_static(&hs)?;
    if rs != expect.x25519 {
        return Err(proto(
            "the responder's X25519 static key is not the one recorded for it (a man in the middle, or the peer rotated without a hand-over)",
        ));
    }
    let ed = ed_key(&hello2.ed25519)?;
    if ed != expect.ed25519 {
        return Err(proto(
            "the responder's Ed25519 key is not the one recorded for it",
        ));
    }
    if !verify(
        &ed,
        &handshake_bytes(&rs, &h1),
        &b64(&hello2.sig, "the signature")?,
    ) {
        return Err(proto("the responder's identity signature does not verify"));
    }
    let ct = b64(&hello2.ct, "the ML-KEM ciphertext")?;
    let ss = pq::decapsulate(&id.ml_kem_dk, &ct)
        .ok_or_else(|| proto("the ML-KEM ciphertext has the wrong length"))?;
    let h2 = hs.get_handshake_hash().to_vec();
    hs.set_psk(3, &psk(&ss, &h2)[..]).map_err(proto)?;

    let hello3 = serde_json::to_vec(&Hello3 {
        ed25519: B64.encode(id.signing.verifying_key().as_bytes()),
        sig: B64.encode(id.sign_handshake(&h2)),
        extra,
    })
    .map_err(proto)?;
    send(s, &mut hs, &hello3).await?;
    let hash = hs.get_handshake_hash().to_vec();
    Ok(Established {
        transport: hs.into_transport_mode().map_err(proto)?,
        peer: expect.clone(),
        hash,
        initiator: true,
    })
}

/// Runs the responder side on `s`. `admit` sees the initiator's verified keys and its
/// [`Extra`] after message 3 decrypted and the signature checked, and decides (its `Err` text
/// is logged and recorded; the connection is closed before any application data).
///
/// # Errors
/// [`HandshakeError`]: `Protocol` for a broken or downgraded handshake, `Refused` when
/// `admit` refuses.
pub async fn respond<S, A, F>(
    s: &mut S,
    id: &Identity,
    admit: F,
) -> Result<(Established, Extra, A), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&Keys, &Extra) -> Result<A, String>,
{
    tokio::time::timeout(TIMEOUT, respond_inner(s, id, admit))
        .await
        .map_err(|_| proto("the handshake timed out"))?
}

async fn respond_inner<S, A, F>(
    s: &mut S,
    id: &Identity,
    admit: F,
) -> Result<(Established, Extra, A), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&Keys, &Extra) -> Result<A, String>,
{
    let mut hs = snow::Builder::new(params())
        .local_private_key(&id.x25519_private[..])
        .prologue(PROLOGUE)
        .build_responder()
        .map_err(proto)?;
    let p1 = recv(s, &mut hs, "message 1").await?;
    // No ML-KEM key, no handshake: a peer cannot downgrade to X25519 alone.
    let hello1: Hello1 = serde_json::from_slice(&p1).map_err(|_| {
        proto("message 1 carries no ML-KEM-768 encapsulation key (downgrade refused)")
    })?;
    if hello1.v != 1 {
        return Err(proto(format!(
            "protocol version {} is not supported",
            hello1.v
        )));
    }
    let ek = b64(&hello1.ml_kem_768, "the ML-KEM key")?;
    let (ct, ss) = pq::encapsulate(&ek)
        .ok_or_else(|| proto("message 1's ML-KEM-768 encapsulation key is invalid"))?;
    let h1 = hs.get_handshake_hash().to_vec();
    let hello2 = serde_json::to_vec(&Hello2 {
        ct: B64.encode(&ct),
        ed25519: B64.encode(id.signing.verifying_key().as_bytes()),
        sig: B64.encode(id.sign_handshake(&h1)),
    })
    .map_err(proto)?;
    send(s, &mut hs, &hello2).await?;
    let h2 = hs.get_handshake_hash().to_vec();
    hs.set_psk(3, &psk(&ss, &h2)[..]).map_err(proto)?;

    let p3 = recv(s, &mut hs, "message 3").await?;
    let hello3: Hello3 =
        serde_json::from_slice(&p3).map_err(|e| proto(format!("message 3's payload: {e}")))?;
    let rs = remote_static(&hs)?;
    let ed = ed_key(&hello3.ed25519)?;
    if !verify(
        &ed,
        &handshake_bytes(&rs, &h2),
        &b64(&hello3.sig, "the signature")?,
    ) {
        return Err(proto("the initiator's identity signature does not verify"));
    }
    let peer = Keys {
        ed25519: ed,
        x25519: rs,
        ml_kem: ek,
    };
    let admitted = admit(&peer, &hello3.extra).map_err(HandshakeError::Refused)?;
    let hash = hs.get_handshake_hash().to_vec();
    Ok((
        Established {
            transport: hs.into_transport_mode().map_err(proto)?,
            peer,
            hash,
            initiator: false,
        },
        hello3.extra,
        admitted,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cacophony's published vector for exactly this pattern (from snow's
    /// `tests/vectors/cacophony.txt`): fixed statics, ephemerals, prologue and PSK; every
    /// message's ciphertext and the handshake hash byte for byte through the snow we build on.
    #[test]
    fn cacophony_vector_xxpsk3_25519_chachapoly_blake2s() {
        let h = |s: &str| hex::decode(s).unwrap();
        let prologue = h("4a6f686e2047616c74");
        let psk = h("54686973206973206d7920417573747269616e20706572737065637469766521");
        let i_s = h("e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1");
        let i_e = h("893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a");
        let r_s = h("4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893");
        let r_e = h("bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b");
        let msgs = [
            ("4c756477696720766f6e204d69736573", "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944325ea71699951ece20f284b6ad9604a029eb335bf84564c308b6ade90ae45078"),
            ("4d757272617920526f746862617264", "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f1448088432645535233ffe1432564d66a85227b677ced6fc2730ae0998ff49aa1dc56b8186e31b16e416f5d9c03c71f6c34fd37ec013105020070a8b00c000ce7ed56629c119795f96463274bc05519d5c24dc1"),
            ("462e20412e20486179656b", "adf16c5375ec4172576783fd59f2bfa5c7a320d0a13b759592e1a2ddf5524cce59ccbb92ff5d321fced3bdb2840596df562c0e68aad41b090abd285f6d300130072e06964a6ba494e58d47"),
            ("4361726c204d656e676572", "dcdc045c8e9ec36c8ea4078552e5849f87cb9bdfbd2a4eee3baaf6"),
            ("4a65616e2d426170746973746520536179", "4d11ed1f242e199dbcbc9773495834a95e8a6109e2b555aeb50780e69b152821e4"),
            ("457567656e2042f6686d20766f6e2042617765726b", "4d1e6873ffcc88490be6914928590f63253c2db434f1f206f083f89ca559a3e60a8dcc4f12"),
        ];
        let mut i = snow::Builder::new(params())
            .local_private_key(&i_s)
            .fixed_ephemeral_key_for_testing_only(&i_e)
            .prologue(&prologue)
            .psk(3, &psk)
            .build_initiator()
            .unwrap();
        let mut r = snow::Builder::new(params())
            .local_private_key(&r_s)
            .fixed_ephemeral_key_for_testing_only(&r_e)
            .prologue(&prologue)
            .psk(3, &psk)
            .build_responder()
            .unwrap();
        let mut buf = vec![0u8; 65535];
        let mut out = vec![0u8; 65535];
        for (k, (payload, ct)) in msgs[..3].iter().enumerate() {
            let (w, rd) = if k % 2 == 0 {
                (&mut i, &mut r)
            } else {
                (&mut r, &mut i)
            };
            let n = w.write_message(&h(payload), &mut buf).unwrap();
            assert_eq!(hex::encode(&buf[..n]), *ct, "handshake message {k}");
            let m = rd.read_message(&buf[..n], &mut out).unwrap();
            assert_eq!(out[..m], h(payload)[..]);
        }
        assert_eq!(
            hex::encode(i.get_handshake_hash()),
            "fc0819f08aebc23de9a783653d8d7d6395b7d243d9deec12f5d6fe2f4c206673"
        );
        let mut i = i.into_transport_mode().unwrap();
        let mut r = r.into_transport_mode().unwrap();
        for (k, (payload, ct)) in msgs[3..].iter().enumerate() {
            let (w, rd) = if k % 2 == 0 {
                (&mut r, &mut i)
            } else {
                (&mut i, &mut r)
            };
            let n = w.write_message(&h(payload), &mut buf).unwrap();
            assert_eq!(hex::encode(&buf[..n]), *ct, "transport message {k}");
            let m = rd.read_message(&buf[..n], &mut out).unwrap();
            assert_eq!(out[..m], h(payload)[..]);
        }
    }

    #[test]
    fn psk_depends_on_secret_and_transcript() {
        let a = psk(&[1; 32], b"h");
        assert_ne!(*a, *psk(&[2; 32], b"h"));
        assert_ne!(*a, *psk(&[1; 32], b"g"));
    }
}
