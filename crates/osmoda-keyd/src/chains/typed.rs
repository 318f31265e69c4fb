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
//!
//! A permit's time limits are part of what it grants and are read too ([`Terms`]): the
//! signature's deadline (EIP-2612 `deadline`, DAI `expiry` with 0 = never, Permit2 `sigDeadline`
//! or `deadline`), the allowance's end (Permit2 `details.expiration`, 0 = only the block it is
//! used in) and a witness's type. A permit without them is refused: keyd would not know how long
//! it lasts.

use alloy_dyn_abi::{DynSolValue, TypedData};
use alloy_primitives::{Address, U256};

use crate::error::KeydError;
use crate::policy::{Terms, Until};

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
        /// How long the signature and the allowance last, and a witness's type.
        terms: Terms,
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
/// of a batch of them, with that element (its `expiration`, for allowances).
fn one_token<'a>(
    v: &'a DynSolValue,
    name: &str,
    primary: &str,
) -> Result<(Address, U256, &'a DynSolValue), KeydError> {
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
        (Some(t), Some(a)) => Ok((t, a, item)),
        _ => Err(deny(format!(
            "{primary}.{name} has no `token` address and `amount`: refused"
        ))),
    }
}

/// Classifies `data` (already known to encode).
///
/// # Errors
/// `BadRequest` when the message does not match its types; `Denied` (`typed_data`) for a
/// permit-like type keyd cannot read, a permit without its deadline or expiration, or a
/// multi-token batch.
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
    // A time limit the permit must carry, read as a unix time.
    let time = |v: &DynSolValue, name: &str| {
        uint(v, name).ok_or_else(|| {
            deny(format!(
                "{primary} without a uint `{name}`: keyd cannot say how long it lasts, refused"
            ))
        })
    };
    let mut terms = Terms::default();
    let (kind, token, amount) = match primary {
        "Permit" if field(&v, "owner").is_some() && uint(&v, "value").is_some() => {
            terms.signature_until = Some(Until::At(time(&v, "deadline")?));
            (
                "erc20_permit",
                domain_token()?,
                uint(&v, "value").unwrap_or(U256::MAX),
            )
        }
        "Permit" if field(&v, "holder").is_some() => {
            let allowed = field(&v, "allowed")
                .and_then(DynSolValue::as_bool)
                .ok_or_else(|| deny("DAI-style Permit without a bool `allowed`: refused".into()))?;
            let amount = if allowed { U256::MAX } else { U256::ZERO };
            // DAI: `expiry == 0 || now <= expiry`.
            let expiry = time(&v, "expiry")?;
            terms.signature_until = Some(if expiry.is_zero() {
                Until::Never
            } else {
                Until::At(expiry)
            });
            ("erc20_permit", domain_token()?, amount)
        }
        "PermitSingle" | "PermitBatch" => {
            let (t, a, item) = one_token(&v, "details", primary)?;
            // Permit2 AllowanceTransfer: an expiration of 0 means the block of use.
            let expiration = time(item, "expiration")?;
            terms.allowance_until = Some(if expiration.is_zero() {
                Until::UseBlock
            } else {
                Until::At(expiration)
            });
            terms.signature_until = Some(Until::At(time(&v, "sigDeadline")?));
            ("permit2", t, a)
        }
        "PermitTransferFrom"
        | "PermitBatchTransferFrom"
        | "PermitWitnessTransferFrom"
        | "PermitBatchWitnessTransferFrom" => {
            let (t, a, _) = one_token(&v, "permitted", primary)?;
            terms.signature_until = Some(Until::At(time(&v, "deadline")?));
            terms.witness = field(&v, "witness").map(|w| match w {
                DynSolValue::CustomStruct { name, .. } => name.clone(),
                _ => "(not a struct)".to_string(),
            });
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
        terms,
    })
}

/// Most struct types in one typed-data message (`types`, with `EIP712Domain`). Permits,
/// Permit2 with a witness and marketplace orders use fewer than 10.
pub const MAX_STRUCTS: usize = 64;
/// Most fields of one struct type.
pub const MAX_FIELDS: usize = 64;
/// Longest chain of struct types one refers to (`A {B b}`, `B {C c}`: 3).
pub const MAX_DEPTH: usize = 16;
/// Most array dimensions of one field (`uint256[][2]`: 2).
pub const MAX_DIMENSIONS: usize = 4;
/// Most JSON objects (struct values) in the message: each one's hash encodes its type with
/// all it refers to, so their number times the type graph bounds the work. A Seaport order
/// or a Permit2 batch has a few dozen.
pub const MAX_STRUCT_VALUES: usize = 256;
/// Most nodes in one struct type once every reference is resolved: the EIP-712 resolver
/// copies a referred type in full for each field that names it (no sharing), so
/// `size(T) = 1 + Σ fields (array dimensions + size(field type))` and a graph whose levels
/// refer to the next through F fields each grows as F^levels (a 2.5 KB request once took 19 s
/// and 1.3 GB). Permits, Permit2 with a witness and marketplace orders stay under 100.
pub const MAX_EXPANDED: usize = 4096;

/// Bounds the type graph of raw typed data before it is parsed: the EIP-712 encoder recurses
/// over struct references and array dimensions, so a deep chain of types (600 struct types in
/// 25 KB) would overflow a thread's stack. Checked without recursion: at most
/// [`MAX_STRUCTS`] struct types of at most [`MAX_FIELDS`] fields, [`MAX_DIMENSIONS`] array
/// dimensions per field, no type that refers to itself (directly or through others), at
/// most [`MAX_DEPTH`] struct types in any chain of references, at most [`MAX_EXPANDED`]
/// nodes in any struct type once resolved (the primary type, `EIP712Domain` and every type
/// they refer to), and at most [`MAX_STRUCT_VALUES`] objects in the message (the hashing work
/// grows with their number times the type graph).
///
/// # Errors
/// `BadRequest` naming the limit and the type; anything not shaped like `{types: {Name:
/// [{name, type}]}}` is left to the parser, which refuses it.
pub fn check_shape(data: &serde_json::Value) -> Result<(), KeydError> {
    // Counted without recursion; the body's JSON nesting is already bounded by the parser.
    let mut stack: Vec<&serde_json::Value> = data.get("message").into_iter().collect();
    let mut objects = 0usize;
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::Object(m) => {
                objects += 1;
                stack.extend(m.values());
            }
            serde_json::Value::Array(a) => stack.extend(a.iter()),
            _ => {}
        }
    }
    if objects > MAX_STRUCT_VALUES {
        return Err(KeydError::BadRequest(format!(
            "`payload.data.message` holds {objects} objects; at most {MAX_STRUCT_VALUES} struct values are signed"
        )));
    }
    let bad = |m: String| KeydError::BadRequest(format!("`payload.data.types`: {m}"));
    let Some(types) = data.get("types").and_then(serde_json::Value::as_object) else {
        return Ok(());
    };
    if types.len() > MAX_STRUCTS {
        return Err(bad(format!(
            "{} struct types; at most {MAX_STRUCTS} are signed",
            types.len()
        )));
    }
    let names: Vec<&str> = types.keys().map(String::as_str).collect();
    let index = |n: &str| names.iter().position(|m| *m == n);
    // refs[i]: the struct types type i refers to, once per field; size[i]: its resolved
    // size so far (itself, its fields' array dimensions and its primitive fields).
    let mut refs: Vec<Vec<usize>> = vec![Vec::new(); names.len()];
    let mut size = vec![1usize; names.len()];
    for (i, (name, fields)) in types.iter().enumerate() {
        let Some(fields) = fields.as_array() else {
            continue;
        };
        if fields.len() > MAX_FIELDS {
            return Err(bad(format!(
                "{name:?} has {} fields; at most {MAX_FIELDS}",
                fields.len()
            )));
        }
        for f in fields {
            let Some(ty) = f.get("type").and_then(serde_json::Value::as_str) else {
                continue;
            };
            let dims = ty.matches('[').count();
            if dims > MAX_DIMENSIONS {
                return Err(bad(format!(
                    "a field of {name:?} has {dims} array dimensions; at most {MAX_DIMENSIONS}"
                )));
            }
            let base = ty.split('[').next().unwrap_or(ty);
            size[i] = size[i].saturating_add(dims);
            match index(base) {
                Some(j) => refs[i].push(j),
                None => size[i] = size[i].saturating_add(1),
            }
        }
    }
    // Kahn's algorithm from the leaves: depth[i] = 1 + the deepest type i refers to, and
    // size[i] adds each referred type's size once per field naming it. A type left unvisited
    // lies on a cycle.
    let mut waiting: Vec<usize> = refs.iter().map(Vec::len).collect();
    let mut referrers: Vec<Vec<usize>> = vec![Vec::new(); names.len()];
    for (i, r) in refs.iter().enumerate() {
        for &j in r {
            referrers[j].push(i);
        }
    }
    let mut depth = vec![1usize; names.len()];
    let mut ready: Vec<usize> = (0..names.len()).filter(|&i| waiting[i] == 0).collect();
    let mut done = 0;
    while let Some(j) = ready.pop() {
        done += 1;
        if depth[j] > MAX_DEPTH {
            return Err(bad(format!(
                "{:?} starts a chain of {} struct types; at most {MAX_DEPTH}",
                names[j], depth[j]
            )));
        }
        if size[j] > MAX_EXPANDED {
            return Err(bad(format!(
                "{:?} expands to {} nodes once its struct types are resolved (each field copies the type it names); at most {MAX_EXPANDED}",
                names[j], size[j]
            )));
        }
        for &i in &referrers[j] {
            depth[i] = depth[i].max(depth[j] + 1);
            size[i] = size[i].saturating_add(size[j]);
            waiting[i] -= 1;
            if waiting[i] == 0 {
                ready.push(i);
            }
        }
    }
    if done < names.len() {
        // Every type left waiting refers to another left waiting: walking those references
        // as many steps as there are types ends on a cycle.
        let mut at = (0..names.len()).find(|&i| waiting[i] > 0).unwrap_or(0);
        for _ in 0..names.len() {
            at = refs[at]
                .iter()
                .copied()
                .find(|&j| waiting[j] > 0)
                .unwrap_or(at);
        }
        let on_cycle = names[at];
        return Err(bad(format!(
            "{on_cycle:?} refers to itself (directly or through other types); recursive types are not signed"
        )));
    }
    Ok(())
}
