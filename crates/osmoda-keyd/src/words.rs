//! The words a person reads before approving a signature or a deletion (the ticket's
//! `effect`, shown by `agentctl approvals list` as keyd's words and in the chat approval): keyd's
//! own account of the transaction it verified, never text the caller wrote. What a person must
//! see comes first — the action, the amount, the asset, the recipient or spender, the chain id
//! and the fee — then the wallet's address, and the wallet's label last and bounded: the chat's
//! approval prompt is cut at 500 characters ([`SHOWN`]), and a long label must not push the
//! rest out of it. Token amounts are the raw integer in the token's base units (no decimals are
//! guessed); native amounts are wei/lamports with ETH/SOL beside them, the maximum fee is in
//! ETH/SOL (an exact decimal). A permit's time limits follow its chain id: how long the
//! allowance lasts and until when the signature can be used, in UTC.

use alloy_primitives::U256;
use osmoda_config::Chain;

use crate::policy::{Effect, Until};

/// `units` (an integer of base units) as a decimal with `decimals` places, trailing zeros
/// trimmed: `native(1_500_000_000_000_000_000, 18)` = "1.5".
pub fn native(units: u128, decimals: u32) -> String {
    let scale = 10u128.pow(decimals);
    let (whole, frac) = (units / scale, units % scale);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:0>width$}", width = decimals as usize);
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// The characters of keyd's words that reach the person in every approval prompt. The bridge
/// (`describe` in `bridge/src/approvals.ts`) shows `"<tool> would: " + words + " (osModa ticket
/// <id>; also: agentctl approvals approve <id>)"` cut to 500 characters; with the longest
/// keyd tool (`wallet_delete`, 21 characters of head), agentd's 32-character ticket ids (116 of
/// tail) and the `…` of the cut, 362 characters of the words survive. Every field a person
/// must see lies inside them (tested with the longest value of each).
pub const SHOWN: usize = 362;

/// The most characters the wallet's label takes in the words, quotes and escapes included.
pub const LABEL_SHOWN: usize = 66;

/// A native amount: "1500000000000000000 wei (1.5 ETH)" / "5000 lamports (0.000005 SOL)".
pub fn native_amount(chain: Chain, units: u128) -> String {
    format!(
        "{units} {} ({} {})",
        unit(chain),
        native(units, decimals(chain)),
        symbol(chain)
    )
}

fn unit(chain: Chain) -> &'static str {
    match chain {
        Chain::Ethereum => "wei",
        Chain::Solana => "lamports",
    }
}

fn symbol(chain: Chain) -> &'static str {
    match chain {
        Chain::Ethereum => "ETH",
        Chain::Solana => "SOL",
    }
}

fn decimals(chain: Chain) -> u32 {
    match chain {
        Chain::Ethereum => 18,
        Chain::Solana => 9,
    }
}

/// The label quoted with escapes, cut to [`LABEL_SHOWN`] characters (a label keyd accepts is
/// at most 64 of `[A-Za-z0-9._-]`; the bound holds whatever the store holds).
fn label_words(label: &str) -> String {
    let quoted = format!("{label:?}");
    if quoted.chars().count() <= LABEL_SHOWN {
        return quoted;
    }
    let mut cut: String = quoted.chars().take(LABEL_SHOWN - 1).collect();
    cut.push('…');
    cut
}

/// The most characters a Permit2 witness's type name takes in the words.
const WITNESS_SHOWN: usize = 24;

/// Latest unix time shown as a date (9999-12-31T23:59:59Z); later is never, in practice.
const LAST_DATE: u64 = 253_402_300_799;

/// A unix time as RFC 3339 UTC (`2026-12-01T00:00:00Z`), or `None` past year 9999.
fn date(t: U256) -> Option<String> {
    let secs = u64::try_from(t).ok().filter(|s| *s <= LAST_DATE)?;
    let at = time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).ok()?).ok()?;
    at.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// `, <what> until <date>` / `, <what> never expires` / `, allowance for the block of use only`.
fn until(what: &str, u: Until) -> String {
    match u {
        Until::At(t) => match date(t) {
            Some(d) => format!(", {what} until {d}"),
            None => format!(", {what} never expires"),
        },
        Until::Never => format!(", {what} never expires"),
        Until::UseBlock => format!(", {what} for the block of use only"),
    }
}

/// A permit's terms: how long its allowance lasts (Permit2), until when the signature can be
/// used, and the type of its witness.
fn permit_terms(e: &Effect) -> String {
    let t = &e.terms;
    let mut out = String::new();
    if let Some(u) = t.allowance_until {
        out.push_str(&until("allowance", u));
    }
    if let Some(u) = t.signature_until {
        out.push_str(&until("usable", u));
    }
    if let Some(w) = &t.witness {
        let mut name: String = w.chars().take(WITNESS_SHOWN).collect();
        if w.chars().count() > WITNESS_SHOWN {
            name.pop();
            name.push('…');
        }
        out.push_str(&format!(", witness {name}"));
    }
    out
}

/// One line describing `e` for the wallet `label` at `address`, for the approval ticket:
/// action, amount, asset, recipient, chain id and maximum fee (a permit's time limits and
/// witness instead of a fee), then the wallet, the label last.
pub fn describe(op: &str, e: &Effect, label: &str, address: &str) -> String {
    let to = e.to.as_deref().unwrap_or("?");
    let token = e.token.as_deref().unwrap_or("?");
    // Never reached by a ticket (such amounts are denied), but kept short all the same.
    let amount = if e.unbounded.is_some() {
        "2^128 or more".to_string()
    } else {
        e.amount.to_string()
    };
    let tokens = format!("{amount} base units of token {token}");
    let what = match e.kind {
        "transfer" => format!("TRANSFER {} to {to}", native_amount(e.chain, e.amount)),
        "erc20_transfer" => format!("ERC-20 TRANSFER of {tokens} to {to}"),
        "erc20_approve" => format!("ERC-20 APPROVE (allowance) of up to {tokens} for spender {to}"),
        "erc20_permit" | "permit2" => format!(
            "ERC-20 PERMIT ({}) up to {tokens} for spender {to}",
            if e.kind == "permit2" {
                "Permit2"
            } else {
                "EIP-2612"
            }
        ),
        other => format!(
            "{other} signature{}",
            e.to.as_deref()
                .map(|c| format!(" for contract {c}"))
                .unwrap_or_default()
        ),
    };
    let chain_id = e
        .chain_id
        .map(|c| format!(" on chain id {c}"))
        .unwrap_or_default();
    // The fee in ETH/SOL only (an exact decimal): the wei would double its length.
    let fee = if e.fee > 0 {
        format!(
            ", max fee {} {}",
            native(e.fee, decimals(e.chain)),
            symbol(e.chain)
        )
    } else {
        String::new()
    };
    let permit = matches!(e.kind, "erc20_permit" | "permit2");
    let terms = if permit {
        permit_terms(e)
    } else {
        String::new()
    };
    let bearer = if permit {
        "; whoever holds this signature can use it"
    } else {
        ""
    };
    let witness = if e.terms.witness.is_some() {
        "; keyd does not judge the witness"
    } else {
        ""
    };
    let raw = if e.token.is_some() {
        "; token amounts are raw integers (the token's decimals are not applied)"
    } else {
        ""
    };
    format!(
        "{op}: {what}{chain_id}{fee}{terms}; from wallet {address}{bearer}{witness}{raw}; label {}",
        label_words(label)
    )
}

/// The words of `wallet.delete` for the wallet `id` at `address`: the action, chain, address
/// and id first, the label last.
pub fn delete(chain: Chain, id: &str, address: &str, label: &str) -> String {
    format!(
        "wallet.delete: DELETE {} wallet {address} ({id}): its key is erased from keyd's state (copies in backups of the state dir remain); label {}",
        chain.as_str(),
        label_words(label)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Terms;

    fn eth(kind: &'static str, amount: u128, token: Option<&str>) -> Effect {
        Effect {
            chain: Chain::Ethereum,
            kind,
            chain_id: Some(1),
            to: Some("0x000000000000000000000000000000000000dead".into()),
            token: token.map(str::to_string),
            amount,
            fee: 60_000_000_000_000,
            unbounded: None,
            primary_type: None,
            terms: Default::default(),
        }
    }

    const USDC: &str = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48";

    #[test]
    fn native_amounts_are_exact() {
        assert_eq!(native(0, 18), "0");
        assert_eq!(native(1, 18), "0.000000000000000001");
        assert_eq!(native(1_500_000_000_000_000_000, 18), "1.5");
        assert_eq!(native(10u128.pow(18), 18), "1");
        assert_eq!(native(5_000, 9), "0.000005");
        assert_eq!(
            native(u128::MAX, 18),
            "340282366920938463463.374607431768211455"
        );
    }

    #[test]
    fn each_kind_names_what_is_approved() {
        let w = |e: &Effect| describe("wallet.send", e, "ops", "0x40Cf");
        let t = w(&eth("erc20_transfer", 900_000_000_000, Some(USDC)));
        for part in [
            "ERC-20 TRANSFER of 900000000000 base units",
            USDC,
            "to 0x000000000000000000000000000000000000dead",
            "on chain id 1",
            "max fee 0.00006 ETH",
            "token amounts are raw integers",
        ] {
            assert!(t.contains(part), "{part:?} missing in {t}");
        }
        assert!(!t.contains("900000000000 wei"), "{t}");
        let a = w(&eth("erc20_approve", 10u128.pow(12), Some(USDC)));
        assert!(
            a.contains("APPROVE")
                && a.contains("spender 0x000000000000000000000000000000000000dead")
                && a.contains(USDC)
                && a.contains("up to 1000000000000 base units"),
            "{a}"
        );
        let p = w(&eth("erc20_permit", 7, Some(USDC)));
        assert!(p.contains("PERMIT (EIP-2612") && p.contains(USDC), "{p}");
        let p2 = w(&eth("permit2", 7, Some(USDC)));
        assert!(p2.contains("PERMIT (Permit2"), "{p2}");
        let n = w(&eth("transfer", 1_500_000_000_000_000_000, None));
        assert!(
            n.contains("TRANSFER 1500000000000000000 wei (1.5 ETH)") && n.contains("to 0x"),
            "{n}"
        );
        let s = describe(
            "wallet.send",
            &Effect {
                chain: Chain::Solana,
                chain_id: None,
                fee: 5_000,
                ..eth("transfer", 2_000_000_000, None)
            },
            "s",
            "So1",
        );
        assert!(
            s.contains("2000000000 lamports (2 SOL)") && s.contains("max fee 0.000005 SOL"),
            "{s}"
        );
        assert!(!s.contains("raw integers"), "no token, no note: {s}");
    }

    /// Asserts that every field of `words` ends inside the first [`SHOWN`] characters, the
    /// label comes after all of them and ends the line, and the line fits agentd's 1,024 bytes.
    fn check(words: &str, fields: &[&str], label: &str) {
        let chars = |byte: usize| words[..byte].chars().count();
        let mut last = 0;
        for f in fields {
            let at = words
                .find(f)
                .unwrap_or_else(|| panic!("{f:?} missing in {words}"));
            let end = chars(at + f.len());
            assert!(
                end <= SHOWN,
                "{f:?} ends at character {end}, after the {SHOWN} every prompt shows: {words}"
            );
            last = last.max(end);
        }
        let shown = label_words(label);
        assert!(
            words.ends_with(&format!("; label {shown}")) && chars(words.len() - shown.len()) > last,
            "the label comes last: {words}"
        );
        assert!(shown.chars().count() <= LABEL_SHOWN, "{shown}");
        assert!(words.len() <= 1024, "{} bytes: {words}", words.len());
    }

    #[test]
    fn every_field_a_person_must_see_comes_before_the_longest_label() {
        let label = "L".repeat(64);
        let eth_to = format!("0x{}", "f".repeat(40));
        let token = format!("0x{}", "e".repeat(40));
        let from = format!("0x{}", "D".repeat(40));
        let (max, max_id) = (u128::MAX.to_string(), u64::MAX.to_string());
        let on_chain = format!("on chain id {max_id}");
        // The longest fee: gas limit × max fee per gas of u128::MAX wei.
        let eth_fee = format!("max fee {} ETH", native(u128::MAX, 18));
        let widest = |kind: &'static str, token: Option<&str>, fee: u128| Effect {
            chain_id: Some(u64::MAX),
            to: Some(eth_to.clone()),
            fee,
            ..eth(kind, u128::MAX, token)
        };
        for op in ["wallet.send", "wallet.sign"] {
            let t = describe(op, &widest("transfer", None, u128::MAX), &label, &from);
            let amount = native_amount(Chain::Ethereum, u128::MAX);
            let fields = [op, "TRANSFER", &amount, &eth_to, &on_chain, &eth_fee, &from];
            check(&t, &fields, &label);
            for (kind, action) in [
                ("erc20_transfer", "ERC-20 TRANSFER"),
                ("erc20_approve", "ERC-20 APPROVE"),
            ] {
                let t = describe(op, &widest(kind, Some(&token), u128::MAX), &label, &from);
                let fields = [
                    op, action, &max, &token, &eth_to, &on_chain, &eth_fee, &from,
                ];
                check(&t, &fields, &label);
            }
        }
        // Permits are signatures, not transactions: they carry no fee, but time limits (the
        // latest date shown) and, for Permit2 witness transfers, the witness's type.
        let last = Until::At(U256::from(LAST_DATE));
        let last_date = "9999-12-31T23:59:59Z";
        let (allowance, usable) = (
            format!("allowance until {last_date}"),
            format!("usable until {last_date}"),
        );
        let witness = format!("witness {}…", "W".repeat(WITNESS_SHOWN - 1));
        let eip2612 = Terms {
            signature_until: Some(last),
            ..Terms::default()
        };
        let single = Terms {
            allowance_until: Some(last),
            ..eip2612.clone()
        };
        let witnessed = Terms {
            witness: Some("W".repeat(64)),
            ..eip2612.clone()
        };
        for (kind, action, terms, shown) in [
            (
                "erc20_permit",
                "ERC-20 PERMIT (EIP-2612",
                eip2612,
                vec![usable.as_str()],
            ),
            (
                "permit2",
                "ERC-20 PERMIT (Permit2",
                single,
                vec![allowance.as_str(), usable.as_str()],
            ),
            (
                "permit2",
                "ERC-20 PERMIT (Permit2",
                witnessed,
                vec![usable.as_str(), witness.as_str()],
            ),
        ] {
            let e = Effect {
                terms,
                ..widest(kind, Some(&token), 0)
            };
            let t = describe("wallet.sign", &e, &label, &from);
            let mut fields: Vec<&str> =
                vec!["wallet.sign", action, &max, &token, &eth_to, &on_chain];
            fields.extend(shown);
            fields.push(&from);
            check(&t, &fields, &label);
        }
        // Solana: 44-character addresses, lamports, no chain id.
        let (sol_to, sol_from) = ("J".repeat(44), "K".repeat(44));
        let sol = Effect {
            chain: Chain::Solana,
            chain_id: None,
            to: Some(sol_to.clone()),
            fee: u128::MAX,
            ..eth("transfer", u128::MAX, None)
        };
        let t = describe("wallet.send", &sol, &label, &sol_from);
        let amount = native_amount(Chain::Solana, u128::MAX);
        let sol_fee = format!("max fee {} SOL", native(u128::MAX, 9));
        let fields = [
            "wallet.send",
            "TRANSFER",
            &amount,
            &sol_to,
            &sol_fee,
            &sol_from,
        ];
        check(&t, &fields, &label);
        // A deletion: the action, the chain, the address and the id.
        let id = format!("w_{}", "a".repeat(16));
        for (chain, address) in [(Chain::Ethereum, &from), (Chain::Solana, &sol_from)] {
            let d = delete(chain, &id, address, &label);
            let fields = ["wallet.delete: DELETE", chain.as_str(), address, &id];
            check(&d, &fields, &label);
        }
        // A label keyd would never accept is still bounded and escaped, and still last.
        let odd = "\u{202e}\n".repeat(200);
        let t = describe(
            "wallet.send",
            &widest("transfer", None, u128::MAX),
            &odd,
            &from,
        );
        check(&t, &["TRANSFER", &eth_to, &eth_fee, &from], &odd);
        assert!(!t.contains('\u{202e}') && !t.contains('\n'), "{t}");
    }

    #[test]
    fn a_permits_time_limits_are_words() {
        let permit = |kind, terms| Effect {
            terms,
            ..eth(kind, 7, Some(USDC))
        };
        let w = |e: &Effect| describe("wallet.sign", e, "ops", "0x40Cf");
        let at = |t: u64| Some(Until::At(U256::from(t)));
        let cases = [
            (
                Terms {
                    signature_until: at(1_764_547_200),
                    ..Terms::default()
                },
                ", usable until 2025-12-01T00:00:00Z; from",
            ),
            (
                Terms {
                    signature_until: Some(Until::Never),
                    ..Terms::default()
                },
                ", usable never expires; from",
            ),
            (
                Terms {
                    signature_until: Some(Until::At(U256::MAX)),
                    ..Terms::default()
                },
                ", usable never expires; from",
            ),
            (
                Terms {
                    signature_until: at(LAST_DATE + 1),
                    ..Terms::default()
                },
                ", usable never expires; from",
            ),
            (
                Terms {
                    allowance_until: Some(Until::UseBlock),
                    signature_until: at(0),
                    ..Terms::default()
                },
                ", allowance for the block of use only, usable until 1970-01-01T00:00:00Z; from",
            ),
            (
                Terms {
                    allowance_until: at(1_800_000_000),
                    signature_until: at(1_764_547_200),
                    ..Terms::default()
                },
                ", allowance until 2027-01-15T08:00:00Z, usable until 2025-12-01T00:00:00Z; from",
            ),
            (
                Terms {
                    signature_until: at(1_764_547_200),
                    witness: Some("ExclusiveDutchOrder".into()),
                    ..Terms::default()
                },
                ", usable until 2025-12-01T00:00:00Z, witness ExclusiveDutchOrder; from",
            ),
        ];
        for (terms, want) in cases {
            let t = w(&permit("permit2", terms));
            assert!(t.contains(want), "{want:?} missing in {t}");
            assert!(t.contains("whoever holds this signature can use it"), "{t}");
        }
        let t = w(&permit(
            "permit2",
            Terms {
                witness: Some("Order".into()),
                ..Terms::default()
            },
        ));
        assert!(t.contains("keyd does not judge the witness"), "{t}");
        // Transactions show no terms (their nonce is bound in the ticket, not the words).
        let tx = Effect {
            terms: Terms {
                nonce: Some(9),
                ..Terms::default()
            },
            ..eth("transfer", 1, None)
        };
        let t = w(&tx);
        assert!(!t.contains("usable") && !t.contains("whoever"), "{t}");
    }
}
