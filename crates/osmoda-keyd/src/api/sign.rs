//! `/wallet/sign` and `/wallet/send`: parse → judge (policy) → approval ticket when above the
//! threshold → sign → charge the day's counters and record the receipt in one group commit
//! (`store::Store::charge`) → only then the signature is answered.

use std::sync::Arc;

use alloy_dyn_abi::{DynSolValue, TypedData};
use alloy_primitives::U256;
use axum::extract::{ConnectInfo, State};
use base64::Engine as _;
use osmoda_config::Chain;
use osmoda_daemon::server::PeerCred;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{caller, check_ticket_id, ApiError, Json};
use crate::chains::eth::{self, Call, Num, TxRequest};
use crate::chains::sol;
use crate::chains::typed::{self, Authorises};
use crate::error::KeydError;
use crate::keys::{Op, Output, Wallet};
use crate::policy::{self, Effect, Terms};
use crate::store::Receipt;
use crate::AppState;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Largest EIP-712 `data` accepted, in bytes of JSON: hashing costs grow with it (1.3 MB of
/// nested structs took 2.8 s of a core).
pub const MAX_TYPED_DATA: usize = 64 * 1024;

/// Body of `POST /wallet/sign`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignBody {
    /// The wallet.
    pub wallet_id: String,
    /// What to sign: an object with `type` (see docs/api.md).
    pub payload: Value,
    /// An approved ticket, for a transaction above the approval threshold.
    #[serde(default)]
    pub approval: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PersonalSign {
    #[serde(rename = "type")]
    _t: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    message_hex: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Typed {
    #[serde(rename = "type")]
    _t: String,
    data: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Transaction {
    #[serde(rename = "type")]
    _t: String,
    tx: TxRequest,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Text {
    #[serde(rename = "type")]
    _t: String,
    message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Offchain {
    #[serde(rename = "type")]
    _t: String,
    message: String,
    /// base58, 32 bytes; default 32 zero bytes (`11111111111111111111111111111111`).
    #[serde(default)]
    application_domain: Option<String>,
}

/// The payload as a `what` (`personal_sign`, ...); a refusal names the field, as the body's do.
fn parse<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T, KeydError> {
    osmoda_daemon::api::from_value_at("payload", v)
        .map_err(|e| KeydError::BadRequest(format!("{e} (a {what} payload)")))
}

fn chain_mismatch(w: &Wallet, ty: &str) -> KeydError {
    KeydError::BadRequest(format!(
        "payload type {ty:?} does not apply to {} wallet ({})",
        match w.chain {
            Chain::Ethereum => "an Ethereum",
            Chain::Solana => "a Solana",
        },
        match w.chain {
            Chain::Ethereum => "personal_sign, typed_data or transaction",
            Chain::Solana => "solana_message or offchain_message",
        }
    ))
}

fn amount_u128(v: U256, what: &str) -> Result<u128, KeydError> {
    u128::try_from(v)
        .map_err(|_| KeydError::BadRequest(format!("{what} {v} does not fit in 128 bits")))
}

/// The one EIP-155 chain id the policy allows, used when a request names none.
///
/// # Errors
/// `Denied` (`config`) while the policy file is invalid.
fn default_chain_id(st: &AppState) -> Result<Option<u64>, KeydError> {
    let p = st.policy()?;
    Ok(
        match p
            .chains
            .get(&Chain::Ethereum)
            .map(|c| c.chain_ids.as_slice())
        {
            Some([one]) => Some(*one),
            _ => None,
        },
    )
}

/// Judges an Ethereum transaction's effect from its calldata.
fn tx_effect(tx: &eth::EthTx) -> Result<Effect, KeydError> {
    let contract = tx.to().map(|a| a.to_string().to_ascii_lowercase());
    let base = Effect {
        chain: Chain::Ethereum,
        kind: "transfer",
        chain_id: Some(tx.chain_id()),
        to: contract.clone(),
        token: None,
        amount: amount_u128(tx.value(), "value")?,
        fee: amount_u128(tx.max_fee(), "gas_limit × fee per gas")?,
        unbounded: None,
        primary_type: None,
        terms: Terms {
            nonce: Some(tx.nonce()),
            signed: Some(tx.signature_hash()),
            ..Terms::default()
        },
    };
    let token = |kind, to: alloy_primitives::Address, amount| -> Result<Effect, KeydError> {
        if !tx.value().is_zero() {
            return Err(KeydError::Denied {
                reason: "calldata",
                message: "an ERC-20 call that also sends ether is refused".into(),
            });
        }
        // An amount beyond 128 bits (an unlimited approval) is kept exactly and denied by
        // the policy with a receipt.
        Ok(Effect {
            kind,
            to: Some(to.to_string().to_ascii_lowercase()),
            token: contract.clone(),
            ..base.clone()
        }
        .with_amount(amount))
    };
    match eth::decode_call(tx.input())? {
        Call::Native => Ok(base),
        Call::Erc20Transfer { to, amount } => token("erc20_transfer", to, amount),
        Call::Erc20Approve { spender, amount } => token("erc20_approve", spender, amount),
    }
}

/// Parses `payload` for `w` into its effect and the operation to sign.
fn prepare_sign(st: &AppState, w: &Wallet, payload: Value) -> Result<(Effect, Op), KeydError> {
    let ty = payload
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| KeydError::BadRequest("payload needs a string `type`: personal_sign, typed_data, transaction, solana_message or offchain_message".into()))?
        .to_string();
    let msg = |kind, chain_id, to| Effect {
        chain: w.chain,
        kind,
        chain_id,
        to,
        token: None,
        amount: 0,
        fee: 0,
        unbounded: None,
        primary_type: None,
        terms: Terms::default(),
    };
    match (ty.as_str(), w.chain) {
        ("personal_sign", Chain::Ethereum) => {
            let p: PersonalSign = parse(payload, "personal_sign")?;
            let bytes = match (p.message, p.message_hex) {
                (Some(m), None) => m.into_bytes(),
                (None, Some(h)) => eth::parse_hex(&h, "message_hex")?,
                _ => return Err(KeydError::BadRequest("personal_sign needs exactly one of `message` (text) or `message_hex`".into())),
            };
            // A refusal by shape is a denial with its receipt, like the policy's.
            eth::check_personal(&bytes)?;
            Ok((msg("personal_sign", None, None), Op::EthPersonal(bytes)))
        }
        ("typed_data", Chain::Ethereum) => {
            let p: Typed = parse(payload, "typed_data")?;
            let size = serde_json::to_vec(&p.data).map_or(usize::MAX, |v| v.len());
            if size > MAX_TYPED_DATA {
                return Err(KeydError::BadRequest(format!("`payload.data` is {size} bytes of JSON; typed data is limited to {MAX_TYPED_DATA} (what wallets and dApps sign is a few KiB)")));
            }
            // Before alloy's encoder, which recurses over the type graph.
            typed::check_shape(&p.data)?;
            let data: TypedData = osmoda_daemon::api::from_value_at("payload.data", p.data)
                .map_err(|e| KeydError::BadRequest(format!("not EIP-712 typed data: {e}")))?;
            let digest = eth::typed_digest(&data)?;
            let chain_id = match data.domain.chain_id {
                Some(id) => Some(u64::try_from(id).map_err(|_| KeydError::BadRequest(format!("domain.chainId {id} does not fit in 64 bits")))?),
                None => None,
            };
            let to = data.domain.verifying_contract.map(|a| a.to_string().to_ascii_lowercase());
            let exact = Terms { signed: Some(digest), ..Terms::default() };
            let effect = match typed::classify(&data)? {
                Authorises::Opaque => Effect { primary_type: Some(data.primary_type.clone()), terms: exact, ..msg("typed_data", chain_id, to) },
                Authorises::Permit { kind, token, spender, amount, terms } => Effect {
                    to: Some(spender.to_string().to_ascii_lowercase()),
                    token: Some(token.to_string().to_ascii_lowercase()),
                    primary_type: Some(data.primary_type.clone()),
                    terms: Terms { signed: Some(digest), ..terms },
                    ..msg(kind, chain_id, None)
                }
                .with_amount(amount),
            };
            Ok((effect, Op::EthTyped(Box::new(data))))
        }
        ("transaction", Chain::Ethereum) => {
            let p: Transaction = parse(payload, "transaction")?;
            let tx = p.tx.build(default_chain_id(st)?)?;
            Ok((tx_effect(&tx)?, Op::EthTx(tx)))
        }
        ("solana_message", Chain::Solana) => {
            let p: Text = parse(payload, "solana_message")?;
            let bytes = B64.decode(p.message.as_bytes()).map_err(|e| KeydError::BadRequest(format!("`message` is not base64: {e}")))?;
            let from = sol::parse_pubkey(&w.address, "wallet address")?;
            // The reader's own words ("the message is truncated") say what, not where.
            let t = sol::read_transfer(&bytes, &from).map_err(|e| match e {
                KeydError::BadRequest(m) => KeydError::BadRequest(format!(
                    "`payload.message` is not a Solana transfer keyd can sign: {m} (a legacy message with one System transfer from the wallet; docs/api.md)"
                )),
                other => other,
            })?;
            let e = Effect {
                chain: Chain::Solana,
                kind: "transfer",
                chain_id: None,
                to: Some(bs58::encode(t.to).into_string()),
                token: None,
                amount: u128::from(t.lamports),
                fee: sol::FEE_PER_SIGNATURE,
                unbounded: None,
                primary_type: None,
                terms: Terms::default(),
            };
            Ok((e, Op::SolTransfer(bytes)))
        }
        ("offchain_message", Chain::Solana) => {
            let p: Offchain = parse(payload, "offchain_message")?;
            let application_domain = match &p.application_domain {
                Some(d) => sol::parse_pubkey(d, "payload.application_domain")?,
                None => [0; 32],
            };
            // The rules (length, format) do not depend on the signer, which the key supplies.
            sol::offchain_bytes(&p.message, &[0; 32], &application_domain)?;
            Ok((msg("offchain_message", None, None), Op::SolOffchain { message: p.message, application_domain }))
        }
        ("personal_sign" | "typed_data" | "transaction" | "solana_message" | "offchain_message", _) => Err(chain_mismatch(w, &ty)),
        _ => Err(KeydError::BadRequest(format!(
            "payload type {ty:?} is not one of personal_sign, typed_data, transaction (Ethereum), solana_message, offchain_message (Solana); raw hashes are never signed"
        ))),
    }
}

/// Body of `POST /wallet/send`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    /// The wallet.
    pub wallet_id: String,
    /// Recipient (0x address or base58).
    pub to: String,
    /// Amount in base units (wei, lamports, or token units with `token`), decimal string.
    pub amount: Num,
    /// Ethereum: ERC-20 contract to transfer tokens of.
    #[serde(default)]
    pub token: Option<String>,
    /// An approved ticket, above the approval threshold.
    #[serde(default)]
    pub approval: Option<String>,
    /// Ethereum: `eip1559` (default) or `legacy`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Ethereum: chain id (default: the policy's only one).
    #[serde(default)]
    pub chain_id: Option<u64>,
    /// Ethereum: nonce.
    #[serde(default)]
    pub nonce: Option<Num>,
    /// Ethereum: gas limit.
    #[serde(default)]
    pub gas_limit: Option<Num>,
    /// Ethereum legacy: gas price.
    #[serde(default)]
    pub gas_price: Option<Num>,
    /// Ethereum EIP-1559: max fee per gas.
    #[serde(default)]
    pub max_fee_per_gas: Option<Num>,
    /// Ethereum EIP-1559: max priority fee per gas.
    #[serde(default)]
    pub max_priority_fee_per_gas: Option<Num>,
    /// Solana: recent blockhash (base58).
    #[serde(default)]
    pub blockhash: Option<String>,
}

fn prepare_send(st: &AppState, w: &Wallet, b: SendBody) -> Result<(Effect, Op), KeydError> {
    let amount = b.amount.u128("amount")?;
    match w.chain {
        Chain::Ethereum => {
            if b.blockhash.is_some() {
                return Err(KeydError::BadRequest(
                    "`blockhash` belongs to Solana sends".into(),
                ));
            }
            let need = |n: Option<Num>, f: &str| {
                n.ok_or_else(|| KeydError::BadRequest(format!("`{f}` is required for an Ethereum send (keyd has no network to look it up)")))
            };
            let to = eth::parse_address(&b.to, "to")?;
            let (tx_to, value, data) = match &b.token {
                None => (b.to.clone(), Some(Num::Str(amount.to_string())), None),
                Some(t) => {
                    eth::parse_address(t, "token")?;
                    let args = DynSolValue::Tuple(vec![
                        DynSolValue::Address(to),
                        DynSolValue::Uint(U256::from(amount), 256),
                    ]);
                    let sel = &alloy_primitives::keccak256("transfer(address,uint256)")[..4];
                    (
                        t.clone(),
                        None,
                        Some(format!(
                            "0x{}{}",
                            hex::encode(sel),
                            hex::encode(args.abi_encode_params())
                        )),
                    )
                }
            };
            let req = TxRequest {
                kind: b.kind,
                chain_id: b.chain_id,
                nonce: need(b.nonce, "nonce")?,
                to: tx_to,
                value,
                data,
                gas_limit: need(b.gas_limit, "gas_limit")?,
                gas_price: b.gas_price,
                max_fee_per_gas: b.max_fee_per_gas,
                max_priority_fee_per_gas: b.max_priority_fee_per_gas,
                authorization_list: None,
            };
            let tx = req.build(default_chain_id(st)?)?;
            Ok((tx_effect(&tx)?, Op::EthTx(tx)))
        }
        Chain::Solana => {
            let eth_only = [
                ("token", b.token.is_some()),
                ("type", b.kind.is_some()),
                ("chain_id", b.chain_id.is_some()),
                ("nonce", b.nonce.is_some()),
                ("gas_limit", b.gas_limit.is_some()),
                ("gas_price", b.gas_price.is_some()),
                ("max_fee_per_gas", b.max_fee_per_gas.is_some()),
                (
                    "max_priority_fee_per_gas",
                    b.max_priority_fee_per_gas.is_some(),
                ),
            ];
            if let Some((f, _)) = eth_only.iter().find(|(_, set)| *set) {
                return Err(KeydError::BadRequest(format!(
                    "`{f}` belongs to Ethereum sends"
                )));
            }
            let lamports = u64::try_from(amount).map_err(|_| {
                KeydError::BadRequest(format!("amount {amount} lamports does not fit in 64 bits"))
            })?;
            let from = sol::parse_pubkey(&w.address, "wallet address")?;
            let to = sol::parse_pubkey(&b.to, "to")?;
            let bh = b.blockhash.ok_or_else(|| {
                KeydError::BadRequest(
                    "`blockhash` (a recent blockhash, base58) is required for a Solana send".into(),
                )
            })?;
            let blockhash = sol::parse_pubkey(&bh, "blockhash")?;
            let message = sol::transfer_message(&from, &to, lamports, &blockhash)?;
            let e = Effect {
                chain: Chain::Solana,
                kind: "transfer",
                chain_id: None,
                to: Some(b.to),
                token: None,
                amount,
                fee: sol::FEE_PER_SIGNATURE,
                unbounded: None,
                primary_type: None,
                terms: Terms::default(),
            };
            Ok((e, Op::SolTransfer(message)))
        }
    }
}

async fn wallet(st: &Arc<AppState>, id: String) -> Result<Wallet, KeydError> {
    let st = Arc::clone(st);
    tokio::task::spawn_blocking(move || st.store.get(&id))
        .await
        .map_err(KeydError::internal)?
}

/// Judges, gets the approval when needed, signs, and charges with the receipt; returns the
/// answer only once the charge is durable. Every denial is a receipt.
async fn authorize_and_sign(
    st: &Arc<AppState>,
    peer: &PeerCred,
    op_name: &'static str,
    w: Wallet,
    prepared: Result<(Effect, Op), KeydError>,
    approval: Option<String>,
) -> Result<Value, KeydError> {
    let deny = |e: KeydError, effect: Option<&Effect>| {
        let st = Arc::clone(st);
        let payload = json!({
            "op": op_name, "wallet_id": w.id, "label": w.label, "chain": w.chain.as_str(),
            "effect": effect.map(|e| e.operation(op_name, &w.id)), "caller": caller(peer),
        });
        async move {
            if let KeydError::Denied { reason, message } = &e {
                let mut p = payload;
                p["reason"] = json!(reason);
                p["message"] = json!(message);
                st.denied(reason, &p).await;
            }
            e
        }
    };
    let (effect, op) = match prepared {
        Ok(x) => x,
        Err(e) => return Err(deny(e, None).await),
    };
    let verdict = match st
        .policy()
        .and_then(|p| policy::judge(&p, &w.label, &effect))
    {
        Ok(v) => v,
        Err(e) => return Err(deny(e, Some(&effect)).await),
    };
    let operation = effect.operation(op_name, &w.id);
    let day = st.day();
    // The receipt names a ticket only when keyd had agentd consume it for this operation; an
    // `approval` the policy did not need is not recorded (it proves nothing).
    let mut ticket: Option<String> = None;
    let mut hold = None;
    if verdict.needs_approval {
        let Some(t) = approval else {
            let words = vec![crate::words::describe(
                op_name, &effect, &w.label, &w.address,
            )];
            let t = st.agentd.open_ticket(&operation, &words).await?;
            let mut p = json!({ "op": op_name, "wallet_id": w.id, "reason": "approval_required", "effect": operation, "ticket": t.get("id"), "caller": caller(peer) });
            p["label"] = json!(w.label);
            st.denied("approval_required", &p).await;
            return Err(KeydError::ApprovalRequired {
                message: format!(
                    "above the approval threshold, a person must approve this exact operation: {}",
                    words[0]
                ),
                ticket: t,
            });
        };
        // Room under the limits is held before the ticket is used: every other charge counts
        // it, so once agentd has consumed the ticket the charge fits. When it does not fit
        // now, the ticket is left as it is.
        let (st2, day2, charges) = (Arc::clone(st), day.clone(), verdict.charges.clone());
        match tokio::task::spawn_blocking(move || st2.store.hold(&day2, &charges))
            .await
            .map_err(KeydError::internal)?
        {
            Ok(h) => hold = Some(h),
            Err(mut e) => {
                if let KeydError::Denied { message, .. } = &mut e {
                    message.push_str(&format!(
                        "; the approval ticket {t} was not used by this attempt (unless used before, it stays valid until it expires)"
                    ));
                }
                return Err(deny(e, Some(&effect)).await);
            }
        }
        ticket = Some(t);
    }
    // The signature is made first and kept here; it leaves only once its charge (and the
    // receipt with it) commits. A failure until then drops it unseen.
    let st2 = Arc::clone(st);
    let (effect2, peer2, used) = (effect.clone(), *peer, ticket.clone());
    let (signed, w) = tokio::task::spawn_blocking(move || {
        let signed = st2.backend.sign(&w, &op).map(|out| {
            let v = render(&w, &effect2, &out);
            let payload = receipt(&v, &peer2, used.as_deref());
            let r = Receipt {
                kind: op_name.to_string(),
                payload,
            };
            (v, r)
        });
        (signed, w)
    })
    .await
    .map_err(KeydError::internal)?;
    // Consuming the ticket and charging run in a task of their own: a caller who hangs up
    // after agentd consumed the ticket cannot leave the operation uncharged and unrecorded.
    let charged = match signed {
        Err(e) => Err(e),
        Ok((v, r)) => {
            let (st2, charges, op2, t) = (
                Arc::clone(st),
                verdict.charges.clone(),
                operation.clone(),
                ticket.clone(),
            );
            tokio::spawn(async move {
                if let Some(t) = &t {
                    st2.agentd.consume_ticket(t, &op2).await?;
                }
                tokio::task::spawn_blocking(move || match hold {
                    Some(h) => st2.store.charge_held(h, Some(r)),
                    None => st2.store.charge(&day, &charges, Some(r)),
                })
                .await
                .map_err(KeydError::internal)?
                .map(|()| v)
            })
            .await
            .map_err(KeydError::internal)?
        }
    };
    match charged {
        Ok(v) => {
            osmoda_daemon::metrics::global().keyd_signature(w.chain.as_str(), effect.kind);
            Ok(v)
        }
        Err(e) => {
            if let KeydError::Denied { reason, message } = &e {
                let p = json!({ "op": op_name, "wallet_id": w.id, "label": w.label, "chain": w.chain.as_str(),
                    "effect": operation, "caller": caller(peer), "reason": reason, "message": message });
                st.denied(reason, &p).await;
            }
            Err(e)
        }
    }
}

/// The response body and receipt for a signature.
fn render(w: &Wallet, e: &Effect, out: &Output) -> Value {
    let mut v = json!({
        "wallet_id": w.id, "chain": w.chain.as_str(), "from": w.address, "kind": e.kind,
        "to": e.to, "amount": e.amount_text(), "max_fee": e.fee.to_string(), "token": e.token, "chain_id": e.chain_id,
        "broadcast": false,
    });
    match out {
        Output::EthSig { digest, sig } => {
            v["digest"] = json!(digest.to_string());
            v["signature"] = json!(eth::sig_hex(sig));
        }
        Output::EthTx(t) => {
            v["tx_hash"] = json!(t.hash.to_string());
            v["raw_tx"] = json!(format!("0x{}", hex::encode(&t.raw)));
        }
        Output::SolTx(t) => {
            v["signature"] = json!(bs58::encode(t.signature).into_string());
            v["raw_tx"] = json!(B64.encode(&t.raw));
        }
        Output::SolOffchain { signed, sig } => {
            v["signature"] = json!(bs58::encode(sig).into_string());
            v["signed_message"] = json!(B64.encode(signed));
            // Bytes 17..49 of the version-0 preamble (`sol::offchain_bytes`).
            v["application_domain"] =
                json!(signed.get(17..49).map(|d| bs58::encode(d).into_string()));
        }
    }
    v
}

/// The receipt: what the response says, less the raw transaction (the hash identifies it),
/// with the ticket keyd consumed for it (if any).
fn receipt(rendered: &Value, peer: &PeerCred, approval: Option<&str>) -> Value {
    let mut r = rendered.clone();
    if let Some(o) = r.as_object_mut() {
        o.remove("raw_tx");
        o.remove("signed_message");
        o.insert("caller".into(), json!(caller(peer)));
        o.insert("approval".into(), json!(approval));
    }
    r
}

/// `POST /wallet/sign`
pub async fn sign(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    Json(b): Json<SignBody>,
) -> Result<axum::Json<Value>, ApiError> {
    check_ticket_id(b.approval.as_deref())?;
    let w = wallet(&st, b.wallet_id).await?;
    // Parsing and hashing typed data is CPU work: off the runtime's worker threads, so that
    // other requests (and /health) are answered meanwhile.
    let (st2, w2) = (Arc::clone(&st), w.clone());
    let prepared = tokio::task::spawn_blocking(move || prepare_sign(&st2, &w2, b.payload))
        .await
        .map_err(KeydError::internal)?;
    if let Err(e @ KeydError::BadRequest(_)) = prepared {
        return Err(e.into());
    }
    let v = authorize_and_sign(&st, &peer, "wallet.sign", w, prepared, b.approval).await?;
    Ok(axum::Json(v))
}

/// `POST /wallet/send`: builds and signs a native (or ERC-20) transfer; never broadcasts.
pub async fn send(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    Json(b): Json<SendBody>,
) -> Result<axum::Json<Value>, ApiError> {
    check_ticket_id(b.approval.as_deref())?;
    let w = wallet(&st, b.wallet_id.clone()).await?;
    let approval = b.approval.clone();
    let prepared = prepare_send(&st, &w, b);
    if let Err(e @ KeydError::BadRequest(_)) = prepared {
        return Err(e.into());
    }
    let v = authorize_and_sign(&st, &peer, "wallet.send", w, prepared, approval).await?;
    Ok(axum::Json(v))
}
