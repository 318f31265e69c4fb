//! osmoda-mesh: post-quantum hybrid links between osModa hosts. Peers are NixOS options
//! (`services.osmoda.mesh.peers.<name>`, rendered into `/etc/osmoda/mesh.json`); pairing by
//! invite writes the new peer into the config tree through agentd and applies it with
//! SafeSwitch, so every peer is a generation.
//!
//! Entry points: [`AppState::open`] opens the state (sealed identity, invites, inbox) and the
//! ledger spool; [`serve`] answers the local API (`api`) on a Unix socket and peers on a TCP
//! listener (`net`) until shutdown. The wire: `frame` (length-prefixed), `handshake`
//! (Noise_XXpsk3 + ML-KEM-768 + Ed25519 identity signatures), `message` (`MeshMessage`).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod agentd;
pub mod api;
pub mod error;
pub mod frame;
pub mod handover;
pub mod handshake;
pub mod identity;
pub mod intents;
pub mod invite;
pub mod link;
pub mod message;
pub mod net;
pub mod peer_events;
pub mod pq;
pub mod records;
pub mod requests;
pub mod store;
pub mod topics;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use osmoda_config::MeshConfig;
pub use osmoda_daemon::shutdown;
use osmoda_daemon::shutdown::Shutdown;

pub use error::MeshError;
use identity::{Identity, Keys};
use store::Store;

/// Timers of a link; tests shorten them.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Rekey (each direction) after this many messages sent with one key.
    pub rekey_messages: u64,
    /// Rekey after a key has been used this long.
    pub rekey_after: Duration,
    /// Send a ping after this long without sending.
    pub keepalive: Duration,
    /// Close a link that received nothing for this long.
    pub dead_after: Duration,
    /// First reconnect delay; doubled per failure up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// How often the dialer looks at `mesh.json` and the links.
    pub tick: Duration,
    /// Tests: every (session, direction, key epoch, nonce) a link sends with.
    pub nonce_log: Option<Arc<Mutex<Vec<link::NonceUse>>>>,
    /// The window of a peer's event budget ([`peer_events`]).
    pub event_window: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            rekey_messages: 10_000,
            rekey_after: Duration::from_secs(600),
            keepalive: Duration::from_secs(15),
            dead_after: Duration::from_secs(45),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            tick: Duration::from_secs(1),
            nonce_log: None,
            event_window: Duration::from_secs(60),
        }
    }
}

/// Everything osmoda-mesh needs to start.
#[derive(Clone)]
pub struct Options {
    /// `mesh.json`; a missing file means no peers.
    pub config: PathBuf,
    /// State: `mesh.db` (sealed identity, invites, inbox), the ledger spool, in local mode the
    /// generated `secret`.
    pub state_dir: PathBuf,
    /// agentd's socket (ledger, config API).
    pub agentd_socket: PathBuf,
    /// osmoda-watch's socket (SafeSwitch for pairing generations).
    pub watch_socket: PathBuf,
    /// File with the key-encryption secret (else the credential or a generated one).
    pub key_file: Option<PathBuf>,
    /// The name this host offers peers (invites, pairing); default: the host name.
    pub name: String,
    /// Link timers.
    pub tuning: Tuning,
}

type Loaded = Result<Arc<MeshConfig>, String>;

/// Shared state of the running daemon.
pub struct AppState {
    /// Identity, invites, inbox.
    pub store: Store,
    /// agentd and osmoda-watch.
    pub agentd: agentd::Agentd,
    /// Live links by peer name.
    pub links: Mutex<HashMap<String, link::LinkHandle>>,
    /// Requests in flight both ways.
    pub requests: requests::Requests,
    /// The name this host offers.
    pub name: String,
    /// Link timers.
    pub tuning: Tuning,
    /// The TCP port peers dial (set by [`serve`]).
    pub listen_port: Mutex<Option<u16>>,
    /// Peer records on their way into mesh.json (names held, links kept meanwhile).
    pub pending: records::Pending,
    /// One identity rotation at a time.
    pub rotating: tokio::sync::Mutex<()>,
    /// Peer records and switches owed to agentd and osmoda-watch (durable in `store`).
    pub intents: intents::Intents,
    /// One delivery of owed hand-overs at a time.
    pub handing: tokio::sync::Mutex<()>,
    /// The ledger events peers' traffic causes, on a budget per peer.
    pub peer_events: peer_events::PeerEvents,
    /// Why the last dial of each declared peer failed (cleared when one succeeds).
    dial_errors: Mutex<HashMap<String, String>>,
    identity: RwLock<Arc<Identity>>,
    config_path: PathBuf,
    config: Mutex<(Option<(SystemTime, u64)>, Loaded)>,
    next_link: std::sync::atomic::AtomicU64,
    pairing: tokio::sync::Mutex<()>,
    state_dir: PathBuf,
    pause: Option<String>,
    shutdown: Mutex<Option<Shutdown>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn empty() -> MeshConfig {
    MeshConfig {
        listen: "0.0.0.0:18800".into(),
        peers: Default::default(),
    }
}

fn load(path: &std::path::Path) -> Loaded {
    if !path.exists() {
        return Ok(Arc::new(empty()));
    }
    // The text reaches API answers: the file is named as mesh.json, not by its path; and mesh
    // does not keep the previous config (it admits no peer until the file is fixed).
    let cfg = osmoda_config::load::<MeshConfig>(path).map_err(|e| {
        e.to_string()
            .replace(&path.display().to_string(), "mesh.json")
            .replace(
                " (daemon keeps its previous config)",
                "; until then no peer is admitted",
            )
    })?;
    // Beyond the schema's sizes: each key is what it claims (an Ed25519 point, an ML-KEM-768
    // key that passes FIPS 203's check), or the file is refused, loudly, rather than the peer
    // silently never connecting.
    // One key names one peer: admission looks peers up by their X25519 key.
    let mut seen: HashMap<Vec<u8>, &str> = HashMap::new();
    for (name, p) in &cfg.peers {
        let k = Keys::decode(&p.public_keys).map_err(|e| {
            format!("mesh.json: peers.{name}.public_keys: {e}; fix services.osmoda.mesh.peers.{name}.publicKeys; until then no peer is admitted")
        })?;
        for (field, bytes) in [
            ("x25519", k.x25519.to_vec()),
            ("ed25519", k.ed25519.to_bytes().to_vec()),
        ] {
            if let Some(other) = seen.insert(bytes, name) {
                return Err(format!(
                    "mesh.json: peers.{name}.public_keys.{field} is also peer {other}'s: one key names one peer; until then no peer is admitted"
                ));
            }
        }
    }
    Ok(Arc::new(cfg))
}

fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// This host's name (`gethostname(2)`: no `/proc`, which the unit's `ProcSubset=pid` hides),
/// made a peer name (`[A-Za-z0-9_-]`, starting with a letter: `host-` before a digit).
///
/// # Errors
/// When the host has no name: the daemon must then be given `--name`.
pub fn default_name() -> Result<String, String> {
    let raw = nix::unistd::gethostname()
        .map_err(|e| format!("cannot read the host name ({e}); give --name"))?;
    peer_name_of(&raw.to_string_lossy())
}

/// `host` as a peer name (see [`default_name`]).
///
/// # Errors
/// An empty host name.
pub fn peer_name_of(host: &str) -> Result<String, String> {
    let s: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    if s.is_empty() {
        return Err("the host name is empty; give --name".into());
    }
    if osmoda_config::tree_edit::valid_attr_name(&s) {
        Ok(s)
    } else {
        Ok(format!("host-{s}").chars().take(48).collect::<String>())
    }
}

/// Checks `path` as osmoda-mesh would load it (`check-config`): the schema, then every
/// declared key decoded as the handshake uses it.
///
/// # Errors
/// The reason, naming the file as mesh.json.
pub fn check_config_file(path: &std::path::Path) -> Result<(), String> {
    load(path).map(|_| ())
}

impl AppState {
    /// Opens the state dir, reads the secret, opens (or creates) the sealed identity and the
    /// ledger spool.
    ///
    /// # Errors
    /// An unreadable secret, an identity that does not decrypt, an unusable state dir.
    pub fn open(opts: Options) -> Result<Arc<AppState>, MeshError> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&opts.state_dir)
            .map_err(|e| {
                MeshError::Internal(format!("cannot create {}: {e}", opts.state_dir.display()))
            })?;
        let secret = osmoda_vault::load_secret(opts.key_file.as_deref(), &opts.state_dir)?;
        let store = Store::open(&opts.state_dir, &secret)?;
        drop(secret);
        let identity = store.identity()?;
        let agentd = agentd::Agentd::open(
            &opts.agentd_socket,
            &opts.watch_socket,
            &opts.state_dir.join("spool"),
        )?;
        let loaded = load(&opts.config);
        if let Err(e) = &loaded {
            tracing::error!("mesh.json is invalid; no peer is admitted until it is fixed: {e}");
        }
        let state = Arc::new(AppState {
            store,
            agentd,
            links: Mutex::new(HashMap::new()),
            requests: requests::Requests::default(),
            name: opts.name,
            peer_events: peer_events::PeerEvents::new(opts.tuning.event_window),
            tuning: opts.tuning,
            listen_port: Mutex::new(None),
            pending: records::Pending::default(),
            rotating: tokio::sync::Mutex::new(()),
            intents: intents::Intents::default(),
            handing: tokio::sync::Mutex::new(()),
            dial_errors: Mutex::new(HashMap::new()),
            identity: RwLock::new(Arc::new(identity)),
            config: Mutex::new((stamp(&opts.config), loaded)),
            config_path: opts.config,
            next_link: std::sync::atomic::AtomicU64::new(1),
            pairing: tokio::sync::Mutex::new(()),
            pause: intents::pause_point(),
            state_dir: opts.state_dir,
            shutdown: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
        });
        // Records owed since before a crash keep their names until they are in mesh.json.
        intents::hold_names(&state)?;
        Ok(state)
    }

    /// Test hook: stops here for good when `OSMODA_MESH_PAUSE_IN` names `point`, after writing
    /// `<state_dir>/paused-in-<point>` (see [`intents::PAUSE_POINTS`]).
    pub async fn pause(&self, point: &str) {
        if self.pause.as_deref() != Some(point) {
            return;
        }
        let marker = self.state_dir.join(format!("paused-in-{point}"));
        if let Err(e) = std::fs::write(&marker, std::process::id().to_string()) {
            tracing::error!("cannot write the pause marker {}: {e}", marker.display());
        }
        tracing::warn!("pausing in {point} (OSMODA_MESH_PAUSE_IN)");
        std::future::pending::<()>().await;
    }

    /// The current identity.
    pub fn identity(&self) -> Arc<Identity> {
        self.identity
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the identity (after `store.rotate`).
    pub fn set_identity(&self, id: Identity) {
        *self
            .identity
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(id);
    }

    /// `mesh.json` as it is now (re-read when it changed: NixOS activation replaces it).
    ///
    /// # Errors
    /// The reason, while the file does not parse or validate.
    pub fn config(&self) -> Loaded {
        let now = stamp(&self.config_path);
        let mut g = self
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.0 != now {
            let loaded = load(&self.config_path);
            if let Err(e) = &loaded {
                tracing::error!("mesh.json is invalid; no peer is admitted until it is fixed: {e}");
            }
            *g = (now, loaded);
        }
        g.1.clone()
    }

    /// Whether `name` cannot be given to the peer whose X25519 key is `x`: mesh.json declares
    /// it for other (or unreadable) keys, or a live link under it authenticated another key.
    /// (A record pending for another key is checked by [`records::Pending`] itself.)
    pub fn name_taken(&self, cfg: &MeshConfig, name: &str, x: &[u8; 32]) -> bool {
        let declared = cfg
            .peers
            .get(name)
            .is_some_and(|p| Keys::decode(&p.public_keys).map_or(true, |k| &k.x25519 != x));
        declared
            || self
                .link(name)
                .is_some_and(|l| &l.info.current_keys().x25519 != x)
    }

    /// Records why the last dial of `peer` failed (`None`: it succeeded). True when the reason
    /// changed.
    pub fn note_dial_error(&self, peer: &str, error: Option<&str>) -> bool {
        let mut m = self
            .dial_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match error {
            None => m.remove(peer).is_some(),
            Some(e) => m.insert(peer.to_string(), e.to_string()).as_deref() != Some(e),
        }
    }

    /// Why the last dial of `peer` failed, while it has not succeeded since.
    pub fn dial_error(&self, peer: &str) -> Option<String> {
        self.dial_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(peer)
            .cloned()
    }

    /// Empties `name`'s inbox of the messages of every identity that does not hold the name
    /// now: an inbox belongs to an identity, not a name. The holders are the identity
    /// mesh.json declares under it and the one a pending record (a pairing, a hand-over)
    /// holds it for; a name neither declares nor holds keeps nothing.
    pub fn settle_inbox(&self, cfg: &MeshConfig, name: &str) {
        let mut owners = Vec::new();
        if let Some(k) = cfg
            .peers
            .get(name)
            .and_then(|p| Keys::decode(&p.public_keys).ok())
        {
            owners.push((k.x25519, k.fingerprint()));
        }
        if let Some(x) = self.pending.held(name) {
            let fp = self
                .link(name)
                .map(|l| l.info.current_keys())
                .filter(|k| k.x25519 == x)
                .map_or_else(|| "-".to_string(), |k| k.fingerprint());
            owners.push((x, fp));
        }
        match self.store.keep_inbox_of(name, &owners) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(peer = %name, dropped = n, "inbox messages of an identity that no longer holds the name were dropped");
            }
            Err(e) => tracing::error!(peer = %name, "cannot settle the inbox: {e}"),
        }
    }

    /// [`AppState::settle_inbox`] for every name with messages.
    pub fn settle_inboxes(&self, cfg: &MeshConfig) {
        match self.store.inbox_names() {
            Ok(names) => names.iter().for_each(|n| self.settle_inbox(cfg, n)),
            Err(e) => tracing::error!("cannot list the inboxes: {e}"),
        }
    }

    /// The declared peer whose X25519 key is `x`, with its decoded keys.
    pub fn peer_by_key(&self, x: &[u8; 32]) -> Option<(String, Keys, String)> {
        let cfg = self.config().ok()?;
        cfg.peers.iter().find_map(|(name, p)| {
            let k = Keys::decode(&p.public_keys).ok()?;
            (&k.x25519 == x).then(|| (name.clone(), k, p.endpoint.clone()))
        })
    }

    /// A fresh link id.
    pub fn link_id(&self) -> u64 {
        self.next_link
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// What every task started by the API holds (set by [`serve`]).
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| {
                // Not serving: a shutdown that never fires would leak links; this one has fired.
                osmoda_daemon::shutdown_channel().1
            })
    }

    /// Records `mesh.<kind>` caused by `peer`'s traffic when its budget admits it (else it is
    /// counted into the window's summary), without waiting for the spool.
    pub fn peer_event(
        self: &Arc<Self>,
        peer: &str,
        kind: peer_events::Kind,
        bytes: usize,
        event: &'static str,
        payload: serde_json::Value,
    ) {
        if self.peer_events.admit(peer, kind, bytes) {
            let st = self.clone();
            self.spawn(async move { st.agentd.event(event, payload).await });
        }
    }

    /// Records the summaries of the peers' event windows that ended over budget, by a task of
    /// its own (the caller does not wait for the spool); all of them, waited for, when `all`
    /// (shutdown).
    pub async fn record_over_budget(self: &Arc<Self>, all: bool) {
        let due = self.peer_events.due(all);
        if due.is_empty() {
            return;
        }
        let st = self.clone();
        let record = async move {
            for s in due {
                st.agentd.event("receive.over_budget", s).await;
            }
        };
        if all {
            record.await;
        } else {
            self.spawn(record);
        }
    }

    /// Runs `f` as a task [`serve`] waits for before it returns (links, handshakes, records),
    /// so a stopped daemon holds nothing (its spool lock, its database) once `serve` is done.
    pub fn spawn<F>(&self, f: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut g = self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.retain(|h| !h.is_finished());
        g.push(tokio::spawn(f));
    }

    async fn join_tasks(&self) {
        loop {
            let hs: Vec<_> = std::mem::take(
                &mut *self
                    .tasks
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            if hs.is_empty() {
                return;
            }
            for h in hs {
                // Every task watches the shutdown; a handshake or an agentd call ends by its
                // own timeout.
                if tokio::time::timeout(Duration::from_secs(30), h)
                    .await
                    .is_err()
                {
                    tracing::warn!("a task did not end within 30 s of shutdown");
                }
            }
        }
    }

    /// The link to `peer`, if connected.
    pub fn link(&self, peer: &str) -> Option<link::LinkHandle> {
        self.links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(peer)
            .cloned()
    }
}

/// Serves the local API on `listener` and peers on `tcp` until `shutdown`.
///
/// # Errors
/// When the Unix listener fails.
pub async fn serve(
    listener: tokio::net::UnixListener,
    tcp: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    if let Ok(a) = tcp.local_addr() {
        *state
            .listen_port
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(a.port());
    }
    *state
        .shutdown
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(shutdown.clone());
    let net = tokio::spawn(net::run(state.clone(), tcp, shutdown.clone()));
    let owed = tokio::spawn(intents::run(state.clone(), shutdown.clone()));
    let app = api::router(state.clone());
    let limits = osmoda_daemon::server::Limits::main(osmoda_daemon::fd_limit());
    let res = osmoda_daemon::server::serve(
        listener,
        "mesh",
        limits,
        app,
        osmoda_daemon::server::PeerCred::of,
        shutdown,
    )
    .await;
    let _ = net.await;
    let _ = owed.await;
    state.join_tasks().await;
    res
}
