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

/// Runs `agentctl verify-ledger`: exit 0 when the chain holds and the rows match every signed
/// checkpoint, 6 (naming the first event that disagrees) when not.
///
/// # Errors
/// A database that cannot be read; checkpoints present without a verifier key.
/// Checks that the newest checkpoint has at least `n` valid cosignatures (from
/// `cosignatures.jsonl` next to the database) by distinct witnesses among `keys` (default: the
/// peers' keys agentd wrote to `witness-peers.keys`); `Some(exit code)` when it has not.
fn witnessed(
    dir: &Path,
    cps: &[osmoda_ledger::SignedCheckpoint],
    n: usize,
    keys: &[String],
) -> anyhow::Result<Option<ExitCode>> {
    let keys: Vec<String> = if keys.is_empty() {
        let p = dir.join("witness-peers.keys");
        std::fs::read_to_string(&p)
            .with_context(|| {
                format!(
                    "reading the witnesses' keys {} (pass --witness-key <name+id+key> instead)",
                    p.display()
                )
            })?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    } else {
        keys.to_vec()
    };
    let cos = osmoda_ledger::witness::read_cosignatures(&dir.join("cosignatures.jsonl"))?;
    let (size, have) = osmoda_ledger::witness::newest_cosigned(cps, &cos, &keys)
        .map_err(|e| anyhow::anyhow!("witness keys: {e}"))?
        .unwrap_or((0, 0));
    if have >= n {
        output::emit(&format!(
            "witnessed: the newest checkpoint (size {size}) has {have} valid cosignatures (at least {n} asked)\n"
        ))?;
        return Ok(None);
    }
    output::note(&format!(
        "ledger NOT witnessed: the newest checkpoint (size {size}) has {have} of the {n} valid cosignatures asked for (a witness refuses a ledger rolled back or forked since it last cosigned; `agentctl events --type agentd.witness.refused` shows why)"
    ));
    Ok(Some(ExitCode::from(output::code::LEDGER_BROKEN)))
}

pub fn verify(
    db: &Path,
    checkpoints: Option<&Path>,
    vkey: Option<&str>,
    witnesses: Option<(usize, &[String])>,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(db.exists(), "no ledger at {}", db.display());
    let report = osmoda_ledger::verify(db).with_context(|| format!("reading {}", db.display()))?;
    if let Some(bad) = report.first_bad {
        output::note(&format!(
            "ledger BROKEN at event {}: {}",
            bad.id, bad.reason
        ));
        return Ok(ExitCode::from(output::code::LEDGER_BROKEN));
    }
    let dir = db.parent().unwrap_or(Path::new("."));
    let file_path = checkpoints.map_or_else(|| dir.join("checkpoints.jsonl"), Path::to_path_buf);
    let file = osmoda_ledger::CheckpointFile::new(&file_path);
    let cps = file.read()?;
    if cps.is_empty() && witnesses.is_some_and(|(n, _)| n > 0) {
        output::note(&format!(
            "ledger NOT witnessed: no signed checkpoints at {}",
            file_path.display()
        ));
        return Ok(ExitCode::from(output::code::LEDGER_BROKEN));
    }
    if cps.is_empty() {
        output::emit(&format!(
            "ledger chain intact: {} events verified\nno signed checkpoints at {}: only the chain was checked (a recomputed chain or a cut-off tail would not show)\n",
            report.events,
            file_path.display()
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    let vkey = match vkey {
        Some(k) => k.to_owned(),
        None => {
            let p = dir.join("checkpoint.vkey");
            std::fs::read_to_string(&p)
                .with_context(|| {
                    format!(
                        "reading the verifier key {} (pass --vkey <name+id+key> to use another)",
                        p.display()
                    )
                })?
                .trim()
                .to_owned()
        }
    };
    let anchor = match osmoda_ledger::verify_checkpoints(db, &cps, &vkey) {
        Ok(a) => a,
        Err(
            e @ (osmoda_ledger::LedgerError::ProofFailed(_)
            | osmoda_ledger::LedgerError::InvalidKey(_)),
        ) => {
            output::note(&format!(
                "ledger checkpoints do NOT verify ({}): {e}",
                file_path.display()
            ));
            return Ok(ExitCode::from(output::code::LEDGER_BROKEN));
        }
        Err(e) => return Err(e.into()),
    };
    match anchor.first_bad {
        None => {
            if let Some((n, keys)) = witnesses.filter(|(n, _)| *n > 0) {
                if let Some(code) = witnessed(dir, &cps, n, keys)? {
                    return Ok(code);
                }
            }
            output::emit(&format!(
                "ledger intact: {} events verified; consistent with {} signed checkpoints (newest covers {} events)\n",
                report.events, anchor.checkpoints, anchor.newest_size
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(bad) => {
            output::note(&format!("ledger BROKEN: {bad}"));
            Ok(ExitCode::from(output::code::LEDGER_BROKEN))
        }
    }
}
