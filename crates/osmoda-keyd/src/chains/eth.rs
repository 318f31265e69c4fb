//! Ethereum: addresses, EIP-191 `personal_sign`, EIP-712 typed data, and EIP-155 legacy /
//! EIP-1559 transactions encoded per EIP-2718, all with alloy (k256 underneath). There is no
//! raw-hash signing: every digest is computed here from a structure the policy has seen.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope, TxLegacy};
use alloy_dyn_abi::{DynSolType, DynSolValue, TypedData};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{keccak256, Address, Bytes, Signature, TxKind, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::KeydError;

/// A loaded secp256k1 key. The signer holds the scalar; it is dropped (and k256 zeroizes its
/// `SigningKey`) as soon as the one operation it was loaded for is done.
pub struct EthKey(PrivateKeySigner);

impl EthKey {
    /// Loads a 32-byte secret key.
    ///
    /// # Errors
    /// `BadRequest` when the bytes are not a valid secp256k1 scalar (zero or ≥ the group order).
    pub fn from_secret(secret: &Zeroizing<[u8; 32]>) -> Result<EthKey, KeydError> {
        PrivateKeySigner::from_bytes(&B256::from(**secret))
            .map(EthKey)
            .map_err(|_| KeydError::BadRequest("not a valid secp256k1 private key".into()))
    }

    /// The key's address.
    pub fn address(&self) -> Address {
        self.0.address()
    }

    /// EIP-191 `personal_sign` of `message`: 65 bytes `r‖s‖v` with v = 27/28.
    ///
    /// # Errors
    /// `Internal` if k256 fails (it does not for valid keys).
    pub fn personal_sign(&self, message: &[u8]) -> Result<Signature, KeydError> {
        self.0
            .sign_message_sync(message)
            .map_err(|e| KeydError::Internal(format!("secp256k1 signing failed: {e}")))
    }

    /// Signs an already-checked EIP-712 digest or transaction signing hash; private so that
    /// only structures parsed in this module can reach it.
    fn sign_digest(&self, digest: &B256) -> Result<Signature, KeydError> {
        self.0
            .sign_hash_sync(digest)
            .map_err(|e| KeydError::Internal(format!("secp256k1 signing failed: {e}")))
    }

    /// Signs typed data (its digest is recomputed here from the structure).
    ///
    /// # Errors
    /// `BadRequest` when the typed data does not encode.
    pub fn sign_typed(&self, data: &TypedData) -> Result<(B256, Signature), KeydError> {
        let digest = typed_digest(data)?;
        Ok((digest, self.sign_digest(&digest)?))
    }

    /// Signs a transaction: returns its hash and the EIP-2718 encoding of the signed
    /// transaction (for legacy: RLP with v = chain_id·2 + 35 + parity).
    ///
    /// # Errors
    /// `Internal` if signing fails.
    pub fn sign_tx(&self, tx: &EthTx) -> Result<SignedTx, KeydError> {
        let (hash, raw) = match tx {
            EthTx::Legacy(t) => {
                let sig = self.sign_digest(&t.signature_hash())?;
                let env = TxEnvelope::from(t.clone().into_signed(sig));
                (*env.tx_hash(), env.encoded_2718())
            }
            EthTx::Eip1559(t) => {
                let sig = self.sign_digest(&t.signature_hash())?;
                let env = TxEnvelope::from(t.clone().into_signed(sig));
                (*env.tx_hash(), env.encoded_2718())
            }
        };
        Ok(SignedTx { hash, raw })
    }
}

/// A signed transaction, ready to broadcast (keyd never does).
#[derive(Debug, Clone)]
pub struct SignedTx {
    /// Transaction hash (keccak256 of the EIP-2718 encoding).
    pub hash: B256,
    /// EIP-2718 encoding.
    pub raw: Vec<u8>,
}

/// The EIP-712 signing digest of `data`.
///
/// # Errors
/// `BadRequest` naming what does not encode.
pub fn typed_digest(data: &TypedData) -> Result<B256, KeydError> {
    data.eip712_signing_hash()
        .map_err(|e| KeydError::BadRequest(format!("typed data does not encode: {e}")))
}

/// `personal_sign` signs text only. A message of exactly 32 bytes is refused whatever its
/// bytes: contracts accept `personal_sign` of a 32-byte digest as the signer's authorisation
/// of whatever the digest stands for (a Safe transaction with `v + 4`, 0x `EthSign` and other
/// exchange orders), so it would be raw-hash signing by another name; a hash ground until
/// its bytes are printable is still one. Bytes that are not UTF-8 are refused too: keyd cannot
/// say what a contract reads into them.
///
/// # Errors
/// `Denied` (`personal_sign`) saying which rule and what to send instead.
pub fn check_personal(message: &[u8]) -> Result<(), KeydError> {
    let deny = |m: String| KeydError::Denied {
        reason: "personal_sign",
        message: m,
    };
    if message.len() == 32 {
        return Err(deny("a 32-byte personal_sign message is what contracts accept as a signed hash (eth_sign-style approvals of Safe transactions and exchange orders); keyd signs no hashes: sign the structured data as typed_data, or text of another length".into()));
    }
    if std::str::from_utf8(message).is_err() {
        return Err(deny(format!("personal_sign signs text: the {} bytes of `message_hex` are not UTF-8, and keyd cannot judge what binary data authorises", message.len())));
    }
    Ok(())
}

/// The EIP-191 digest of `message` (`"\x19Ethereum Signed Message:\n" ‖ len ‖ message`).
pub fn personal_digest(message: &[u8]) -> B256 {
    alloy_primitives::eip191_hash_message(message)
}

/// A transaction keyd can sign. Chain-less legacy transactions cannot be expressed.
#[derive(Debug, Clone, PartialEq)]
pub enum EthTx {
    /// EIP-155 legacy transaction (chain id always set).
    Legacy(TxLegacy),
    /// EIP-1559 transaction.
    Eip1559(TxEip1559),
}

impl EthTx {
    /// The EIP-155 chain id.
    pub fn chain_id(&self) -> u64 {
        match self {
            EthTx::Legacy(t) => t.chain_id.unwrap_or_default(),
            EthTx::Eip1559(t) => t.chain_id,
        }
    }

    /// The nonce: its place among the wallet's transactions.
    pub fn nonce(&self) -> u64 {
        match self {
            EthTx::Legacy(t) => t.nonce,
            EthTx::Eip1559(t) => t.nonce,
        }
    }

    /// The recipient (`None` for a contract creation, which the policy refuses).
    pub fn to(&self) -> Option<Address> {
        match self {
            EthTx::Legacy(t) => t.to.to().copied(),
            EthTx::Eip1559(t) => t.to.to().copied(),
        }
    }

    /// The most this transaction can pay in fees, in wei: `gas_limit × gas_price` (legacy) or
    /// `gas_limit × max_fee_per_gas` (EIP-1559; the base fee burnt plus the tip never exceed it).
    pub fn max_fee(&self) -> U256 {
        let (gas, price) = match self {
            EthTx::Legacy(t) => (t.gas_limit, t.gas_price),
            EthTx::Eip1559(t) => (t.gas_limit, t.max_fee_per_gas),
        };
        U256::from(gas) * U256::from(price)
    }

    /// Native value in wei.
    pub fn value(&self) -> U256 {
        match self {
            EthTx::Legacy(t) => t.value,
            EthTx::Eip1559(t) => t.value,
        }
    }

    /// Calldata.
    pub fn input(&self) -> &[u8] {
        match self {
            EthTx::Legacy(t) => &t.input,
            EthTx::Eip1559(t) => &t.input,
        }
    }

    /// The hash that is signed.
    pub fn signature_hash(&self) -> B256 {
        match self {
            EthTx::Legacy(t) => t.signature_hash(),
            EthTx::Eip1559(t) => t.signature_hash(),
        }
    }
}

/// A transaction as callers write it (JSON). Integers that can exceed 2^53 (wei, gas prices)
/// are decimal strings; nonce and gas limit may be JSON numbers or decimal strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxRequest {
    /// `eip1559` (default) or `legacy` (always EIP-155).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// EIP-155 chain id; `None` = the policy's only allowed chain id.
    pub chain_id: Option<u64>,
    /// Account nonce.
    pub nonce: Num,
    /// Recipient (required: contract creation is refused).
    pub to: String,
    /// Value in wei (decimal string).
    #[serde(default)]
    pub value: Option<Num>,
    /// Calldata as 0x-hex (only ERC-20 `transfer`/`approve` pass the policy).
    #[serde(default)]
    pub data: Option<String>,
    /// Gas limit.
    pub gas_limit: Num,
    /// Legacy: gas price in wei.
    #[serde(default)]
    pub gas_price: Option<Num>,
    /// EIP-1559: max fee per gas in wei.
    #[serde(default)]
    pub max_fee_per_gas: Option<Num>,
    /// EIP-1559: max priority fee per gas in wei.
    #[serde(default)]
    pub max_priority_fee_per_gas: Option<Num>,
    /// EIP-7702 authorizations: always refused (present only to say so clearly).
    #[serde(default)]
    pub authorization_list: Option<serde_json::Value>,
}

/// A non-negative integer written as a JSON number or a decimal string. (Deserialized through
/// `serde_json::Value`, because the workspace's `arbitrary_precision` numbers do not survive
/// serde's untagged buffering.)
#[derive(Debug, Clone)]
pub enum Num {
    /// A JSON number (its exact digits).
    Int(String),
    /// A decimal string.
    Str(String),
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => Ok(Num::Int(n.to_string())),
            serde_json::Value::String(s) => Ok(Num::Str(s)),
            other => Err(serde::de::Error::custom(format!(
                "expected a non-negative integer or a decimal string, got {other}"
            ))),
        }
    }
}

impl Num {
    /// The value as u128.
    ///
    /// # Errors
    /// `BadRequest` naming `field` when not a decimal integer or too large.
    pub fn u128(&self, field: &str) -> Result<u128, KeydError> {
        match self {
            Num::Int(s) | Num::Str(s) => parse_decimal(s, field),
        }
    }

    /// The value as u64.
    ///
    /// # Errors
    /// `BadRequest` when it does not fit.
    pub fn u64(&self, field: &str) -> Result<u64, KeydError> {
        u64::try_from(self.u128(field)?)
            .map_err(|_| KeydError::BadRequest(format!("`{field}` does not fit in 64 bits")))
    }
}

/// Parses a decimal string of base units into u128.
///
/// # Errors
/// `BadRequest` naming `field`: empty, not digits, or more than 128 bits.
pub fn parse_decimal(s: &str, field: &str) -> Result<u128, KeydError> {
    if s.is_empty() || s.len() > 40 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(KeydError::BadRequest(format!(
            "`{field}` must be a decimal string of base units, e.g. \"1000\" (got {:?})",
            s.chars().take(48).collect::<String>()
        )));
    }
    s.parse::<u128>()
        .map_err(|_| KeydError::BadRequest(format!("`{field}` {s} does not fit in 128 bits")))
}

/// Parses a 0x-prefixed 20-byte address (any case; a mixed-case one must carry a valid
/// EIP-55 checksum).
///
/// # Errors
/// `BadRequest` naming `field`.
pub fn parse_address(s: &str, field: &str) -> Result<Address, KeydError> {
    let bad = || {
        KeydError::BadRequest(format!(
            "`{field}` must be a 0x-prefixed 20-byte hex address (got {:?})",
            s.chars().take(64).collect::<String>()
        ))
    };
    let hex = s.strip_prefix("0x").ok_or_else(bad)?;
    if hex.len() != 40 {
        return Err(bad());
    }
    let mixed =
        hex.bytes().any(|b| b.is_ascii_lowercase()) && hex.bytes().any(|b| b.is_ascii_uppercase());
    if mixed {
        Address::parse_checksummed(s, None).map_err(|_| {
            KeydError::BadRequest(format!("`{field}` {s} has a wrong EIP-55 checksum"))
        })
    } else {
        s.parse().map_err(|_| bad())
    }
}

/// Parses 0x-hex bytes.
///
/// # Errors
/// `BadRequest` naming `field`.
pub fn parse_hex(s: &str, field: &str) -> Result<Vec<u8>, KeydError> {
    let h = s.strip_prefix("0x").unwrap_or(s);
    hex::decode(h).map_err(|e| KeydError::BadRequest(format!("`{field}` is not valid hex: {e}")))
}

impl TxRequest {
    /// Builds the transaction; `default_chain_id` comes from the policy when the request has
    /// none.
    ///
    /// # Errors
    /// `BadRequest` for a missing or malformed field, `Denied` for EIP-7702 authorizations.
    pub fn build(&self, default_chain_id: Option<u64>) -> Result<EthTx, KeydError> {
        if self.authorization_list.is_some() {
            return Err(KeydError::Denied {
                reason: "eip7702",
                message: "EIP-7702 authorizations are refused: they hand the account's code to a contract".into(),
            });
        }
        let chain_id = self.chain_id.or(default_chain_id).ok_or_else(|| {
            KeydError::BadRequest(
                "`chain_id` is required (the policy allows several chain ids)".into(),
            )
        })?;
        if chain_id == 0 {
            return Err(KeydError::BadRequest("`chain_id` must not be 0".into()));
        }
        let to = TxKind::Call(parse_address(&self.to, "to")?);
        let value = U256::from(self.value.as_ref().map_or(Ok(0), |v| v.u128("value"))?);
        let input = Bytes::from(match &self.data {
            Some(d) => parse_hex(d, "data")?,
            None => Vec::new(),
        });
        let nonce = self.nonce.u64("nonce")?;
        let gas_limit = self.gas_limit.u64("gas_limit")?;
        let need = |n: &Option<Num>, f: &str| -> Result<u128, KeydError> {
            n.as_ref()
                .ok_or_else(|| {
                    KeydError::BadRequest(format!("`{f}` is required for this transaction type"))
                })?
                .u128(f)
        };
        let forbid = |n: &Option<Num>, f: &str, kind: &str| -> Result<(), KeydError> {
            match n {
                Some(_) => Err(KeydError::BadRequest(format!(
                    "`{f}` does not belong to a {kind} transaction"
                ))),
                None => Ok(()),
            }
        };
        match self.kind.as_deref().unwrap_or("eip1559") {
            "legacy" => {
                forbid(&self.max_fee_per_gas, "max_fee_per_gas", "legacy")?;
                forbid(&self.max_priority_fee_per_gas, "max_priority_fee_per_gas", "legacy")?;
                Ok(EthTx::Legacy(TxLegacy {
                    chain_id: Some(chain_id),
                    nonce,
                    gas_price: need(&self.gas_price, "gas_price")?,
                    gas_limit,
                    to,
                    value,
                    input,
                }))
            }
            "eip1559" => {
                forbid(&self.gas_price, "gas_price", "eip1559")?;
                let max_fee = need(&self.max_fee_per_gas, "max_fee_per_gas")?;
                let prio = need(&self.max_priority_fee_per_gas, "max_priority_fee_per_gas")?;
                if prio > max_fee {
                    return Err(KeydError::BadRequest(
                        "`max_priority_fee_per_gas` exceeds `max_fee_per_gas`".into(),
                    ));
                }
                Ok(EthTx::Eip1559(TxEip1559 {
                    chain_id,
                    nonce,
                    gas_limit,
                    max_fee_per_gas: max_fee,
                    max_priority_fee_per_gas: prio,
                    to,
                    value,
                    access_list: Default::default(),
                    input,
                }))
            }
            other => Err(KeydError::BadRequest(format!(
                "transaction type {other:?} is not supported: use \"eip1559\" or \"legacy\" (EIP-155)"
            ))),
        }
    }
}

/// What a transaction's calldata does, as far as the policy is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// No calldata: a plain transfer of the native value.
    Native,
    /// ERC-20 `transfer(to, amount)` on the token contract the transaction is sent to.
    Erc20Transfer {
        /// Recipient of the tokens.
        to: Address,
        /// Amount in the token's base units.
        amount: U256,
    },
    /// ERC-20 `approve(spender, amount)`.
    Erc20Approve {
        /// Spender allowed to move the tokens.
        spender: Address,
        /// Allowance in base units.
        amount: U256,
    },
}

/// Decodes calldata: empty, or exactly an ERC-20 `transfer`/`approve` call (strict ABI: the
/// encoding must round-trip). Anything else is refused by the policy.
///
/// # Errors
/// `Denied` (`calldata`) for any other call or a malformed encoding.
pub fn decode_call(input: &[u8]) -> Result<Call, KeydError> {
    if input.is_empty() {
        return Ok(Call::Native);
    }
    let deny = |m: String| KeydError::Denied {
        reason: "calldata",
        message: m,
    };
    let selector = input
        .get(..4)
        .ok_or_else(|| deny("calldata shorter than a selector".into()))?;
    let transfer = &keccak256("transfer(address,uint256)")[..4];
    let approve = &keccak256("approve(address,uint256)")[..4];
    if selector != transfer && selector != approve {
        return Err(deny(format!(
            "calldata selector 0x{} is not ERC-20 transfer or approve; other contract calls are refused",
            hex::encode(selector)
        )));
    }
    let ty = DynSolType::Tuple(vec![DynSolType::Address, DynSolType::Uint(256)]);
    let args = &input[4..];
    let val = ty
        .abi_decode_params(args)
        .map_err(|e| deny(format!("ERC-20 arguments do not decode: {e}")))?;
    if val.abi_encode_params() != args {
        return Err(deny(
            "ERC-20 arguments are not in canonical ABI form".into(),
        ));
    }
    let (addr, amount) = match val.as_tuple() {
        Some([DynSolValue::Address(a), DynSolValue::Uint(n, 256)]) => (*a, *n),
        _ => return Err(deny("ERC-20 arguments do not decode".into())),
    };
    Ok(if selector == transfer {
        Call::Erc20Transfer { to: addr, amount }
    } else {
        Call::Erc20Approve {
            spender: addr,
            amount,
        }
    })
}

/// The 65-byte `r‖s‖v` form (v = 27/28) as 0x-hex.
pub fn sig_hex(sig: &Signature) -> String {
    format!("0x{}", hex::encode(sig.as_bytes()))
}
