//! `agentctl verify-ledger` (the hash chain, then the signed checkpoints, read straight from the
//! files so it works while agentd is down) and `agentctl ledger keygen`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

use crate::output;

/// `agentctl ledger …`.
#[derive(Subcommand, Debug)]
pub enum LedgerCmd {
    /// Create a signed-note Ed25519 key for ledger checkpoints (for
    /// `services.osmoda.agentd.ledger.checkpoint.keyFile`); prints the verifier key.
    Keygen {
        /// Origin line of the checkpoints (the key's name), e.g. `host.example/osmoda-ledger`.
        #[arg(long)]
        name: String,
        /// Where to write the private key (mode 0600; an existing file is never replaced).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs `agentctl ledger …`.
///
/// # Errors
/// An invalid name, or a file that exists or cannot be written.
pub fn run(cmd: LedgerCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        LedgerCmd::Keygen { name, out } => {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let (skey, vkey) = osmoda_ledger::generate_key(&name)?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&out)
                .with_context(|| {
                    format!(
                        "creating {} (an existing key is never replaced)",
                        out.display()
                    )
                })?;
            f.write_all(format!("{skey}\n").as_bytes())?;
            f.sync_all()?;
            output::emit(&format!(
                "wrote {} (private, mode 0600)\nverifier key: {vkey}\n",
                out.display()
            ))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Where `agentctl verify-ledger` takes its trust anchors from: keys named on the command line
/// or in the configuration, never (silently) from the directory under check.
#[derive(Debug, Default)]
pub struct Anchors<'a> {
    /// Checkpoint verifier keys (`--vkey`, repeatable).
    pub vkeys: &'a [String],
    /// Files of checkpoint verifier keys, one per line (`--vkey-file`, repeatable).
    pub vkey_files: &'a [PathBuf],
    /// Witness verifier keys (`--witness-key`, repeatable).
    pub witness_keys: &'a [String],
    /// agentd's configuration (`--config`): `ledger.witness.peers` are the witnesses' keys.
    pub config: Option<&'a Path>,
    /// `--max-age`: a cosignature counts for `--witnesses N` only when signed at most this many
    /// seconds ago (0: any age). agentd asks its witnesses again every hour
    /// (`agentd::witness::REFRESH`), so an old copy of the ledger and its files (a rollback)
    /// carries only old cosignatures.
    pub max_age_secs: u64,
}

/// Where the witness keys of a `--witnesses N` check came from (for the `trust:` line).
#[derive(Debug, Clone, PartialEq, Eq)]
enum WitnessKeys {
    /// `--witness-key`: the operator's, from outside the machine under check.
    Named,
    /// `ledger.witness.peers` of this configuration file.
    Config(PathBuf),
}

fn key_lines(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
}

/// The checkpoint verifier keys: from the command line when given; otherwise from the state
/// dir (`checkpoint.vkeys`, `checkpoint.vkey`) with a warning that root can replace them there.
fn checkpoint_keys(dir: &Path, a: &Anchors<'_>) -> anyhow::Result<Vec<String>> {
    let mut keys: Vec<String> = a.vkeys.to_vec();
    for f in a.vkey_files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading the verifier keys {}", f.display()))?;
        keys.extend(key_lines(&text));
    }
    if !keys.is_empty() {
        return Ok(keys);
    }
    for name in ["checkpoint.vkeys", "checkpoint.vkey"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
            keys.extend(
                key_lines(&text)
                    .filter(|k| !keys.contains(k))
                    .collect::<Vec<_>>(),
            );
        }
    }
    if !keys.is_empty() {
        output::note(&format!(
            "warning: the verifier keys were read from {}, the directory being checked: whoever can rewrite the ledger can replace them there; pass --vkey or --vkey-file with keys kept elsewhere for a check that holds against root",
            dir.display()
        ));
    }
    Ok(keys)
}

/// The witnesses' keys and where they came from: `--witness-key`, else `ledger.witness.peers`
/// of the configuration. `witness-peers.keys` in the state dir is not trusted.
fn witness_keys(a: &Anchors<'_>) -> anyhow::Result<(Vec<String>, WitnessKeys)> {
    if !a.witness_keys.is_empty() {
        return Ok((a.witness_keys.to_vec(), WitnessKeys::Named));
    }
    let Some(config) = a.config else {
        anyhow::bail!("no witness keys: pass --witness-key <name+id+key> (repeatable) or --config <agentd.json> whose ledger.witness.peers name them (keys in the state dir are not trusted: whoever rolls the ledger back can rewrite them)");
    };
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", config.display()))?;
    let peers = v
        .pointer("/ledger/witness/peers")
        .or_else(|| v.pointer("/agentd/ledger/witness/peers"))
        .and_then(serde_json::Value::as_object);
    let keys: Vec<String> = peers
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    anyhow::ensure!(
        !keys.is_empty(),
        "{} names no witnesses (ledger.witness.peers); pass --witness-key",
        config.display()
    );
    Ok((keys, WitnessKeys::Config(config.to_path_buf())))
}

/// Checks that the newest checkpoint has at least `n` valid cosignatures (from
/// `cosignatures.jsonl` next to the database) by distinct witnesses among `keys`; `Some(exit
/// code)` when it has not.
fn witnessed(
    dir: &Path,
    cps: &[osmoda_ledger::SignedCheckpoint],
    n: usize,
    keys: &[String],
    max_age_secs: u64,
) -> anyhow::Result<Option<ExitCode>> {
    let cos = match osmoda_ledger::witness::read_cosignatures(&dir.join("cosignatures.jsonl")) {
        Ok(c) => c,
        Err(e) => return unparsable(e).map(Some),
    };
    let not_before = if max_age_secs == 0 {
        0
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        now.saturating_sub(max_age_secs)
    };
    let count = |since| {
        osmoda_ledger::witness::newest_cosigned_since(cps, &cos, keys, since)
            .map_err(|e| anyhow::anyhow!("witness keys: {e}"))
            .map(|r| r.unwrap_or((0, 0)))
    };
    let (size, have) = count(not_before)?;
    let fresh = if max_age_secs == 0 {
        String::new()
    } else {
        format!(" signed in the last {max_age_secs} s (--max-age)")
    };
    if have >= n {
        output::emit(&format!(
            "witnessed: the newest checkpoint (size {size}) has {have} valid cosignatures{fresh} (at least {n} asked)\n"
        ))?;
        return Ok(None);
    }
    let (_, any_age) = count(0)?;
    let stale = if any_age > have {
        format!(" ({any_age} of any age: older cosignatures are what an old copy of the ledger and its files, restored together, would carry; agentd asks its witnesses again every hour, so a live ledger has fresh ones unless its witnesses are unreachable or refuse)")
    } else {
        String::new()
    };
    output::note(&format!(
        "ledger NOT witnessed: the newest checkpoint (size {size}) has {have} of the {n} valid cosignatures{fresh} asked for{stale} (a witness refuses a ledger rolled back or forked since it last cosigned; `agentctl events --type agentd.witness.refused` shows why here, `agentd.witness.refusing` in the witness's own ledger)"
    ));
    Ok(Some(ExitCode::from(output::code::LEDGER_BROKEN)))
}

fn broken(msg: &str) -> anyhow::Result<ExitCode> {
    output::note(msg);
    Ok(ExitCode::from(output::code::LEDGER_BROKEN))
}

/// Evidence that does not parse (a line of the checkpoint or cosignature file, an
/// `agentd.checkpoint` event that is not a checkpoint) is broken evidence, exit 6; anything
/// else (the file cannot be read) is an error.
fn unparsable(e: osmoda_ledger::LedgerError) -> anyhow::Result<ExitCode> {
    match e {
        osmoda_ledger::LedgerError::Malformed(what) => broken(&format!(
            "ledger BROKEN: {what} (a record of a signed checkpoint or cosignature was changed)"
        )),
        e => Err(e.into()),
    }
}

/// Runs `agentctl verify-ledger`: exit 0 when the chain holds, the checkpoint file and the
/// ledger's own `agentd.checkpoint` events agree, and the rows match every signed checkpoint;
/// 6 (naming what disagrees) when not.
///
/// # Errors
/// A database that cannot be read; a `--checkpoints` file that does not exist; a malformed or
/// missing verifier key; `--witnesses` without witness keys.
pub fn verify(
    db: &Path,
    checkpoints: Option<&Path>,
    witnesses: Option<usize>,
    anchors: &Anchors<'_>,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(db.exists(), "no ledger at {}", db.display());
    if let Some(p) = checkpoints {
        anyhow::ensure!(
            p.exists(),
            "no checkpoint file at {} (the --checkpoints you named)",
            p.display()
        );
    }
    let report = osmoda_ledger::verify(db).with_context(|| format!("reading {}", db.display()))?;
    if let Some(bad) = report.first_bad {
        return broken(&format!(
            "ledger BROKEN at event {}: {}",
            bad.id, bad.reason
        ));
    }
    let dir = db.parent().unwrap_or(Path::new("."));
    let file_path = checkpoints.map_or_else(|| dir.join("checkpoints.jsonl"), Path::to_path_buf);
    let file = osmoda_ledger::CheckpointFile::new(&file_path);
    let cps = match file.read() {
        Ok(c) => c,
        Err(e) => return unparsable(e),
    };
    if let Some(n) = file.torn_tail()? {
        output::note(&format!(
            "note: {} ends in a torn line of {n} bytes (a crash while appending; agentd cuts it at its next start)",
            file_path.display()
        ));
    }
    let keys = checkpoint_keys(dir, anchors)?;
    let recorded = match osmoda_ledger::recorded_checkpoints(db) {
        Ok(r) => r,
        Err(e) => return unparsable(e),
    };
    let none_recorded = recorded.is_empty();
    if cps.is_empty() && none_recorded {
        // A key the operator passed says this ledger is signed: no checkpoint anywhere is no
        // pass. A key in the state dir only says agentd has one: agentd writes it at its first
        // start and signs only after `everyEvents` events, `intervalSecs` or at shutdown, so a
        // young ledger has none yet and that is no evidence of removal.
        let operator = !anchors.vkeys.is_empty() || !anchors.vkey_files.is_empty();
        if operator && !keys.is_empty() {
            return broken(&format!(
                "ledger BROKEN: the verifier keys you passed say checkpoints are signed, but none are in {} nor in the ledger: the file and the checkpoint events were removed (or agentd has not signed its first one yet)",
                file_path.display()
            ));
        }
        if !keys.is_empty() {
            if witnesses.is_some_and(|n| n > 0) {
                return broken(&format!(
                    "ledger NOT witnessed: no signed checkpoints at {}",
                    file_path.display()
                ));
            }
            output::emit(&format!(
                "ledger chain intact: {} events verified\nno signed checkpoint yet at {} nor in the ledger (agentd signs one every `ledger.checkpoint.everyEvents` events, `intervalSecs` and at shutdown): only the chain was checked. If checkpoints were signed here, the file and their events were removed: pass --vkey or --vkey-file with the key kept elsewhere to make that an error\n{}\n",
                report.events,
                file_path.display(),
                chain_only_trust()
            ))?;
            return Ok(ExitCode::SUCCESS);
        }
        if witnesses.is_some_and(|n| n > 0) {
            return broken(&format!(
                "ledger NOT witnessed: no signed checkpoints at {}",
                file_path.display()
            ));
        }
        output::emit(&format!(
            "ledger chain intact: {} events verified\nno signed checkpoints at {} and no verifier key: only the chain was checked (a recomputed chain or a cut-off tail would not show)\n{}\n",
            report.events,
            file_path.display(),
            chain_only_trust()
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    anyhow::ensure!(
        !keys.is_empty(),
        "no verifier key for the checkpoints in {}: pass --vkey <name+id+key> or --vkey-file FILE",
        file_path.display()
    );
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    // The ledger records every checkpoint as an event: both copies are checked against the
    // rows (so an edit shows even when the file is gone), then against each other.
    let mut all = cps.clone();
    all.extend(
        recorded
            .iter()
            .filter(|(_, r)| !cps.iter().any(|c| c.note == r.note))
            .map(|(_, r)| r.clone()),
    );
    let anchor = match osmoda_ledger::verify_checkpoints_by(db, &all, &key_refs) {
        Ok(a) => a,
        Err(osmoda_ledger::LedgerError::InvalidKey(e)) => {
            anyhow::bail!("{e} (a verifier key looks like <name>+<8 hex>+<base64>)")
        }
        Err(e @ osmoda_ledger::LedgerError::ProofFailed(_)) => {
            return broken(&format!(
                "ledger checkpoints do NOT verify ({}): {e}",
                file_path.display()
            ));
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(bad) = anchor.first_bad {
        return broken(&format!("ledger BROKEN: {bad}"));
    }
    // The ledger records every checkpoint as an event: the file and the ledger are two copies
    // that must agree, so emptying, replacing or cutting one of them shows.
    for (id, r) in &recorded {
        if !cps.iter().any(|c| c.note == r.note) {
            return broken(&format!(
                "ledger BROKEN: event {id} records a signed checkpoint of size {} that is not in {} (the checkpoint file was removed, emptied, replaced or cut)",
                r.size,
                file_path.display()
            ));
        }
    }
    if let Some(c) = cps
        .iter()
        .find(|c| !recorded.iter().any(|(_, r)| r.note == c.note))
    {
        return broken(&format!(
            "ledger BROKEN: the signed checkpoint of size {} in {} is not recorded in the ledger (its agentd.checkpoint event was removed; if agentd stopped while checkpointing, start it once: it records the checkpoint)",
            c.size,
            file_path.display()
        ));
    }
    let mut witnessed_by = None;
    if let Some(n) = witnesses.filter(|n| *n > 0) {
        let (keys, from) = witness_keys(anchors)?;
        if let Some(code) = witnessed(dir, &cps, n, &keys, anchors.max_age_secs)? {
            return Ok(code);
        }
        witnessed_by = Some((n, from));
    }
    output::emit(&format!(
        "ledger intact: {} events verified; consistent with {} signed checkpoints (newest covers {} events), each also recorded in the ledger\n{}\n",
        report.events,
        anchor.checkpoints,
        anchor.newest_size,
        trust(anchors, witnessed_by.as_ref())
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// The `trust:` line of a pass: whom the result holds against, given where the keys came from.
/// The checkpoint signing key is on the machine (agentd signs with it), so root there can
/// rewrite any history and re-sign every checkpoint; only cosignatures of witnesses on other
/// machines bind root.
///
/// Every anchor is named with where it came from: keys in the state dir or in a configuration
/// file on the checked machine are replaceable by root there, so only `--vkey`/`--vkey-file`
/// and `--witness-key` values support a claim against root.
fn trust(a: &Anchors<'_>, witnesses: Option<&(usize, WitnessKeys)>) -> String {
    let keys = if a.vkeys.is_empty() && a.vkey_files.is_empty() {
        "checkpoint verifier keys read from the state dir under check: this pass holds only against whoever can neither write that dir nor read the signing key"
    } else {
        "checkpoint verifier keys you passed (--vkey/--vkey-file): this pass holds against whoever cannot read the signing key; root on the signing machine can read it, rewrite any history and re-sign every checkpoint"
    };
    let fresh = if a.max_age_secs == 0 {
        "of any age (--max-age 0): an old copy of the ledger restored with its checkpoint and cosignature files (a rollback to a state that was once cosigned) passes".to_owned()
    } else {
        format!(
            "signed in the last {} s (--max-age): a rollback to a state cosigned within that time is not excluded",
            a.max_age_secs
        )
    };
    match witnesses {
        Some((n, WitnessKeys::Named)) => format!(
            "trust: {keys}; the newest checkpoint is cosigned by {n} witness(es) whose keys you passed (--witness-key), {fresh}: that binds root too, up to that checkpoint, as long as those witnesses run on other machines (events after it are bound by the signing key only)"
        ),
        Some((n, WitnessKeys::Config(path))) => format!(
            "trust: {keys}; the newest checkpoint is cosigned by {n} witness(es) whose keys were read from {} (--config), {fresh}: root on the machine holding that file can replace those keys with its own, so this binds root only if that file is out of its reach; pass --witness-key with keys kept elsewhere for a check that binds root",
            path.display()
        ),
        None => format!(
            "trust: {keys}. No witness was asked for: pass --witnesses N (cosignatures by other machines) for a check that holds against root"
        ),
    }
}

/// The `trust:` line of a pass that checked the chain only (no checkpoint yet).
fn chain_only_trust() -> &'static str {
    "trust: the hash chain only: whoever can write the database can recompute the chain or cut off its tail, and this pass would not show it"
}
