//! What decides which operations need a person must not be loosened by the agent alone: keyd's
//! signing policy (a threshold raised or dropped lets every later send pass without a ticket)
//! and agentd's own bounds (`writableRoots`, `approvalTtlSecs`). Found by the 2026-11-30 review
//! of agentd (finding 5). Narrowing is never gated; a value the gate cannot decide counts as
//! loosening. Defaults are the module's (`lib/default.nix`).

use serde_json::{json, Value};

use super::*;

const KIND: &str = "policy.weaken";
const KEYD_CHAINS: [&str; 5] = ["services", "osmoda", "keyd", "policy", "chains"];
const KEYD_WALLETS: [&str; 5] = ["services", "osmoda", "keyd", "policy", "wallets"];
const AGENTD: [&str; 3] = ["services", "osmoda", "agentd"];

/// A bound: `Some(n)`, or `None` for no bound (`null` where the option allows it).
type Bound = Option<u128>;

/// An amount option (a decimal string of base units, or a number); absent = `absent`.
fn bound(v: V<'_>, absent: Bound) -> Result<Bound, ()> {
    match v {
        V::Absent => Ok(absent),
        V::Known(Value::Null) => Ok(None),
        V::Known(Value::String(s)) => s.parse().map(Some).map_err(|_| ()),
        V::Known(Value::Number(n)) => n.as_u64().map(|n| Some(u128::from(n))).ok_or(()),
        _ => Err(()),
    }
}

/// `now` lets more through than `was` (no bound is the largest).
fn raised(was: Bound, now: Bound) -> bool {
    match (was, now) {
        (_, None) => was.is_some(),
        (None, Some(_)) => false,
        (Some(w), Some(n)) => n > w,
    }
}

/// An amount bound at `path` raised, dropped, or no longer decidable.
fn amount(ctx: &Ctx<'_>, out: &mut Vec<Finding>, path: &[&str], absent: Bound, what: &str) {
    let (b, a) = (at(ctx.before, path), at(ctx.after, path));
    if b == a {
        return;
    }
    let (was, now) = (bound(b, absent), bound(a, absent));
    let looser = match (was, now) {
        (Ok(w), Ok(n)) => raised(w, n),
        _ => true,
    };
    if looser {
        let shown = |x: Result<Bound, ()>| match x {
            Ok(Some(n)) => json!(n.to_string()),
            Ok(None) => json!("<none>"),
            Err(()) => json!("<undecidable>"),
        };
        push_values(out, KIND, path, shown(was), shown(now), what);
    }
}

/// A list whose entries each allow something (`None`/`null` = `null_allows_all`): entries added,
/// the list dropped to "any", or no longer decidable.
fn widened(
    ctx: &Ctx<'_>,
    out: &mut Vec<Finding>,
    path: &[&str],
    absent: Option<&[Value]>,
    what: &str,
) {
    let (b, a) = (at(ctx.before, path), at(ctx.after, path));
    if b == a {
        return;
    }
    // `None` inside: every entry (no list).
    let entries = |v: V<'_>| -> Result<Option<Vec<Value>>, ()> {
        match v {
            V::Absent => Ok(absent.map(<[Value]>::to_vec)),
            V::Known(Value::Null) => Ok(None),
            V::Known(_) => v.list(&[]).map(Some).ok_or(()),
            V::Unknown => Err(()),
        }
    };
    let looser = match (entries(b), entries(a)) {
        // No list before: everything was allowed already.
        (Ok(None), Ok(_)) => false,
        (Ok(Some(_)), Ok(None)) => true,
        (Ok(Some(w)), Ok(Some(n))) => n.iter().any(|e| !w.contains(e)),
        _ => true,
    };
    if looser {
        push(out, KIND, path, b, a, what);
    }
}

fn chain(ctx: &Ctx<'_>, out: &mut Vec<Finding>, name: &str) {
    let base: Vec<&str> = KEYD_CHAINS.iter().copied().chain([name]).collect();
    let (b, a) = (at(ctx.before, &base), at(ctx.after, &base));
    if b == a {
        return;
    }
    if !b.exists() && a.exists() {
        push(
            out,
            KIND,
            &base,
            b,
            a,
            &format!("allows keyd to sign on {name}"),
        );
        return;
    }
    if !a.exists() {
        return; // a chain no longer allowed: narrower
    }
    let p = |rest: &[&'static str]| -> Vec<&str> {
        base.iter().copied().chain(rest.iter().copied()).collect()
    };
    amount(
        ctx,
        out,
        &p(&["perTxMax"]),
        None,
        &format!("raises keyd's largest {name} transaction"),
    );
    amount(
        ctx,
        out,
        &p(&["dailyLimit"]),
        None,
        &format!("raises keyd's daily {name} limit"),
    );
    amount(
        ctx,
        out,
        &p(&["approvalThreshold"]),
        None,
        &format!(
            "lets larger {name} sends pass without a person (approvalThreshold raised or removed)"
        ),
    );
    widened(
        ctx,
        out,
        &p(&["recipientAllowlist"]),
        None,
        &format!("lets keyd send {name} to more recipients"),
    );
    widened(
        ctx,
        out,
        &p(&["chainIds"]),
        Some(&[]),
        &format!("allows more {name} chain ids"),
    );
    widened(
        ctx,
        out,
        &p(&["typedData"]),
        Some(&[]),
        "allows typed data of more EIP-712 domains or types",
    );
    let tokens = p(&["tokens"]);
    for t in names(ctx, &tokens) {
        let tb: Vec<&str> = tokens.iter().copied().chain([t.as_str()]).collect();
        let (tb_b, tb_a) = (at(ctx.before, &tb), at(ctx.after, &tb));
        if !tb_b.exists() && tb_a.exists() {
            push(
                out,
                KIND,
                &tb,
                tb_b,
                tb_a,
                &format!("allows keyd to move token {t}"),
            );
            continue;
        }
        if !tb_a.exists() {
            continue;
        }
        let q = |f: &'static str| -> Vec<&str> { tb.iter().copied().chain([f]).collect() };
        amount(
            ctx,
            out,
            &q("perTxMax"),
            None,
            &format!("raises token {t}'s largest transfer"),
        );
        amount(
            ctx,
            out,
            &q("dailyLimit"),
            None,
            &format!("raises token {t}'s daily limit"),
        );
        amount(
            ctx,
            out,
            &q("approvalThreshold"),
            None,
            &format!("lets larger transfers of token {t} pass without a person"),
        );
    }
    if matches!(at(ctx.after, &tokens), V::Unknown) && at(ctx.before, &tokens) != V::Unknown {
        push(
            out,
            KIND,
            &tokens,
            at(ctx.before, &tokens),
            V::Unknown,
            "may allow more tokens",
        );
    }
}

pub(super) fn policy_weakened(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let (b, a) = (at(ctx.before, &KEYD_CHAINS), at(ctx.after, &KEYD_CHAINS));
    if b != a {
        if a == V::Unknown {
            push(
                out,
                KIND,
                &KEYD_CHAINS,
                b,
                a,
                "may loosen keyd's signing policy",
            );
        } else {
            for n in names(ctx, &KEYD_CHAINS) {
                chain(ctx, out, &n);
            }
        }
    }
    // Per-wallet bounds: an entry removed is `wallet.delete`'s; here a bound loosened.
    for w in names(ctx, &KEYD_WALLETS) {
        let base: Vec<&str> = KEYD_WALLETS.iter().copied().chain([w.as_str()]).collect();
        if !at(ctx.after, &base).exists() || !at(ctx.before, &base).exists() {
            continue;
        }
        let p = |f: &'static str| -> Vec<&str> { base.iter().copied().chain([f]).collect() };
        amount(
            ctx,
            out,
            &p("dailyLimit"),
            None,
            &format!("raises wallet {w}'s daily limit"),
        );
        widened(
            ctx,
            out,
            &p("recipientAllowlist"),
            None,
            &format!("lets wallet {w} send to more recipients"),
        );
    }
    let roots: Vec<Value> = osmoda_config::DEFAULT_WRITABLE_ROOTS
        .iter()
        .map(|r| json!(r))
        .collect();
    let p = |f: &'static str| -> Vec<&str> { AGENTD.iter().copied().chain([f]).collect() };
    widened(
        ctx,
        out,
        &p("writableRoots"),
        Some(&roots),
        "lets the agent write in more places without a person (writableRoots)",
    );
    amount(
        ctx,
        out,
        &p("approvalTtlSecs"),
        Some(900),
        "keeps approval tickets valid for longer",
    );
}
