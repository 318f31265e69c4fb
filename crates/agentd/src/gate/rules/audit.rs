//! The ledger's tamper evidence and the backups (issue 18): what makes the agent accountable
//! must not be weakened by the agent alone. Defaults are the module's (`lib/default.nix`
//! `agentd.ledger` and `agentd.backup`), so leaving an option out and writing its default are
//! one effect.

use serde_json::{json, Value};

use super::*;

const AGENTD: [&str; 3] = ["services", "osmoda", "agentd"];

fn path<'a>(rest: &[&'a str]) -> Vec<&'a str> {
    AGENTD.iter().copied().chain(rest.iter().copied()).collect()
}

/// A positive number with `default` when absent; `Err(())` when it cannot be decided.
fn number(v: V<'_>, default: u64) -> Result<u64, ()> {
    match v {
        V::Absent => Ok(default),
        V::Known(x) => x.as_u64().ok_or(()),
        V::Unknown => Err(()),
    }
}

/// Flags every key under `p` (a list or a name → key set) that the edit adds and that is not a
/// complete verifier key of algorithm `alg` ([`osmoda_config::agentd::verifier_key`]).
fn unusable_keys(ctx: &Ctx<'_>, out: &mut Vec<Finding>, p: &[&str], alg: u8) {
    let keys = |v: V<'_>| -> Vec<String> {
        match v {
            V::Known(Value::Array(a)) => a
                .iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect(),
            V::Known(Value::Object(m)) => m
                .values()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    };
    let (b, a) = (at(ctx.before, p), at(ctx.after, p));
    let was = keys(b);
    if let Some(bad) = keys(a)
        .into_iter()
        .find(|k| !was.contains(k) && osmoda_config::agentd::verifier_key(k, alg).is_err())
    {
        push(
            out,
            "audit.weaken",
            p,
            b,
            a,
            &format!("adds {bad:?}, which is not a usable verifier key: agentd's witness would not start"),
        );
    }
}

/// A cadence (`everyEvents`, `intervalSecs`) that grows signs fewer checkpoints.
fn cadence(ctx: &Ctx<'_>, out: &mut Vec<Finding>, name: &str, default: u64, unit: &str) {
    let p = path(&["ledger", "checkpoint", name]);
    let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
    if b == a {
        return;
    }
    let (was, now) = (number(b, default), number(a, default));
    if matches!((was, now), (Ok(w), Ok(n)) if n <= w) {
        return;
    }
    push_values(
        out,
        "audit.weaken",
        &p,
        decided(was.ok()),
        decided(now.ok()),
        &format!("signs ledger checkpoints less often (every {unit})"),
    );
}

/// Any change of a value (a key file, the archive directory): the new one may be a file or a
/// place the agent controls.
fn changed(ctx: &Ctx<'_>, out: &mut Vec<Finding>, rest: &[&str], what: &str) {
    changed_at(ctx, out, &path(rest), what);
}

/// [`changed`] of the option at the full path `p`.
fn changed_at(ctx: &Ctx<'_>, out: &mut Vec<Finding>, p: &[&str], what: &str) {
    let p = p.to_vec();
    let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
    fn effective(v: V<'_>) -> Option<V<'_>> {
        match v {
            V::Absent | V::Known(Value::Null) => None,
            other => Some(other),
        }
    }
    if effective(b) != effective(a) {
        push(out, "audit.weaken", &p, b, a, what);
    }
}

/// `backup.keep`: `null` keeps every archive; fewer kept archives can push good ones out.
fn keep(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let p = path(&["backup", "keep"]);
    let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
    if b == a {
        return;
    }
    // None = every archive.
    let count = |v: V<'_>| -> Result<Option<u64>, ()> {
        match v {
            V::Absent => Ok(Some(7)),
            V::Known(Value::Null) => Ok(None),
            V::Known(x) => x.as_u64().map(Some).ok_or(()),
            V::Unknown => Err(()),
        }
    };
    let (was, now) = (count(b), count(a));
    let fewer = match (was, now) {
        (Ok(_), Ok(None)) => false,
        (Ok(None), Ok(Some(_))) => true,
        (Ok(Some(w)), Ok(Some(n))) => n < w,
        _ => true,
    };
    if fewer {
        let shown = |c: Result<Option<u64>, ()>| match c {
            Ok(Some(n)) => json!(n),
            Ok(None) => json!("every archive"),
            Err(()) => json!("<undecidable>"),
        };
        push_values(
            out,
            "audit.weaken",
            &p,
            shown(was),
            shown(now),
            "keeps fewer backup archives (a burst of new ones pushes the good ones out)",
        );
    }
}

pub(super) fn audit_weakened(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    lose_flag(
        ctx,
        out,
        "audit.weaken",
        &path(&["ledger", "checkpoint", "enable"]),
        true,
        "stops signing ledger checkpoints",
    );
    cadence(ctx, out, "everyEvents", 1000, "N events");
    cadence(ctx, out, "intervalSecs", 60, "N seconds");
    changed(
        ctx,
        out,
        &["ledger", "checkpoint", "keyFile"],
        "changes the key ledger checkpoints are signed with",
    );
    changed(
        ctx,
        out,
        &["ledger", "witness", "keyFile"],
        "changes this machine's witness key",
    );
    changed(
        ctx,
        out,
        &["backup", "dir"],
        "moves the backup archives to another directory",
    );
    keep(ctx, out);
    // Options outside `agentd` that reach what agentd is configured with: the state dir moves
    // the ledger, its checkpoint key and (by default) the backups; the mesh carries every
    // witness request, so turning it off or moving its socket stops them all.
    changed_at(
        ctx,
        out,
        &["services", "osmoda", "stateDir"],
        "moves agentd's state: a new empty ledger, a new checkpoint key and (by default) another backup directory",
    );
    let witnessing = |v: V<'_>| match v {
        V::Known(Value::Object(w)) => ["peers", "logs"].iter().any(|k| match w.get(*k) {
            Some(Value::Object(m)) => !m.is_empty(),
            Some(Value::Array(l)) => !l.is_empty(),
            Some(Value::Null) | None => false,
            Some(_) => true,
        }),
        V::Unknown => true,
        V::Known(_) | V::Absent => false,
    };
    if witnessing(at(ctx.before, &path(&["ledger", "witness"]))) {
        lose_flag(
            ctx,
            out,
            "audit.weaken",
            &["services", "osmoda", "mesh", "enable"],
            false,
            "turns the mesh off: every ledger witness stops (this machine's checkpoints are no longer cosigned, and it cosigns no peer's)",
        );
        changed_at(
            ctx,
            out,
            &["services", "osmoda", "mesh", "socket"],
            "moves the mesh socket agentd sends witness requests to",
        );
    }
    // Fewer witnesses, or a witness's key replaced: the peers that would see a rewrite.
    let peers = path(&["ledger", "witness", "peers"]);
    for n in names(ctx, &peers) {
        let p = [peers.as_slice(), &[n.as_str()]].concat();
        let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
        if b != V::Absent && b != a {
            push(
                out,
                "audit.weaken",
                &p,
                b,
                a,
                &format!("removes or replaces ledger witness {n}"),
            );
        }
    }
    let (b, a) = (at(ctx.before, &peers), at(ctx.after, &peers));
    if b != a && matches!(b, V::Known(Value::Object(m)) if !m.is_empty()) && a == V::Unknown {
        push(
            out,
            "audit.weaken",
            &peers,
            b,
            a,
            "may remove every ledger witness",
        );
    }
    // Peers' ledgers this machine stops cosigning.
    let logs = path(&["ledger", "witness", "logs"]);
    let (b, a) = (at(ctx.before, &logs), at(ctx.after, &logs));
    if b != a {
        let (was, now) = (b.list(&[]), a.list(&[]));
        let drops = match (&was, &now) {
            (Some(w), Some(n)) => w.iter().any(|k| !n.contains(k)),
            (Some(w), None) => !w.is_empty(),
            (None, _) => true,
        };
        if drops {
            push(
                out,
                "audit.weaken",
                &logs,
                b,
                a,
                "stops cosigning a peer's ledger",
            );
        }
    }
    // A key agentd cannot use turns its witness off at start (`agentd.witness.off`): adding
    // one is a weakening, not an addition (agentd's load check refuses it before the gate
    // whenever a Nix evaluator renders the edit; this holds when none does).
    unusable_keys(ctx, out, &peers, osmoda_config::agentd::WITNESS_KEY_ALG);
    unusable_keys(ctx, out, &logs, osmoda_config::agentd::LOG_KEY_ALG);
    // The whole block: a forced or computed value the gate cannot read.
    for rest in [&["ledger"][..], &["backup"][..]] {
        let p = path(rest);
        let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
        if a == V::Unknown && b != a {
            push(
                out,
                "audit.weaken",
                &p,
                b,
                a,
                "may weaken the ledger's tamper evidence or the backups",
            );
        }
    }
}
