//! The words a person reads before approving a signature (the ticket's `effect`, shown by
//! `agentctl approvals` and the chat approval): what kind of operation, which token contract,
//! the amount as the raw integer in the token's base units (no decimals are guessed), who
//! receives or may spend it, and native amounts in wei/lamports with ETH/SOL beside them.

use osmoda_config::Chain;

use crate::policy::Effect;

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

/// A native amount: "1500000000000000000 wei (1.5 ETH)" / "5000 lamports (0.000005 SOL)".
pub fn native_amount(chain: Chain, units: u128) -> String {
    match chain {
        Chain::Ethereum => format!("{units} wei ({} ETH)", native(units, 18)),
        Chain::Solana => format!("{units} lamports ({} SOL)", native(units, 9)),
    }
}

/// One line describing `e` for the wallet `label` at `address`, for the approval ticket.
pub fn describe(op: &str, e: &Effect, label: &str, address: &str) -> String {
    let wallet = format!("{} wallet {label:?} ({address})", e.chain.as_str());
    let to = e.to.as_deref().unwrap_or("?");
    let token = e.token.as_deref().unwrap_or("?");
    let units = format!(
        "{} base units (raw integer; the token's decimals are not applied) of ERC-20 token {token}",
        e.amount_text()
    );
    let what = match e.kind {
        "transfer" => format!(
            "TRANSFER {} from {wallet} to {to}",
            native_amount(e.chain, e.amount)
        ),
        "erc20_transfer" => format!("ERC-20 TRANSFER of {units} from {wallet} to {to}"),
        "erc20_approve" => format!(
            "ERC-20 APPROVE (allowance): spender {to} may take up to {units} from {wallet}"
        ),
        "erc20_permit" | "permit2" => format!(
            "ERC-20 PERMIT ({} signature; whoever holds it can use it): spender {to} may take up to {units} from {wallet}",
            if e.kind == "permit2" { "Permit2" } else { "EIP-2612" }
        ),
        other => format!(
            "{other} signature by {wallet}{}",
            e.to.as_deref()
                .map(|c| format!(" for contract {c}"))
                .unwrap_or_default()
        ),
    };
    let chain_id = e
        .chain_id
        .map(|c| format!(" on chain id {c}"))
        .unwrap_or_default();
    let fee = if e.fee > 0 {
        format!(", fees at most {}", native_amount(e.chain, e.fee))
    } else {
        String::new()
    };
    format!("{op}: {what}{chain_id}{fee}")
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "fees at most 60000000000000 wei (0.00006 ETH)",
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
            s.contains("2000000000 lamports (2 SOL)") && s.contains("5000 lamports (0.000005 SOL)"),
            "{s}"
        );
    }
}
