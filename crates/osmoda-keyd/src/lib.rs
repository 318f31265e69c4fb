//! osmoda-keyd: Ethereum and Solana wallets whose keys never leave this process, signing under
//! a default-deny policy declared in NixOS (`/etc/osmoda/keyd.json`), never broadcasting (the
//! unit has `PrivateNetwork=true`).
//!
//! Entry points: [`AppState::open`] opens the state database, derives the key-encryption key
//! and the receipt spool from [`Options`]; [`serve`] answers the API (`api`) on a Unix socket
//! through the shared hardened listener until shutdown.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod agentd;
pub mod api;
pub mod chains;
mod commit;
pub mod error;
pub mod keys;
pub mod outbox;
pub mod policy;
pub mod store;
pub mod words;

#[cfg(test)]
mod vectors;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use osmoda_config::{KeydConfig, Policy};
pub use osmoda_daemon::shutdown;
use osmoda_daemon::shutdown::Shutdown;

pub use error::KeydError;
use keys::{KdfParams, LocalVault, SignerBackend};
use store::Store;

/// The clock keyd charges daily limits by (UTC days); tests inject their own.
pub type Clock = Arc<dyn Fn() -> time::OffsetDateTime + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(time::OffsetDateTime::now_utc)
}

/// Everything keyd needs to start.
#[derive(Clone)]
pub struct Options {
    /// `keyd.json`; a missing file is an empty policy (everything denied).
    pub config: PathBuf,
    /// State: `keyd.db` (wallets, sealed keys, counters), the receipt spool, in local mode the
    /// generated `secret`.
    pub state_dir: PathBuf,
    /// agentd's socket (receipts, approval tickets).
    pub agentd_socket: PathBuf,
    /// Time source for UTC days.
    pub clock: Clock,
}

/// What keyd reads from `keyd.json` at run time: the policy and the wallet cap.
type Loaded = Result<(Arc<Policy>, u32), String>;

/// Shared state of the running daemon.
pub struct AppState {
    /// Wallets, counters and the receipt outbox.
    pub store: Arc<Store>,
    /// Where keys are kept and used.
    pub backend: Box<dyn SignerBackend>,
    /// agentd: receipts and tickets.
    pub agentd: agentd::Agentd,
    /// One keystore import at a time (a KDF may use 256 MiB and ~1 s of a core); another
    /// import meanwhile is answered 429 rather than queued. The permit is held by the KDF's
    /// thread, so a request abandoned mid-KDF still counts until its KDF ends.
    pub imports: Arc<tokio::sync::Semaphore>,
    config_path: PathBuf,
    policy: Mutex<(Option<(SystemTime, u64)>, Loaded)>,
    clock: Clock,
}

fn load(path: &std::path::Path) -> Result<Option<KeydConfig>, String> {
    if !path.exists() {
        return Ok(None);
    }
    osmoda_config::load::<KeydConfig>(path)
        .map_err(|e| e.to_string())
        .map(Some)
}

fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn empty_policy() -> Policy {
    Policy {
        chains: Default::default(),
        wallets: Default::default(),
    }
}

/// The run-time settings of `cfg` (a missing file: an empty policy and the default cap).
fn settings(cfg: Option<KeydConfig>) -> (Arc<Policy>, u32) {
    cfg.map_or_else(
        || {
            (
                Arc::new(empty_policy()),
                osmoda_config::keyd::DEFAULT_MAX_WALLETS,
            )
        },
        |c| (Arc::new(c.policy), c.max_wallets),
    )
}

impl AppState {
    /// Opens the state dir, reads `keyd.json` (for `secret_file`) and the secret, derives the
    /// key-encryption key, opens agentd's receipt spool.
    ///
    /// # Errors
    /// An invalid `keyd.json`, an unreadable secret, an unusable state dir.
    pub fn open(opts: Options) -> Result<Arc<AppState>, KeydError> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&opts.state_dir)
            .map_err(|e| {
                KeydError::Internal(format!("cannot create {}: {e}", opts.state_dir.display()))
            })?;
        let cfg = load(&opts.config).map_err(KeydError::BadRequest)?;
        let secret_file = cfg.as_ref().and_then(|c| c.secret_file.as_deref());
        let store = Arc::new(Store::open(&opts.state_dir)?);
        let wallets = store.list()?;
        let check = store.meta("secret_check")?;
        let (source, would_create) = keys::secret_source(secret_file, &opts.state_dir);
        if would_create && (!wallets.is_empty() || check.is_some()) {
            return Err(KeydError::Vault(format!(
                "the key-encryption secret {} is missing, but {} holds {} wallet(s) sealed under a secret: keyd does not start (a new secret would not open them); restore the secret from backup, or set services.osmoda.keyd.secretFile to it",
                source.display(),
                opts.state_dir.join("keyd.db").display(),
                wallets.len()
            )));
        }
        let secret = keys::load_secret(secret_file, &opts.state_dir)?;
        let kdf = store.kdf_params(KdfParams::fresh()?)?;
        let vault = LocalVault::new(&secret, kdf)?;
        drop(secret);
        // The secret must open this state dir's keys: a check value sealed at the first start
        // (or, for a state dir from before it existed, the first wallet's key).
        let opens = match (&check, wallets.first()) {
            (Some(c), _) => vault.opens_check(c),
            (None, Some(w)) => vault.open(w).is_ok(),
            (None, None) => true,
        };
        if !opens {
            return Err(KeydError::Vault(format!(
                "the key-encryption secret {} does not open the keys in {} ({} wallet(s)): it is not the secret they were sealed with. keyd does not start; point services.osmoda.keyd.secretFile at the right secret (or restore {}/secret in local mode)",
                source.display(),
                opts.state_dir.join("keyd.db").display(),
                wallets.len(),
                opts.state_dir.display()
            )));
        }
        if check.is_none() {
            store.set_meta("secret_check", &vault.seal_check()?)?;
        }
        let backend: Box<dyn SignerBackend> = Box::new(vault);
        let agentd = agentd::Agentd::open(&opts.agentd_socket, &opts.state_dir.join("spool"))?;
        let loaded: Loaded = Ok(settings(cfg));
        Ok(Arc::new(AppState {
            store,
            backend,
            agentd,
            imports: Arc::new(tokio::sync::Semaphore::new(1)),
            policy: Mutex::new((stamp(&opts.config), loaded)),
            config_path: opts.config,
            clock: opts.clock,
        }))
    }

    /// The settings in force, re-read when `keyd.json` changed (NixOS activation replaces it).
    fn loaded(&self) -> Loaded {
        let now = stamp(&self.config_path);
        let mut g = self
            .policy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.0 != now {
            let loaded = load(&self.config_path).map(settings);
            if let Err(e) = &loaded {
                tracing::error!("keyd.json is invalid; denying everything until it is fixed: {e}");
            }
            *g = (now, loaded);
        }
        g.1.clone()
    }

    fn invalid(&self, e: &str, what: &str) -> KeydError {
        KeydError::Denied {
            reason: "config",
            message: format!(
                "the policy file {} is invalid, so {what}: {e}",
                self.config_path.display()
            ),
        }
    }

    /// The current policy, re-read when `keyd.json` changed (NixOS activation replaces it).
    ///
    /// # Errors
    /// `Denied` (`config`) while the file does not parse or validate: nothing is signed.
    pub fn policy(&self) -> Result<Arc<Policy>, KeydError> {
        self.loaded()
            .map(|(p, _)| p)
            .map_err(|e| self.invalid(&e, "everything is denied"))
    }

    /// The most wallets keyd may hold (`max_wallets`, re-read like the policy).
    ///
    /// # Errors
    /// `Denied` (`config`) while the file does not parse or validate: no wallet is created,
    /// since the cap in force is unknown.
    pub fn max_wallets(&self) -> Result<u32, KeydError> {
        self.loaded()
            .map(|(_, n)| n)
            .map_err(|e| self.invalid(&e, "no wallet is created"))
    }

    /// Today's UTC date (`YYYY-MM-DD`), the key of the daily counters.
    pub fn day(&self) -> String {
        let d = (self.clock)().to_offset(time::UtcOffset::UTC).date();
        format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
    }

    /// Now, RFC 3339 UTC.
    pub fn now_rfc3339(&self) -> String {
        (self.clock)()
            .to_offset(time::UtcOffset::UTC)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    }

    /// Delivers every waiting receipt now (the spooled ones and the outbox); returns how many.
    ///
    /// # Errors
    /// `Agentd` when agentd cannot take them; they stay for the next try.
    pub async fn flush(&self) -> Result<usize, KeydError> {
        let spooled = self.agentd.flush().await?;
        let s = Arc::clone(&self.store);
        let stream = tokio::task::spawn_blocking(move || s.outbox_stream())
            .await
            .map_err(KeydError::internal)??;
        let sent = outbox::deliver(&self.store, &self.agentd.client(), &stream)
            .await
            .map_err(KeydError::Agentd)?;
        Ok(spooled + sent)
    }

    /// Counts a denial and records its receipt.
    pub async fn denied(&self, reason: &str, payload: &serde_json::Value) {
        osmoda_daemon::metrics::global().keyd_denial(reason);
        self.agentd.receipt("wallet.deny", payload.clone()).await;
    }
}

/// Serves the API on `listener` until `shutdown`, and delivers the receipt outbox to agentd
/// meanwhile (what is left is delivered after the next start).
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: tokio::net::UnixListener,
    state: Arc<AppState>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let outbox = tokio::spawn(outbox::run(Arc::clone(&state.store), state.agentd.client()));
    let app = api::router(state);
    let limits = osmoda_daemon::server::Limits::main(osmoda_daemon::fd_limit());
    let res = osmoda_daemon::server::serve(
        listener,
        "keyd",
        limits,
        app,
        osmoda_daemon::server::PeerCred::of,
        shutdown,
    )
    .await;
    outbox.abort();
    res
}
