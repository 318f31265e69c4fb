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
//!
//! There is one protocol name and nothing to negotiate: a peer speaking any other name (another
//! cipher, plain `Noise_XX`) fails at message 1, whose payload a `psk` pattern already encrypts
//! under a key derived from the name. The primitives come from snow's resolver as built with
//! `ring-accelerated`: ring's ChaCha20-Poly1305, the default resolver's X25519 and BLAKE2s;
//! cacophony's vectors check it byte for byte (`handshake/vectors.rs`).

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

/// The Noise protocol name, the issue's and the only one a peer speaks.
pub const PATTERN: &str = "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s";
/// Prologue: binds the protocol version into the transcript.
pub const PROLOGUE: &[u8] = b"osmoda-mesh/v1";
/// HKDF info label for the PSK (followed by the handshake hash after message 2).
const PSK_INFO: &[u8] = b"osmoda-mesh/v1 psk3 ML-KEM-768\0";
/// The initiator's whole handshake must finish within this.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The responder's whole handshake, from the connection to the admission decision, must
/// finish within this (not per message): until message 3 verifies, nothing is known about
/// the initiator (anyone can send a valid message 1), and a real peer answers message 2 in
/// one round trip. A slow or silent connection holds a handshake slot this long at most.
pub const RESPOND_DEADLINE: Duration = Duration::from_secs(3);
/// Message 1 (one frame of ~1.3 KB) must arrive within this (inside [`RESPOND_DEADLINE`]).
pub const FIRST_MESSAGE: Duration = Duration::from_secs(2);

/// The parsed protocol name, [`PATTERN`].
pub fn params() -> snow::params::NoiseParams {
    // A constant that parses; the cacophony test proves it.
    PATTERN
        .parse()
        .unwrap_or_else(|_| unreachable!("the pattern parses"))
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
    /// The X25519 static key this side used (its identity now, or the previous one while a
    /// rotation's hand-over is delivered).
    pub local: [u8; 32],
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
    /// Nothing that could be a handshake arrived: no message 1 in time, or a connection that
    /// closed or broke before it. Not worth a ledger event (a port scanner does this).
    #[error("{0}")]
    Silent(String),
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
    open(hs, &frame, step)
}

fn open(
    hs: &mut snow::HandshakeState,
    frame: &[u8],
    step: &str,
) -> Result<Vec<u8>, HandshakeError> {
    let mut buf = vec![0u8; MAX_FRAME];
    let n = hs
        .read_message(frame, &mut buf)
        .map_err(|e| proto(format!("{step} does not decrypt or parse: {e}")))?;
    buf.truncate(n);
    Ok(buf)
}

fn builder(id: &Identity) -> snow::Builder<'_> {
    snow::Builder::new(params())
        .local_private_key(&id.x25519_private[..])
        .prologue(PROLOGUE)
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
    let mut hs = builder(id).build_initiator().map_err(proto)?;
    let hello1 = serde_json::to_vec(&Hello1 {
        v: 1,
        ml_kem_768: B64.encode(id.ml_kem_ek()),
    })
    .map_err(proto)?;
    send(s, &mut hs, &hello1).await?;

    let h1 = hs.get_handshake_hash().to_vec();
    let p2 = recv(s, &mut hs, "message 2").await?;
    // serde's text would quote the peer's bytes into logs and the ledger: a fixed one instead.
    let hello2: Hello2 = serde_json::from_slice(&p2)
        .map_err(|_| proto("message 2's payload is not the expected JSON"))?;
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
        local: id.x25519_public,
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
    tokio::time::timeout(RESPOND_DEADLINE, respond_inner(s, id, admit))
        .await
        .map_err(|_| {
            HandshakeError::Silent(format!(
                "the handshake did not finish within {} s",
                RESPOND_DEADLINE.as_secs()
            ))
        })?
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
    let first = match tokio::time::timeout(FIRST_MESSAGE, read_frame(s)).await {
        Err(_) => {
            return Err(HandshakeError::Silent(format!(
                "no message 1 within {} s",
                FIRST_MESSAGE.as_secs()
            )))
        }
        Ok(Err(e)) => {
            return Err(HandshakeError::Silent(format!(
                "the connection ended before message 1: {e}"
            )))
        }
        Ok(Ok(f)) => f,
    };
    let mut hs = builder(id).build_responder().map_err(proto)?;
    // A message 1 that does not open is noise (another protocol, random bytes, a scanner):
    // it proves nothing about its sender and is not worth a ledger event.
    let p1 = open(&mut hs, &first, "message 1").map_err(|e| match e {
        HandshakeError::Protocol(m) => HandshakeError::Silent(m),
        other => other,
    })?;
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
    let hello3: Hello3 = serde_json::from_slice(&p3)
        .map_err(|_| proto("message 3's payload is not the expected JSON"))?;
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
            local: id.x25519_public,
        },
        hello3.extra,
        admitted,
    ))
}

#[cfg(test)]
mod vectors;

#[cfg(test)]
mod tests {
    use super::*;

    /// A full hybrid handshake: both sides agree on the handshake hash, and their transports
    /// talk both ways.
    #[tokio::test]
    async fn the_hybrid_handshake_completes_and_both_transports_talk() {
        let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let (ak, bk) = (a.keys(), b.keys());
        let (mut x, mut y) = tokio::io::duplex(1 << 16);
        let (i, r) = tokio::join!(
            initiate(&mut x, &a, &bk, Extra::default()),
            respond(&mut y, &b, |k, _| if *k == ak {
                Ok(())
            } else {
                Err("?".to_string())
            }),
        );
        let (mut i, (mut r, _, ())) = (i.unwrap(), r.unwrap());
        assert_eq!(i.hash, r.hash);
        let (mut buf, mut out) = (vec![0u8; 100], vec![0u8; 100]);
        let n = i.transport.write_message(b"ping", &mut buf).unwrap();
        let m = r.transport.read_message(&buf[..n], &mut out).unwrap();
        assert_eq!(&out[..m], b"ping");
        let n = r.transport.write_message(b"pong", &mut buf).unwrap();
        let m = i.transport.read_message(&buf[..n], &mut out).unwrap();
        assert_eq!(&out[..m], b"pong");
    }

    /// A connection that sends nothing holds the responder [`FIRST_MESSAGE`], not
    /// [`TIMEOUT`]; it and noise instead of message 1 are `Silent` (no ledger event), while a
    /// real message 1 without the ML-KEM key is a protocol refusal.
    #[tokio::test]
    async fn silence_and_noise_are_not_handshakes() {
        let r = Identity::generate().unwrap();
        let (_x, mut y) = tokio::io::duplex(1 << 16);
        let start = std::time::Instant::now();
        let e = respond(&mut y, &r, |_, _| Ok(())).await.err().unwrap();
        assert!(matches!(e, HandshakeError::Silent(_)), "{e}");
        let held = start.elapsed();
        assert!(held >= FIRST_MESSAGE && held < RESPOND_DEADLINE, "{held:?}");

        let (mut x, mut y) = tokio::io::duplex(1 << 16);
        crate::frame::write_frame(&mut x, &[7u8; 200])
            .await
            .unwrap();
        let e = respond(&mut y, &r, |_, _| Ok(())).await.err().unwrap();
        assert!(matches!(e, HandshakeError::Silent(_)), "{e}");

        let (mut x, mut y) = tokio::io::duplex(1 << 16);
        let mut hs = builder(&Identity::generate().unwrap())
            .build_initiator()
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = hs.write_message(b"{}", &mut buf).unwrap();
        crate::frame::write_frame(&mut x, &buf[..n]).await.unwrap();
        let e = respond(&mut y, &r, |_, _| Ok(())).await.err().unwrap();
        assert!(matches!(e, HandshakeError::Protocol(_)), "{e}");
    }

    /// Finding 3: the responder's deadline is for the whole handshake, not per message: an
    /// initiator that sends a valid message 1 and then nothing (or trickles) is dropped at
    /// [`RESPOND_DEADLINE`] from the start, not at [`TIMEOUT`], without a ledger-worthy error.
    #[tokio::test]
    async fn a_valid_message_1_then_silence_ends_at_the_total_deadline() {
        let r = Identity::generate().unwrap();
        let (mut x, mut y) = tokio::io::duplex(1 << 16);
        let mut hs = builder(&Identity::generate().unwrap())
            .build_initiator()
            .unwrap();
        let hello1 = serde_json::to_vec(&Hello1 {
            v: 1,
            ml_kem_768: B64.encode(Identity::generate().unwrap().ml_kem_ek()),
        })
        .unwrap();
        let start = std::time::Instant::now();
        let responder = tokio::spawn(async move { respond(&mut y, &r, |_, _| Ok(())).await });
        // Message 1 arrives late but inside FIRST_MESSAGE; message 2 comes back; then silence.
        tokio::time::sleep(FIRST_MESSAGE - Duration::from_millis(300)).await;
        send(&mut x, &mut hs, &hello1).await.unwrap();
        let m2 = crate::frame::read_frame(&mut x).await.unwrap();
        assert!(!m2.is_empty(), "message 2 was sent");
        let e = responder.await.unwrap().err().unwrap();
        let held = start.elapsed();
        assert!(matches!(e, HandshakeError::Silent(_)), "{e}");
        assert!(
            held >= RESPOND_DEADLINE && held < RESPOND_DEADLINE + Duration::from_millis(900),
            "{held:?}"
        );
        drop(x);
    }

    #[test]
    fn psk_depends_on_secret_and_transcript() {
        let a = psk(&[1; 32], b"h");
        assert_ne!(*a, *psk(&[2; 32], b"h"));
        assert_ne!(*a, *psk(&[1; 32], b"g"));
    }
}
