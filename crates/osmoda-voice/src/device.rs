//! The audio device: a PipeWire server, reached through its `pw-play` and `pw-record` clients.
//!
//! "There is an audio device" means both clients are installed and a PipeWire server answers on
//! its socket; anything else is said as "no audio device: <why>" in `/voice/status` and in the
//! 503 of the calls that need one. Every client runs with a timeout, and a capture that brings
//! no audio at all (PipeWire runs, but nothing links a source to the recorder) is refused rather
//! than passed off as silence: a real source delivers samples continuously, silence as zeros.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::error::{Result, VoiceError};

/// How long a source may deliver nothing before a capture counts as broken (a source delivers
/// a period every few milliseconds; silence is zeros, not a pause).
pub const NO_AUDIO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a probe of PipeWire's socket may wait for the server to take the connection.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The arguments that make `pw-record` capture what whisper.cpp reads: 16 kHz mono 16-bit PCM.
pub const RECORD_FORMAT: [&str; 6] = ["--rate", "16000", "--channels", "1", "--format", "s16"];

/// The recorder's stream properties when a source is named (`--target`): WirePlumber links it
/// to that node only and never to another, the default source included, which any client of
/// the server may create and select. Each key closes one way (WirePlumber 0.5's
/// `docs/rst/policies/linking.rst`, `linking/find-defined-target.lua`, `prepare-link.lua`):
/// - `node.dont-fallback`: the named node is missing (unplugged, renamed, not there yet): the
///   stream is destroyed with "defined target not found" instead of linked to the default or
///   best source. 0.5 falls back without it even with `node.dont-reconnect`.
/// - `node.dont-move`: a `target.object` another client writes into the default metadata is
///   ignored; without it 0.5 links the stream to that node too (with `node.dont-reconnect`,
///   beside the named one), so the agent would hear the other client's source.
/// - `node.dont-reconnect`: the named node goes away: the stream is destroyed, not moved to
///   the default; on WirePlumber 0.4 (which knows neither key above) it alone stops the
///   fallback and the move of a linked stream.
pub const PINNED_PROPS: &str =
    "{ node.dont-reconnect = true node.dont-fallback = true node.dont-move = true }";

/// The longest source name taken, in bytes (PipeWire's own node names are well under it).
pub const MAX_SOURCE_LEN: usize = 256;

/// Checks a PipeWire source name (`services.osmoda.voice.source`, `--source`) before anything
/// records with it: a name `pw-record --target` and WirePlumber take as that node's
/// `node.name`, and nothing else.
///
/// # Errors
/// What is wrong with it, naming the option: empty; longer than [`MAX_SOURCE_LEN`]; white space
/// at either end or a control character (a name PipeWire never gives, which would also be
/// passed off in the status and the ledger); a number, which `pw-record` reads as "link to
/// nothing" (`0`) and WirePlumber as an object serial (any other), never as a name.
pub fn check_source(name: &str) -> std::result::Result<(), String> {
    let opt = "services.osmoda.voice.source (--source)";
    let why = if name.is_empty() {
        "is empty (leave it unset for the default source)"
    } else if name.len() > MAX_SOURCE_LEN {
        "is longer than 256 bytes"
    } else if name.trim() != name {
        "has white space at its start or end"
    } else if name.chars().any(char::is_control) {
        "holds a control character"
    } else if is_number(name) {
        "is a number: pw-record reads 0 as \"link to nothing\" and WirePlumber any other as an object serial, which changes; give the node's node.name"
    } else {
        return Ok(());
    };
    Err(format!("{opt} {why}"))
}

/// What Lua's `tonumber` (WirePlumber's test for a serial) and pw-record's "0" take as a number:
/// decimal integers and floats, and hexadecimal integers, with an optional sign.
fn is_number(s: &str) -> bool {
    let t = s.strip_prefix(['-', '+']).unwrap_or(s);
    let hex = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()));
    hex || (t.chars().any(|c| c.is_ascii_digit()) && t.parse::<f64>().is_ok())
}

/// Where audio goes in and out: PipeWire through `pw-play` and `pw-record`.
#[derive(Debug, Clone)]
pub struct AudioDevice {
    /// `pw-play` (a name on `PATH` or a path).
    pub player: PathBuf,
    /// `pw-record`.
    pub recorder: PathBuf,
    /// The PipeWire server's directory (holding `pipewire-0`); `None`: from the environment
    /// (see [`pipewire_socket`]). When set, the clients are pointed at it too.
    pub runtime_dir: Option<PathBuf>,
    /// The PipeWire node (`node.name`) recordings and the listen loop capture from
    /// (`services.osmoda.voice.source`); `None`: the server's default source, which any client
    /// of the server may choose.
    pub source: Option<String>,
}

impl Default for AudioDevice {
    fn default() -> Self {
        AudioDevice {
            player: "pw-play".into(),
            recorder: "pw-record".into(),
            runtime_dir: None,
            source: None,
        }
    }
}

fn on_path(cmd: &Path) -> bool {
    if cmd.components().count() > 1 {
        return cmd.is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// The PipeWire socket the clients would use: `$PIPEWIRE_REMOTE` when it is a path, else
/// `pipewire-0` in `$PIPEWIRE_RUNTIME_DIR`, `$XDG_RUNTIME_DIR` or `/run/pipewire`.
pub fn pipewire_socket() -> PathBuf {
    let remote = std::env::var("PIPEWIRE_REMOTE").unwrap_or_else(|_| "pipewire-0".into());
    if remote.starts_with('/') {
        return remote.into();
    }
    let dir = ["PIPEWIRE_RUNTIME_DIR", "XDG_RUNTIME_DIR"]
        .iter()
        .find_map(|v| std::env::var_os(v).filter(|s| !s.is_empty()))
        .map_or_else(|| PathBuf::from("/run/pipewire"), PathBuf::from);
    dir.join(remote)
}

/// The environment variables children (piper, `pw-play`, `pw-record`) get; nothing else, so
/// the gateway token and whatever else the unit's environment holds (model API keys) stay in
/// this process.
pub const CHILD_ENV: [&str; 11] = [
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "PIPEWIRE_RUNTIME_DIR",
    "PIPEWIRE_REMOTE",
    "LD_LIBRARY_PATH",
];

/// Clears `cmd`'s environment but for [`CHILD_ENV`].
pub fn clean_env(cmd: &mut Command) {
    cmd.env_clear();
    for k in CHILD_ENV {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
}

/// Makes the child `cmd` starts die with this daemon: the kernel sends it SIGKILL when the
/// daemon's thread that started it ends (`PR_SET_PDEATHSIG`), and a child whose daemon is
/// already gone by the time it would run exits at once. So no recorder, player or piper
/// outlives a daemon killed with SIGKILL, outside systemd's cgroup too (`kill_on_drop` covers
/// only the daemon's own orderly drops).
///
/// Children are started from tokio's worker threads, which live as long as the runtime (never
/// from the blocking pool, whose idle threads end and would take the child with them).
pub fn die_with_daemon(cmd: &mut Command) {
    let daemon = nix::unistd::getpid();
    let child_setup = move || -> std::io::Result<()> {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
        // The daemon died before the line above: the signal was never set up for it.
        if nix::unistd::getppid() != daemon {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    };
    // SAFETY: the closure runs in the child between fork and exec. It calls only prctl(2) and
    // getppid(2), which are async-signal-safe, and allocates nothing (the error is a raw OS
    // error), as `pre_exec` requires.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(child_setup);
    }
}

impl AudioDevice {
    /// The PipeWire socket this device uses.
    pub fn socket(&self) -> PathBuf {
        match &self.runtime_dir {
            Some(d) => d.join("pipewire-0"),
            None => pipewire_socket(),
        }
    }

    /// `Ok` when audio can be played and recorded here: both clients are installed and a
    /// PipeWire server accepts a connection on [`socket`](Self::socket) (a socket file left by
    /// a server that is gone does not count).
    ///
    /// # Errors
    /// Why not, starting "no audio device: ", for the API and `/voice/status`.
    pub async fn check(&self) -> std::result::Result<(), String> {
        for cmd in [&self.player, &self.recorder] {
            if !on_path(cmd) {
                return Err(format!(
                    "no audio device: {} is not installed (PipeWire's tools)",
                    cmd.display()
                ));
            }
        }
        let sock = self.socket();
        let hint = "set services.osmoda.voice.pipewireRuntimeDir to a running PipeWire's directory";
        use std::os::unix::fs::FileTypeExt;
        match std::fs::metadata(&sock) {
            Ok(m) if m.file_type().is_socket() => {}
            _ => {
                return Err(format!(
                    "no audio device: no PipeWire server at {} ({hint})",
                    sock.display()
                ))
            }
        }
        // A non-blocking connect under a deadline: a stalled PipeWire (its listen queue full)
        // makes a blocking connect(2) wait forever on one of the daemon's async workers, and a
        // few of those stop the whole daemon, /health included.
        let answered =
            match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::UnixStream::connect(&sock)).await
            {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no connection within {} ms", PROBE_TIMEOUT.as_millis()),
            };
        Err(format!(
            "no audio device: the PipeWire server at {} does not answer ({answered}); is PipeWire running? ({hint})",
            sock.display()
        ))
    }

    /// What recordings hear, for the API and the ledger: the named node, or `default source`.
    pub fn source_name(&self) -> String {
        self.source
            .clone()
            .unwrap_or_else(|| "default source".into())
    }

    /// `pw-record` pointed at this device's server and source, in the format whisper reads.
    fn recorder_command(&self) -> Command {
        let mut c = self.command(&self.recorder);
        c.args(RECORD_FORMAT);
        if let Some(node) = &self.source {
            c.arg("--target").arg(node).arg("-P").arg(PINNED_PROPS);
        }
        c
    }

    /// A client command pointed at this device's server.
    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        clean_env(&mut c);
        die_with_daemon(&mut c);
        if let Some(d) = &self.runtime_dir {
            c.env("PIPEWIRE_RUNTIME_DIR", d)
                .env_remove("PIPEWIRE_REMOTE");
        }
        c.stdin(Stdio::null()).kill_on_drop(true);
        c
    }

    /// Plays a WAV file on the default sink and waits until it has played (its length plus
    /// 10 s at most).
    ///
    /// # Errors
    /// The reason it did not play.
    pub async fn play(&self, file: &Path, duration_ms: u64) -> std::result::Result<(), String> {
        self.check().await?;
        let limit = Duration::from_millis(duration_ms) + Duration::from_secs(10);
        let mut child = self
            .command(&self.player)
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.player.display()))?;
        let stderr = child.stderr.take();
        let status = tokio::time::timeout(limit, child.wait())
            .await
            .map_err(|_| {
                format!(
                    "{} did not finish within {} s",
                    self.player.display(),
                    limit.as_secs()
                )
            })?
            .map_err(|e| format!("{}: {e}", self.player.display()))?;
        if status.success() {
            return Ok(());
        }
        let mut msg = String::new();
        if let Some(mut e) = stderr {
            use tokio::io::AsyncReadExt;
            let _ = e.read_to_string(&mut msg).await;
        }
        Err(format!(
            "{} failed ({status}): {}",
            self.player.display(),
            msg.trim()
        ))
    }

    /// Records `length` from the source ([`source`](Self::source), else the default) into the new WAV file `out` (16 kHz mono
    /// 16-bit), stopping `pw-record` with SIGINT so it completes the header. Returns the
    /// samples recorded.
    ///
    /// # Errors
    /// `Unavailable` when the recorder cannot start, stops by itself, or recorded no audio at
    /// all (no source is linked to it); `Engine` when it does not stop or leaves no valid WAV.
    /// `out` is removed on every error.
    pub async fn record(&self, out: &Path, length: Duration) -> Result<u64> {
        // Removed on an error and when the caller is gone before the end (this future dropped,
        // the recorder killed with it): a cut-off recording is no recording.
        let mut partial = Partial(Some(out.to_owned()));
        let res = self.record_inner(out, length).await;
        if res.is_ok() {
            partial.0 = None;
        }
        res
    }

    async fn record_inner(&self, out: &Path, length: Duration) -> Result<u64> {
        let rec = self.recorder.display();
        let mut child = self
            .recorder_command()
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| VoiceError::Unavailable(format!("cannot start {rec}: {e}")))?;
        let started = Instant::now();
        if let Ok(st) = tokio::time::timeout(length, child.wait()).await {
            let source = self.source.as_ref().map_or_else(
                || "a PipeWire source".into(),
                |n| format!("the PipeWire source {n}"),
            );
            return Err(VoiceError::Unavailable(format!(
                "no audio device: {rec} stopped after {} ms ({}); is {source} there?",
                started.elapsed().as_millis(),
                st.map_or_else(|e| e.to_string(), |s| s.to_string())
            )));
        }
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
            return Err(VoiceError::Engine(format!("{rec} did not stop on SIGINT")));
        }
        let samples = hound::WavReader::open(out)
            .map_err(|e| VoiceError::Engine(format!("{rec} left no valid WAV file: {e}")))?
            .duration();
        if samples == 0 {
            return Err(VoiceError::Unavailable(format!(
                "no audio device: {rec} recorded nothing in {} s, no source is linked to it (is a microphone there, and a session manager such as WirePlumber running?)",
                length.as_secs()
            )));
        }
        Ok(u64::from(samples))
    }

    /// Starts `pw-record` writing a 16 kHz mono 16-bit WAV stream of the source to its
    /// stdout (piped); the caller reads it and the child is killed when dropped.
    ///
    /// # Errors
    /// Why it cannot start.
    pub fn stream(&self) -> std::result::Result<Child, String> {
        self.recorder_command()
            .arg("-")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.recorder.display()))
    }
}

/// A file removed when dropped, unless taken out first: what an interrupted write (an error, or
/// its future dropped because the caller left) leaves behind.
pub(crate) struct Partial(pub(crate) Option<PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_pipewire_is_no_device_at_once_and_blocks_nothing() {
        use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("pipewire-0");
        // A server that never accepts (hung, SIGSTOPped): its listen queue fills up.
        let _server = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let addr = UnixAddr::new(&sock).unwrap();
        let mut queued = Vec::new();
        loop {
            let fd = socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_NONBLOCK,
                None,
            )
            .unwrap();
            use std::os::fd::AsRawFd;
            match connect(fd.as_raw_fd(), &addr) {
                Ok(()) => queued.push(fd),
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => panic!("{e}"),
            }
            assert!(queued.len() < 100_000, "the listen queue never filled");
        }
        let dev = AudioDevice {
            player: PathBuf::from("/bin/sh"),
            recorder: PathBuf::from("/bin/sh"),
            runtime_dir: Some(dir.path().to_owned()),
            source: None,
        };
        // Probes on a one-worker runtime, as many as status polling makes: none may hold the
        // worker (a blocking connect(2) here waits forever, so the answer never comes).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let started = Instant::now();
            let out = rt.block_on(async {
                let probes: Vec<_> = (0..8).map(|_| dev.check()).collect();
                let mut out = Vec::new();
                for p in probes {
                    out.push(p.await);
                }
                out
            });
            let _ = tx.send((out, started.elapsed()));
        });
        let (out, took) = rx
            .recv_timeout(PROBE_TIMEOUT * 8 + Duration::from_secs(10))
            .expect("a probe of a stalled PipeWire blocked its worker");
        for r in out {
            let e = r.unwrap_err();
            assert!(e.contains("does not answer"), "{e}");
        }
        assert!(
            took < PROBE_TIMEOUT * 8 + Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[test]
    fn a_source_is_a_node_name_and_nothing_else() {
        let check = |name: &str, says: Option<&str>| match (check_source(name), says) {
            (Ok(()), None) => {}
            (Err(e), Some(w)) => {
                assert!(
                    e.starts_with("services.osmoda.voice.source"),
                    "{name:?}: {e}"
                );
                assert!(e.contains(w), "{name:?}: {e}");
            }
            (r, _) => panic!("{name:?}: {r:?}, wanted {says:?}"),
        };
        check("alsa_input.pci-0000_00_1f.3.analog-stereo", None);
        check("osmoda-test-mic", None);
        check("bluez_input.00:11:22:33:44:55.0", None);
        check("mic 2", None);
        check("0x1f-mic", None);
        check("inf", None);
        check("", Some("is empty"));
        check(" ", Some("white space"));
        check("mic ", Some("white space"));
        check("\tmic", Some("white space"));
        check("mic\u{7}", Some("control character"));
        check("mi\u{85}c", Some("control character"));
        check(&"m".repeat(257), Some("longer than 256 bytes"));
        check(&"m".repeat(256), None);
        for n in ["0", "42", "-1", "+7", "1.5", "1e3", "0x1F", "-0x10"] {
            check(n, Some("is a number"));
        }
    }

    #[tokio::test]
    async fn no_device_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let sh = PathBuf::from("/bin/sh");
        let dev = |player: &Path| AudioDevice {
            player: player.to_owned(),
            recorder: sh.clone(),
            runtime_dir: Some(dir.path().to_owned()),
            source: None,
        };
        let e = dev(Path::new("/nonexistent/pw-play"))
            .check()
            .await
            .unwrap_err();
        assert!(e.contains("/nonexistent/pw-play is not installed"), "{e}");
        let e = dev(&sh).check().await.unwrap_err();
        assert!(
            e.starts_with("no audio device: no PipeWire server at "),
            "{e}"
        );
        // A socket file whose server is gone.
        let sock = dir.path().join("pipewire-0");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        let e = dev(&sh).check().await.unwrap_err();
        assert!(e.contains("does not answer"), "{e}");
        let _live = std::os::unix::net::UnixListener::bind({
            std::fs::remove_file(&sock).unwrap();
            &sock
        })
        .unwrap();
        assert_eq!(dev(&sh).check().await, Ok(()));
    }
}
