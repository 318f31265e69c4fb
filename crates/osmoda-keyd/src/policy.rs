//! The signing policy from `/etc/osmoda/keyd.json`, default deny: a chain absent from
//! `policy.chains` signs nothing; every limit, allowlist and chain id is checked here, and any
//! error while judging denies. What passes becomes a list of counter charges (made by
//! `store::Store::charge`) and whether a human approval ticket is needed.

use alloy_primitives::{B256, U256};
use osmoda_config::{Chain, ChainPolicy, Policy};

use crate::error::KeydError;
use crate::store::Charge;

/// What a request would do, as the policy judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    /// Chain of the wallet.
    pub chain: Chain,
    /// `transfer`, `erc20_transfer`, `erc20_approve`, `erc20_permit` (EIP-2612/DAI typed
    /// data), `permit2` (Permit2 typed data), `personal_sign`, `typed_data` (typed data keyd
    /// cannot judge) or `offchain_message`.
    pub kind: &'static str,
    /// EIP-155 chain id (Ethereum transactions and typed data).
    pub chain_id: Option<u64>,
    /// Recipient, spender or verifying contract (lowercase 0x-hex, or base58).
    pub to: Option<String>,
    /// ERC-20 contract (lowercase 0x-hex) for token transfers, approvals and permits.
    pub token: Option<String>,
    /// Amount in base units (wei, lamports, token units); 0 for messages.
    pub amount: u128,
    /// The exact amount when it does not fit in 128 bits (an "unlimited" allowance is
    /// 2^256-1); `amount` is then `u128::MAX`. Such an effect exceeds every limit: denied.
    pub unbounded: Option<U256>,
    /// Typed data: the `primaryType`.
    pub primary_type: Option<String>,
    /// The most the signature can cost in fees, in native base units: Ethereum
    /// `gas_limit × max_fee_per_gas` (EIP-1559) or `gas_limit × gas_price` (legacy); Solana
    /// 5,000 lamports per signature (the base fee; the one-transfer messages keyd signs carry no
    /// compute-budget priority fee); 0 for messages.
    pub fee: u128,
    /// What else of the signed bytes the ticket is bound to: nonce, time limits, digest.
    pub terms: Terms,
}

/// When a signature, or the allowance it grants, stops being usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Up to this unix time (seconds), as the contract compares it with the block's.
    At(U256),
    /// Never (DAI's `expiry` 0).
    Never,
    /// Only in the block it is used in (Permit2's allowance `expiration` 0).
    UseBlock,
}

impl Until {
    /// The exact value, for the canonical operation: the unix time, `never` or `use_block`.
    pub fn canonical(&self) -> String {
        match self {
            Until::At(t) => t.to_string(),
            Until::Never => "never".into(),
            Until::UseBlock => "use_block".into(),
        }
    }
}

/// The fields of what is signed that bound its use beyond kind, amount, recipient and fee. An
/// approval ticket is bound to all of them; the words show those that change the effect (the
/// time limits and the witness; a nonce only orders a signature among the wallet's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Terms {
    /// Ethereum transaction nonce.
    pub nonce: Option<u64>,
    /// Until when the signature can be used (permits: `deadline`, `expiry`, `sigDeadline`).
    pub signature_until: Option<Until>,
    /// Until when the allowance it sets lasts (Permit2 allowance permits).
    pub allowance_until: Option<Until>,
    /// The type of a Permit2 witness: what else the spender is held to (keyd does not read it).
    pub witness: Option<String>,
    /// The hash that is signed (EIP-712 digest, Ethereum transaction signing hash): the ticket
    /// covers these exact bytes. None for Solana transfers, whose recent blockhash expires
    /// within minutes and is renewed on a retry (the rest of the message follows from the
    /// operation), and for messages, which never need a ticket.
    pub signed: Option<B256>,
}

impl Effect {
    /// Whether this effect moves value (and is counted).
    pub fn moves_value(&self) -> bool {
        matches!(
            self.kind,
            "transfer" | "erc20_transfer" | "erc20_approve" | "erc20_permit" | "permit2"
        )
    }

    /// The amount as a decimal string (the exact one when beyond 128 bits).
    pub fn amount_text(&self) -> String {
        self.unbounded
            .map_or_else(|| self.amount.to_string(), |u| u.to_string())
    }

    /// Sets the amount from a 256-bit value (`unbounded` when it does not fit in 128 bits).
    pub fn with_amount(mut self, amount: U256) -> Effect {
        match u128::try_from(amount) {
            Ok(a) => {
                self.amount = a;
                self.unbounded = None;
            }
            Err(_) => {
                self.amount = u128::MAX;
                self.unbounded = Some(amount);
            }
        }
        self
    }

    /// What leaves the wallet in native units at most: the native amount (none for ERC-20
    /// calls, whose amount is in token units) plus the maximum fee.
    ///
    /// # Errors
    /// `BadRequest` when the sum does not fit in 128 bits.
    pub fn native_cost(&self) -> Result<u128, KeydError> {
        let native = if self.token.is_some() { 0 } else { self.amount };
        native.checked_add(self.fee).ok_or_else(|| {
            KeydError::BadRequest(format!(
                "amount {} + maximum fee {} does not fit in 128 bits",
                self.amount, self.fee
            ))
        })
    }

    /// The canonical operation an approval ticket is bound to (exact decimal amount string).
    pub fn operation(&self, op: &str, wallet_id: &str) -> serde_json::Value {
        serde_json::json!({
            "daemon": "keyd",
            "op": op,
            "wallet": wallet_id,
            "chain": self.chain.as_str(),
            "chain_id": self.chain_id,
            "kind": self.kind,
            "to": self.to,
            "amount": self.amount_text(),
            "fee": self.fee.to_string(),
            "token": self.token,
            "primary_type": self.primary_type,
            "nonce": self.terms.nonce,
            "signature_until": self.terms.signature_until.map(|u| u.canonical()),
            "allowance_until": self.terms.allowance_until.map(|u| u.canonical()),
            "witness": self.terms.witness,
            "signed": self.terms.signed.map(|h| h.to_string()),
        })
    }
}

/// The policy's answer for an allowed effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Counters to charge at signing.
    pub charges: Vec<Charge>,
    /// Above the approval threshold: a ticket approved by a person is needed.
    pub needs_approval: bool,
}

fn deny(reason: &'static str, message: String) -> KeydError {
    KeydError::Denied { reason, message }
}

/// Normalizes a recipient for comparison: Ethereum addresses compare case-insensitively.
pub fn normalize(chain: Chain, addr: &str) -> String {
    match chain {
        Chain::Ethereum => addr.to_ascii_lowercase(),
        Chain::Solana => addr.to_string(),
    }
}

/// Judges `e` for the wallet labelled `label`.
///
/// # Errors
/// `Denied` with the rule that refused: `chain`, `chain_id`, `recipient`, `per_tx_max`
/// (the chain's on amount + maximum fee, or the token's for ERC-20 calls and permits; any
/// amount ≥ 2^128, e.g. an unlimited allowance), `token` (a contract without limits),
/// `typed_data` (typed data keyd cannot judge, outside the listed domains). `BadRequest` when amount + fee overflow 128 bits. Native
/// counters and the approval threshold count amount + maximum fee: what a signature can take
/// from the wallet, fees included.
pub fn judge(policy: &Policy, label: &str, e: &Effect) -> Result<Verdict, KeydError> {
    let chain = e.chain.as_str();
    let cp: &ChainPolicy = policy.chains.get(&e.chain).ok_or_else(|| {
        deny("chain", format!("policy.chains.{chain} is not set: {chain} is denied (default deny); allow it with services.osmoda.keyd.policy.chains.{chain}"))
    })?;
    if e.chain == Chain::Ethereum && e.kind != "personal_sign" {
        let id = e.chain_id.ok_or_else(|| {
            deny(
                "chain_id",
                "no EIP-155 chain id: chain-less signatures are refused".into(),
            )
        })?;
        if !cp.chain_ids.contains(&id) {
            return Err(deny(
                "chain_id",
                format!(
                    "chain id {id} is not in policy.chains.ethereum.chain_ids {:?}",
                    cp.chain_ids
                ),
            ));
        }
    }
    let wallet = policy.wallets.get(label);
    let allowlist = wallet
        .and_then(|w| w.recipient_allowlist.as_ref())
        .or(cp.recipient_allowlist.as_ref());
    match (allowlist, &e.to) {
        // Opaque typed data is judged by its domain (below), not as a payment to the contract.
        _ if e.kind == "typed_data" => {}
        (Some(list), Some(to)) => {
            let to = normalize(e.chain, to);
            if !list.iter().any(|a| normalize(e.chain, a) == to) {
                return Err(deny("recipient", format!("{to} is not in the recipient allowlist of wallet {label:?} / chain {chain}")));
            }
        }
        _ => {}
    }
    if e.kind == "typed_data" {
        judge_domain(cp, e)?;
    }
    if !e.moves_value() {
        return Ok(Verdict {
            charges: Vec::new(),
            needs_approval: false,
        });
    }
    if let Some(u) = e.unbounded {
        return Err(deny(
            "per_tx_max",
            format!(
                "{} of {u} base units (2^128 or more; 2^256-1 is an unlimited allowance) exceeds every limit: refused",
                e.kind
            ),
        ));
    }
    // An ERC-20 call is judged by its token's limits first (an unknown contract is `token`).
    let token = match &e.token {
        Some(token) => Some(judge_token(cp, token, e)?),
        None => None,
    };
    let cost = e.native_cost()?;
    let what = if e.fee == 0 {
        cost.to_string()
    } else if e.token.is_some() {
        format!("the maximum fee {}", e.fee)
    } else {
        format!("{cost} (amount {} + maximum fee {})", e.amount, e.fee)
    };
    if cost > cp.per_tx_max.0 {
        return Err(deny(
            "per_tx_max",
            format!(
                "{what} exceeds policy.chains.{chain}.per_tx_max {}",
                cp.per_tx_max
            ),
        ));
    }
    let mut charges = Vec::new();
    if cost > 0 {
        charges.push(Charge {
            scope: format!("chain:{chain}:native"),
            amount: cost,
            limit: cp.daily_limit.0,
        });
        if let Some(w) = wallet {
            charges.push(Charge {
                scope: format!("wallet:{label}:native"),
                amount: cost,
                limit: w.daily_limit.0,
            });
        }
    }
    let mut needs_approval = cp.approval_threshold.is_some_and(|t| cost > t.0);
    if let Some(t) = token {
        charges.extend(t.charges);
        needs_approval |= t.needs_approval;
    }
    Ok(Verdict {
        charges,
        needs_approval,
    })
}

/// Typed data keyd cannot judge: signed only for a domain (chain id, verifying contract and,
/// when the entry lists them, primary type) in `policy.chains.ethereum.typed_data`.
fn judge_domain(cp: &ChainPolicy, e: &Effect) -> Result<(), KeydError> {
    let primary = e.primary_type.as_deref().unwrap_or("?");
    let (Some(id), Some(contract)) = (e.chain_id, e.to.as_deref()) else {
        return Err(deny(
            "typed_data",
            format!("typed data {primary:?} without domain.chainId and domain.verifyingContract cannot be matched to an allowed domain: refused"),
        ));
    };
    let listed = cp.typed_data.iter().any(|d| {
        d.chain_id == id
            && d.verifying_contract.eq_ignore_ascii_case(contract)
            && d.primary_types
                .as_ref()
                .is_none_or(|t| t.iter().any(|t| t == primary))
    });
    if listed {
        Ok(())
    } else {
        Err(deny(
            "typed_data",
            format!("typed data {primary:?} for domain (chain id {id}, verifying contract {contract}) is denied: keyd cannot judge what it authorises, and policy.chains.ethereum.typed_data does not list this domain and type; allow it with services.osmoda.keyd.policy.chains.ethereum.typedData"),
        ))
    }
}

/// An ERC-20 `transfer` or `approve` on `token`: judged by that token's own limits
/// (`policy.chains.<chain>.tokens.<contract>`, in token units), charged on the token's daily
/// counter. Native-unit limits (the chain's and the wallet's) do not apply to token units; they
/// count the call's maximum fee (in `judge`).
fn judge_token(cp: &ChainPolicy, token: &str, e: &Effect) -> Result<Verdict, KeydError> {
    let chain = e.chain.as_str();
    let tp = cp.token(token).ok_or_else(|| {
        deny(
            "token",
            format!(
                "ERC-20 {} of {} units on token {token}: policy.chains.{chain}.tokens has no entry for this contract, so it is denied; allow it with services.osmoda.keyd.policy.chains.{chain}.tokens.\"{token}\"",
                e.kind, e.amount
            ),
        )
    })?;
    if e.amount > tp.per_tx_max.0 {
        return Err(deny(
            "per_tx_max",
            format!(
                "{} exceeds policy.chains.{chain}.tokens.{token}.per_tx_max {}",
                e.amount, tp.per_tx_max
            ),
        ));
    }
    Ok(Verdict {
        charges: vec![Charge {
            scope: format!("chain:{chain}:token:{}", token.to_ascii_lowercase()),
            amount: e.amount,
            limit: tp.daily_limit.0,
        }],
        needs_approval: tp.approval_threshold.is_some_and(|t| e.amount > t.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use osmoda_config::{Amount, TokenPolicy, WalletPolicy};

    fn policy() -> Policy {
        let mut p = Policy {
            chains: Default::default(),
            wallets: Default::default(),
        };
        p.chains.insert(
            Chain::Ethereum,
            ChainPolicy {
                chain_ids: vec![1],
                per_tx_max: Amount(100),
                daily_limit: Amount(1000),
                approval_threshold: Some(Amount(50)),
                recipient_allowlist: Some(
                    vec!["0xAbC0000000000000000000000000000000000001".into()],
                ),
                typed_data: vec![osmoda_config::TypedDataDomain {
                    chain_id: 1,
                    verifying_contract: "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC".into(),
                    primary_types: Some(vec!["Mail".into()]),
                }],
                tokens: [(
                    TOKEN.to_string(),
                    TokenPolicy {
                        per_tx_max: Amount(5_000),
                        daily_limit: Amount(20_000),
                        approval_threshold: Some(Amount(1_000)),
                    },
                )]
                .into(),
            },
        );
        p.wallets.insert(
            "ops".into(),
            WalletPolicy {
                daily_limit: Amount(300),
                recipient_allowlist: None,
            },
        );
        p
    }

    /// A token the policy has limits for, written in mixed case as a person might.
    const TOKEN: &str = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";

    fn effect(amount: u128) -> Effect {
        Effect {
            chain: Chain::Ethereum,
            kind: "transfer",
            chain_id: Some(1),
            to: Some("0xabc0000000000000000000000000000000000001".into()),
            token: None,
            amount,
            fee: 0,
            unbounded: None,
            primary_type: None,
            terms: Terms::default(),
        }
    }

    fn reason(r: Result<Verdict, KeydError>) -> &'static str {
        match r {
            Err(KeydError::Denied { reason, .. }) => reason,
            other => panic!("not denied: {other:?}"),
        }
    }

    #[test]
    fn each_rule_denies_and_the_rest_passes() {
        let p = policy();
        let v = judge(&p, "ops", &effect(10)).unwrap();
        assert!(!v.needs_approval);
        assert_eq!(v.charges.len(), 2, "chain and wallet counters");
        assert_eq!(v.charges[1].limit, 300);
        assert!(judge(&p, "ops", &effect(51)).unwrap().needs_approval);
        assert_eq!(reason(judge(&p, "ops", &effect(101))), "per_tx_max");
        assert_eq!(
            reason(judge(
                &p,
                "ops",
                &Effect {
                    chain_id: Some(5),
                    ..effect(1)
                }
            )),
            "chain_id"
        );
        assert_eq!(
            reason(judge(
                &p,
                "ops",
                &Effect {
                    chain_id: None,
                    ..effect(1)
                }
            )),
            "chain_id"
        );
        assert_eq!(
            reason(judge(
                &p,
                "ops",
                &Effect {
                    to: Some("0x0000000000000000000000000000000000000002".into()),
                    ..effect(1)
                }
            )),
            "recipient"
        );
        assert_eq!(
            reason(judge(
                &p,
                "ops",
                &Effect {
                    chain: Chain::Solana,
                    chain_id: None,
                    ..effect(1)
                }
            )),
            "chain"
        );
        assert_eq!(
            reason(judge(
                &p,
                "ops",
                &Effect {
                    kind: "erc20_transfer",
                    token: Some("0x01".into()),
                    ..effect(1)
                }
            )),
            "token"
        );
        // A wallet without its own entry is charged on the chain only.
        assert_eq!(judge(&p, "other", &effect(1)).unwrap().charges.len(), 1);
    }

    #[test]
    fn tokens_have_their_own_limits_and_counter() {
        let p = policy();
        let tok = |kind, amount| Effect {
            kind,
            token: Some(TOKEN.to_ascii_lowercase()),
            ..effect(amount)
        };
        // 5,000 token units is far above the chain's native per_tx_max of 100: token units are
        // judged by the token's limits only.
        for kind in ["erc20_transfer", "erc20_approve"] {
            let v = judge(&p, "ops", &tok(kind, 900)).unwrap();
            assert_eq!(
                v.charges,
                vec![Charge {
                    scope: format!("chain:ethereum:token:{}", TOKEN.to_ascii_lowercase()),
                    amount: 900,
                    limit: 20_000,
                }]
            );
            assert!(!v.needs_approval);
            assert!(judge(&p, "ops", &tok(kind, 1_001)).unwrap().needs_approval);
            assert!(judge(&p, "ops", &tok(kind, 5_000)).is_ok());
            assert_eq!(reason(judge(&p, "ops", &tok(kind, 5_001))), "per_tx_max");
            // An unlimited approval (2^256-1 does not fit; u128::MAX stands for "huge").
            assert_eq!(
                reason(judge(&p, "ops", &tok(kind, u128::MAX))),
                "per_tx_max"
            );
        }
        // Another contract, and one differing in a single digit, are denied.
        for other in [
            "0x0000000000000000000000000000000000000001",
            "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb49",
        ] {
            let e = Effect {
                token: Some(other.into()),
                ..tok("erc20_transfer", 1)
            };
            assert_eq!(reason(judge(&p, "ops", &e)), "token");
        }
        // The recipient allowlist still applies to the token's recipient.
        let e = Effect {
            to: Some("0x0000000000000000000000000000000000000002".into()),
            ..tok("erc20_transfer", 1)
        };
        assert_eq!(reason(judge(&p, "ops", &e)), "recipient");
    }

    #[test]
    fn fees_count_against_native_limits() {
        let p = policy();
        let paid = |amount, fee| Effect {
            fee,
            ..effect(amount)
        };
        // Native: amount + maximum fee is what the per-tx cap, the counters and the approval
        // threshold (50) see.
        let v = judge(&p, "ops", &paid(40, 5)).unwrap();
        assert_eq!(
            v.charges.iter().map(|c| c.amount).collect::<Vec<_>>(),
            [45, 45]
        );
        assert!(!v.needs_approval);
        assert!(judge(&p, "ops", &paid(40, 11)).unwrap().needs_approval);
        assert!(judge(&p, "ops", &paid(70, 30)).is_ok());
        let Err(KeydError::Denied {
            reason: why,
            message,
        }) = judge(&p, "ops", &paid(70, 31))
        else {
            panic!("a fee that lifts the total over per_tx_max is denied")
        };
        assert_eq!(why, "per_tx_max");
        assert!(message.contains("maximum fee 31"), "{message}");
        // A fee alone (zero value) is charged too.
        let v = judge(&p, "ops", &paid(0, 7)).unwrap();
        assert_eq!(v.charges[0].amount, 7);
        // ERC-20: the token's amount on the token counter, the fee on the native ones.
        let tok = |amount, fee| Effect {
            kind: "erc20_transfer",
            token: Some(TOKEN.to_ascii_lowercase()),
            ..paid(amount, fee)
        };
        let v = judge(&p, "ops", &tok(900, 20)).unwrap();
        let scopes: Vec<(&str, u128)> = v
            .charges
            .iter()
            .map(|c| (c.scope.as_str(), c.amount))
            .collect();
        let token_scope = format!("chain:ethereum:token:{}", TOKEN.to_ascii_lowercase());
        assert_eq!(
            scopes,
            [
                ("chain:ethereum:native", 20),
                ("wallet:ops:native", 20),
                (token_scope.as_str(), 900)
            ]
        );
        assert!(!v.needs_approval);
        assert!(judge(&p, "ops", &tok(900, 51)).unwrap().needs_approval);
        assert_eq!(reason(judge(&p, "ops", &tok(900, 101))), "per_tx_max");
        // Overflow of amount + fee is a bad request, not a wrap-around.
        assert!(matches!(
            judge(&p, "ops", &paid(u128::MAX, 1)),
            Err(KeydError::BadRequest(_))
        ));
        // Messages carry no fee and are never charged.
        let msg = Effect {
            kind: "personal_sign",
            ..effect(0)
        };
        assert!(judge(&p, "ops", &msg).unwrap().charges.is_empty());
    }

    #[test]
    fn an_empty_policy_denies_everything() {
        let p = Policy {
            chains: Default::default(),
            wallets: Default::default(),
        };
        assert_eq!(reason(judge(&p, "ops", &effect(0))), "chain");
        assert_eq!(
            reason(judge(
                &p,
                "ops",
                &Effect {
                    kind: "personal_sign",
                    ..effect(0)
                }
            )),
            "chain"
        );
    }

    #[test]
    fn typed_data_is_signed_only_for_a_listed_domain_and_type() {
        let p = policy();
        let mail = Effect {
            kind: "typed_data",
            to: Some("0xcccccccccccccccccccccccccccccccccccccccc".into()),
            primary_type: Some("Mail".into()),
            ..effect(0)
        };
        // Listed (contract compared case-insensitively), never charged, and the recipient
        // allowlist (which does not list the contract) is not what judges it.
        assert!(judge(&p, "ops", &mail).unwrap().charges.is_empty());
        let variants = [
            Effect {
                to: Some("0x0000000000000000000000000000000000000009".into()),
                ..mail.clone()
            },
            Effect {
                primary_type: Some("Order".into()),
                ..mail.clone()
            },
            Effect {
                to: None,
                ..mail.clone()
            },
        ];
        for e in variants {
            assert_eq!(reason(judge(&p, "ops", &e)), "typed_data", "{e:?}");
        }
        // Another chain id is refused by the chain's ids first.
        let e = Effect {
            chain_id: Some(5),
            ..mail.clone()
        };
        assert_eq!(reason(judge(&p, "ops", &e)), "chain_id");
    }

    #[test]
    fn permits_are_judged_like_approvals_and_unbounded_amounts_are_denied() {
        let p = policy();
        for kind in ["erc20_permit", "permit2", "erc20_approve", "erc20_transfer"] {
            let permit = Effect {
                kind,
                token: Some(TOKEN.to_ascii_lowercase()),
                ..effect(900)
            };
            let v = judge(&p, "ops", &permit).unwrap();
            assert_eq!(v.charges.len(), 1, "{kind}: the token's counter only");
            assert_eq!(v.charges[0].amount, 900);
            let over = permit.clone().with_amount(U256::MAX);
            assert_eq!(over.amount_text(), U256::MAX.to_string());
            assert_eq!(reason(judge(&p, "ops", &over)), "per_tx_max", "{kind}");
            let at = permit.clone().with_amount(U256::from(u128::MAX));
            assert_eq!(at.unbounded, None);
            assert_eq!(reason(judge(&p, "ops", &at)), "per_tx_max", "{kind}");
            let other = Effect {
                token: Some("0x0000000000000000000000000000000000000001".into()),
                ..permit.clone()
            };
            assert_eq!(reason(judge(&p, "ops", &other)), "token", "{kind}");
            let spender = Effect {
                to: Some("0x0000000000000000000000000000000000000002".into()),
                ..permit
            };
            assert_eq!(reason(judge(&p, "ops", &spender)), "recipient", "{kind}");
        }
    }
}
