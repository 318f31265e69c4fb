//! Solana: ed25519 keys (ed25519-dalek 2), base58 addresses (bs58), legacy-message System
//! Program transfers with a caller-supplied recent blockhash, and off-chain messages with the
//! `\xffsolana offchain` signing domain. Versioned (v0, address-lookup-table) messages and
//! durable-nonce transactions are refused.
//!
//! Off-chain messages follow the published proposal (agave
//! `docs/src/proposals/off-chain-message-signing.md`, implemented by `@solana/kit`'s
//! `offchain-messages` and the Ledger Solana app), header version 0: signing domain (16),
//! version (1), application domain (32), message format (1), signer count (1), signers
//! (32 each), message length (u16 little-endian), message. Not solana-sdk's older short
//! preamble (domain, version, format, length), which verifiers of the proposal refuse.
//!
//! Message layout (legacy, as documented for Solana transactions): header
//! `[num_required_signatures, num_readonly_signed, num_readonly_unsigned]`, compact-u16 count
//! of 32-byte account keys, the 32-byte recent blockhash, compact-u16 count of instructions,
//! each `program_id_index, compact-u16 n, n account indexes, compact-u16 len, data`. A
//! transaction is compact-u16 signature count, the 64-byte signatures, then the message.

use ed25519_dalek::{Signer, SigningKey};
use zeroize::Zeroizing;

use crate::error::KeydError;

/// The System Program's id (32 zero bytes, base58 `11111111111111111111111111111111`).
pub const SYSTEM_PROGRAM: [u8; 32] = [0; 32];

/// Base fee of one signature in lamports (`lamports_per_signature`, 5,000 on mainnet-beta,
/// devnet and testnet since genesis). The messages keyd signs have one signer and no
/// compute-budget instruction, so this is their whole fee; policy limits count it.
pub const FEE_PER_SIGNATURE: u128 = 5_000;
/// System instruction index of `Transfer`.
const TRANSFER: u32 = 2;
/// System instruction index of `AdvanceNonceAccount` (first instruction of a durable-nonce
/// transaction).
const ADVANCE_NONCE: u32 = 4;
/// Off-chain message signing domain.
pub const OFFCHAIN_DOMAIN: &[u8; 16] = b"\xffsolana offchain";
/// Length of a version-0 off-chain preamble with one signer: domain 16, version 1,
/// application domain 32, format 1, signer count 1, one signer 32, message length 2.
pub const OFFCHAIN_PREAMBLE: usize = 16 + 1 + 32 + 1 + 1 + 32 + 2;
/// Most bytes of preamble and message together in formats 0 and 1 (hardware wallets).
const OFFCHAIN_SHORT_TOTAL: usize = 1232;
/// Most bytes of preamble and message together in format 2.
const OFFCHAIN_TOTAL: usize = 65535;
/// Longest message keyd signs (format 2, one signer): 65,450 bytes.
pub const OFFCHAIN_MAX: usize = OFFCHAIN_TOTAL - OFFCHAIN_PREAMBLE;

/// A loaded ed25519 key (ed25519-dalek zeroizes it on drop).
pub struct SolKey(SigningKey);

impl SolKey {
    /// Loads a 32-byte seed.
    pub fn from_seed(seed: &Zeroizing<[u8; 32]>) -> SolKey {
        SolKey(SigningKey::from_bytes(seed))
    }

    /// The 32-byte public key.
    pub fn public(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// The base58 address.
    pub fn address(&self) -> String {
        bs58::encode(self.public()).into_string()
    }

    fn sign(&self, bytes: &[u8]) -> [u8; 64] {
        self.0.sign(bytes).to_bytes()
    }

    /// Signs a transfer built by [`transfer_message`]: returns the wire transaction.
    pub fn sign_transfer(&self, message: &[u8]) -> SignedSolTx {
        let sig = self.sign(message);
        let mut raw = Vec::with_capacity(1 + 64 + message.len());
        raw.push(1);
        raw.extend_from_slice(&sig);
        raw.extend_from_slice(message);
        SignedSolTx {
            signature: sig,
            raw,
        }
    }

    /// Signs an off-chain message for `application_domain` with this key as its one signer
    /// (the preamble is added here, [`offchain_bytes`]); returns the signed bytes and the
    /// signature.
    ///
    /// # Errors
    /// `BadRequest` for an empty or too long message.
    pub fn sign_offchain(
        &self,
        message: &str,
        application_domain: &[u8; 32],
    ) -> Result<(Vec<u8>, [u8; 64]), KeydError> {
        let bytes = offchain_bytes(message, &self.public(), application_domain)?;
        let sig = self.sign(&bytes);
        Ok((bytes, sig))
    }

    /// Signs arbitrary bytes; only for the RFC 8032 vector test.
    #[cfg(test)]
    pub fn sign_raw_for_test(&self, bytes: &[u8]) -> [u8; 64] {
        self.sign(bytes)
    }
}

/// A signed Solana transaction.
#[derive(Debug, Clone)]
pub struct SignedSolTx {
    /// The fee payer's signature (the transaction id, base58 in explorers).
    pub signature: [u8; 64],
    /// Wire format (base64 for `sendTransaction`).
    pub raw: Vec<u8>,
}

/// Parses a base58 32-byte public key.
///
/// # Errors
/// `BadRequest` naming `field`.
pub fn parse_pubkey(s: &str, field: &str) -> Result<[u8; 32], KeydError> {
    let mut out = [0u8; 32];
    match bs58::decode(s).onto(&mut out) {
        Ok(32) => Ok(out),
        _ => Err(KeydError::BadRequest(format!(
            "`{field}` must be a base58 32-byte Solana address (got {:?})",
            s.chars().take(64).collect::<String>()
        ))),
    }
}

fn compact_u16(out: &mut Vec<u8>, mut n: u16) {
    loop {
        let mut b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        b |= 0x80;
        out.push(b);
    }
}

/// The legacy message of one System Program transfer of `lamports` from `from` to `to`.
///
/// # Errors
/// `BadRequest` when `from == to`.
pub fn transfer_message(
    from: &[u8; 32],
    to: &[u8; 32],
    lamports: u64,
    blockhash: &[u8; 32],
) -> Result<Vec<u8>, KeydError> {
    if from == to {
        return Err(KeydError::BadRequest(
            "`to` is the wallet itself; a transfer to oneself is refused".into(),
        ));
    }
    let mut m = vec![1, 0, 1];
    compact_u16(&mut m, 3);
    for k in [from, to, &SYSTEM_PROGRAM] {
        m.extend_from_slice(k);
    }
    m.extend_from_slice(blockhash);
    compact_u16(&mut m, 1);
    m.push(2);
    compact_u16(&mut m, 2);
    m.extend_from_slice(&[0, 1]);
    compact_u16(&mut m, 12);
    m.extend_from_slice(&TRANSFER.to_le_bytes());
    m.extend_from_slice(&lamports.to_le_bytes());
    Ok(m)
}

/// The bytes signed for an off-chain message with header version 0, one signer (`signer`)
/// and `application_domain` (32 bytes the requesting application picked; shown to the person
/// in base58). The format is the most restrictive one the message fits: 0 (printable ASCII
/// `0x20..=0x7e`, no newline: version 0 does not allow it) or 1 (UTF-8) when preamble and
/// message together are at most 1,232 bytes, else 2 (UTF-8, at most 65,535 together).
///
/// # Errors
/// `BadRequest` for an empty message or one over [`OFFCHAIN_MAX`] bytes.
pub fn offchain_bytes(
    message: &str,
    signer: &[u8; 32],
    application_domain: &[u8; 32],
) -> Result<Vec<u8>, KeydError> {
    let m = message.as_bytes();
    if m.is_empty() || m.len() > OFFCHAIN_MAX {
        return Err(KeydError::BadRequest(format!(
            "an off-chain message must have 1 to {OFFCHAIN_MAX} bytes (got {})",
            m.len()
        )));
    }
    let total = OFFCHAIN_PREAMBLE + m.len();
    let format = if total > OFFCHAIN_SHORT_TOTAL {
        2
    } else if m.iter().all(|b| (0x20..=0x7e).contains(b)) {
        0
    } else {
        1
    };
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(OFFCHAIN_DOMAIN);
    out.push(0);
    out.extend_from_slice(application_domain);
    out.push(format);
    out.push(1);
    out.extend_from_slice(signer);
    // OFFCHAIN_MAX < 2^16.
    out.extend_from_slice(&(m.len() as u16).to_le_bytes());
    out.extend_from_slice(m);
    Ok(out)
}

/// A System transfer read back from a caller-supplied legacy message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Fee payer and source.
    pub from: [u8; 32],
    /// Recipient.
    pub to: [u8; 32],
    /// Amount.
    pub lamports: u64,
    /// Recent blockhash.
    pub blockhash: [u8; 32],
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], KeydError> {
        if self.0.len() < n {
            return Err(KeydError::BadRequest("the message is truncated".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn byte(&mut self) -> Result<u8, KeydError> {
        Ok(self.take(1)?[0])
    }
    fn compact(&mut self) -> Result<usize, KeydError> {
        let mut n = 0usize;
        for i in 0..3 {
            let b = self.byte()?;
            n |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(KeydError::BadRequest(
            "a compact-u16 is longer than 3 bytes".into(),
        ))
    }
}

/// Reads a caller-supplied message: it must be a legacy message holding exactly one System
/// Program transfer signed by `signer` alone. Versioned messages (v0, address lookup tables)
/// and durable-nonce transactions are refused.
///
/// # Errors
/// `Denied` (`solana_message`) for a refused kind, `BadRequest` for a malformed message.
pub fn read_transfer(message: &[u8], signer: &[u8; 32]) -> Result<Transfer, KeydError> {
    let deny = |m: &str| KeydError::Denied {
        reason: "solana_message",
        message: m.to_string(),
    };
    let mut r = Reader(message);
    let header = r.take(3)?;
    if header[0] & 0x80 != 0 {
        return Err(deny(
            "versioned (v0) messages with address lookup tables are refused; send a legacy message",
        ));
    }
    let n_keys = r.compact()?;
    if n_keys > 64 {
        return Err(KeydError::BadRequest("too many account keys".into()));
    }
    let keys: Vec<[u8; 32]> = (0..n_keys)
        .map(|_| r.take(32).map(|k| k.try_into().unwrap_or([0; 32])))
        .collect::<Result<_, _>>()?;
    let mut blockhash = [0u8; 32];
    blockhash.copy_from_slice(r.take(32)?);
    let n_ix = r.compact()?;
    let mut ixs = Vec::new();
    for _ in 0..n_ix.min(16) {
        let program = usize::from(r.byte()?);
        let n = r.compact()?;
        let accounts = r.take(n)?.to_vec();
        let len = r.compact()?;
        ixs.push((program, accounts, r.take(len)?.to_vec()));
    }
    if n_ix > 16 || !r.0.is_empty() {
        return Err(KeydError::BadRequest(
            "the message has trailing bytes or too many instructions".into(),
        ));
    }
    let is_system = |p: usize| keys.get(p) == Some(&SYSTEM_PROGRAM);
    let tag = |d: &[u8]| {
        d.get(..4)
            .map(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]))
    };
    if let Some((p, _, d)) = ixs.first() {
        if is_system(*p) && tag(d) == Some(ADVANCE_NONCE) {
            return Err(deny(
                "durable-nonce transactions are refused; use a recent blockhash",
            ));
        }
    }
    let [(p, accounts, data)] = ixs.as_slice() else {
        return Err(deny(
            "only a message with exactly one System Program transfer is signed",
        ));
    };
    if !is_system(*p) || tag(data) != Some(TRANSFER) || data.len() != 12 || accounts.len() != 2 {
        return Err(deny(
            "only a message with exactly one System Program transfer is signed",
        ));
    }
    if header != [1, 0, 1] || keys.first() != Some(signer) {
        return Err(deny("the wallet must be the only signer and the fee payer"));
    }
    let (from, to) = match (
        keys.get(usize::from(accounts[0])),
        keys.get(usize::from(accounts[1])),
    ) {
        (Some(f), Some(t)) => (*f, *t),
        _ => {
            return Err(KeydError::BadRequest(
                "an account index is out of range".into(),
            ))
        }
    };
    if &from != signer {
        return Err(deny("the transfer's source must be the wallet"));
    }
    let mut l = [0u8; 8];
    l.copy_from_slice(&data[4..12]);
    let t = Transfer {
        from,
        to,
        lamports: u64::from_le_bytes(l),
        blockhash,
    };
    // Only the canonical layout keyd itself builds is signed: no extra accounts or flags.
    if transfer_message(&t.from, &t.to, t.lamports, &t.blockhash)? != message {
        return Err(deny("the transfer is not in the canonical legacy layout (3 accounts: wallet, recipient, System Program)"));
    }
    Ok(t)
}
