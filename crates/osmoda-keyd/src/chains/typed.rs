//! What an EIP-712 signature authorises. A permit is a bearer instrument: whoever holds the
//! signature can call `permit()` (or Permit2) and then move the tokens, so it is judged like
//! the `approve` it stands for. Everything else is opaque to keyd and signed only for a domain
//! the policy lists (`policy.chains.ethereum.typed_data`).
//!
//! Recognised (by `primaryType` and field shape, read from the values the digest is computed
//! over):
//! * EIP-2612 `Permit(owner, spender, value, nonce, deadline)`: token = `verifyingContract`;
//! * DAI `Permit(holder, spender, nonce, expiry, allowed)`: `allowed = true` is unlimited,
//!   `false` a revocation (amount 0);
//! * Permit2 `PermitSingle`, `PermitBatch`, `PermitTransferFrom`, `PermitBatchTransferFrom`,
//!   `PermitWitnessTransferFrom`, `PermitBatchWitnessTransferFrom`: token and amount from
//!   `details` / `permitted` (a batch of exactly one; a batch of several tokens is refused, one
//!   signature is judged against one token's limits).
//!
//! Any other `primaryType` containing "permit" (any case) is refused as unreadable: its shape
//! is not one keyd knows, so it cannot say what it grants.

use alloy_dyn_abi::{DynSolValue, TypedData};
use alloy_primitives::{Address, U256};

use crate::error::KeydError;

/// What an EIP-712 message authorises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorises {
    /// An allowance of `amount` base units of ERC-20 `token` to `spender`.
    Permit {
        /// `erc20_permit` (EIP-2612, DAI) or `permit2`.
        kind: &'static str,
        /// The token contract.
        token: Address,
        /// Who may move the tokens.
        spender: Address,
        /// Base units (`U256::MAX` for DAI's `allowed = true`).
        amount: U256,
    },
    /// Nothing keyd can judge: allowed only for a listed domain.
    Opaque,
}

fn deny(message: String) -> KeydError {
    KeydError::Denied {
        reason: "typed_data",
        message,
    }
}

/// The named field of a struct value.
fn field<'a>(v: &'a DynSolValue, name: &str) -> Option<&'a DynSolValue> {
    match v {
        DynSolValue::CustomStruct {
            prop_names, tuple, ..
        } => prop_names
            .iter()
            .position(|p| p == name)
            .and_then(|i| tuple.get(i)),
        _ => None,
    }
}

fn address(v: &DynSolValue, name: &str) -> Option<Address> {
    field(v, name).and_then(DynSolValue::as_address)
}

fn uint(v: &DynSolValue, name: &str) -> Option<U256> {
    field(v, name).and_then(|f| f.as_uint()).map(|(n, _)| n)
}

/// `{token, amount}` of a Permit2 `PermitDetails` / `TokenPermissions`, or of the one element
/// of a batch of them.
fn one_token(v: &DynSolValue, name: &str, primary: &str) -> Result<(Address, U256), KeydError> {
    let f = field(v, name).ok_or_else(|| {
        deny(format!(
            "{primary} without `{name}`: not the Permit2 shape keyd knows, refused"
        ))
    })?;
    let item = match f.as_array() {
        Some([one]) => one,
        Some(many) => {
            return Err(deny(format!(
                "{primary} over {} tokens is refused: one signature is judged against one token's limits; sign one permit per token",
                many.len()
            )))
        }
        None => f,
    };
    match (address(item, "token"), uint(item, "amount")) {
        (Some(t), Some(a)) => Ok((t, a)),
        _ => Err(deny(format!(
            "{primary}.{name} has no `token` address and `amount`: refused"
        ))),
    }
}

/// Classifies `data` (already known to encode).
///
/// # Errors
/// `BadRequest` when the message does not match its types; `Denied` (`typed_data`) for a
/// permit-like type keyd cannot read or a multi-token batch.
pub fn classify(data: &TypedData) -> Result<Authorises, KeydError> {
    let primary = data.primary_type.as_str();
    if !primary.to_ascii_lowercase().contains("permit") {
        return Ok(Authorises::Opaque);
    }
    let v = data
        .coerce()
        .map_err(|e| KeydError::BadRequest(format!("typed data does not encode: {e}")))?;
    let spender = address(&v, "spender").ok_or_else(|| {
        deny(format!(
            "{primary} has no `spender` address: a permit keyd cannot read is refused"
        ))
    })?;
    let domain_token = || {
        data.domain.verifying_contract.ok_or_else(|| {
            deny(format!(
                "{primary} without domain.verifyingContract: the token is unknown, refused"
            ))
        })
    };
    let (kind, token, amount) = match primary {
        "Permit" if field(&v, "owner").is_some() && uint(&v, "value").is_some() => (
            "erc20_permit",
            domain_token()?,
            uint(&v, "value").unwrap_or(U256::MAX),
        ),
        "Permit" if field(&v, "holder").is_some() => {
            let allowed = field(&v, "allowed")
                .and_then(DynSolValue::as_bool)
                .ok_or_else(|| deny("DAI-style Permit without a bool `allowed`: refused".into()))?;
            let amount = if allowed { U256::MAX } else { U256::ZERO };
            ("erc20_permit", domain_token()?, amount)
        }
        "PermitSingle" | "PermitBatch" => {
            let (t, a) = one_token(&v, "details", primary)?;
            ("permit2", t, a)
        }
        "PermitTransferFrom"
        | "PermitBatchTransferFrom"
        | "PermitWitnessTransferFrom"
        | "PermitBatchWitnessTransferFrom" => {
            let (t, a) = one_token(&v, "permitted", primary)?;
            ("permit2", t, a)
        }
        _ => {
            return Err(deny(format!(
                "primaryType {primary:?} looks like a permit but is not one keyd can read (EIP-2612, DAI, Permit2): refused"
            )))
        }
    };
    Ok(Authorises::Permit {
        kind,
        token,
        spender,
        amount,
    })
}
