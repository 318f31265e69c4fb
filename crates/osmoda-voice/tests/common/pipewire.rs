//! A real PipeWire for the voice tests, private to one test and touching no real device.
//!
//! `pipewire` runs unprivileged on its own config in a temp runtime dir with two null nodes
//! (`support.null-audio-sink`): a speaker (`Audio/Sink`, where `pw-play` plays) and a
//! microphone (`Audio/Source/Virtual`, what `pw-record` records). WirePlumber (on a private
//! D-Bus session bus; its ALSA, V4L2, libcamera and Bluetooth monitors off) makes them the
//! default sink and source and links clients to them, and the speaker's monitor is linked into
//! the microphone: what is played is heard, as across a quiet room. Every wait has a deadline;
//! dropping the value stops the three processes and removes the directory.
#![allow(dead_code, clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use osmoda_voice::device::AudioDevice;

pub const SPEAKER: &str = "osmoda-test-speaker";
pub const MIC: &str = "osmoda-test-mic";

const CONF: &str = r#"
context.properties = {
    core.daemon = true
    core.name = pipewire-0
    link.max-buffers = 16
    default.clock.rate = 48000
}
context.spa-libs = {
    audio.convert.* = audioconvert/libspa-audioconvert
    support.*       = support/libspa-support
}
context.modules = [
    { name = libpipewire-module-protocol-native }
    { name = libpipewire-module-metadata }
    { name = libpipewire-module-spa-node-factory }
    { name = libpipewire-module-client-node }
    { name = libpipewire-module-access }
    { name = libpipewire-module-adapter }
    { name = libpipewire-module-link-factory }
    { name = libpipewire-module-session-manager }
]
context.objects = [
    { factory = spa-node-factory
      args = { factory.name = support.node.driver node.name = Dummy-Driver
               node.group = pipewire.dummy priority.driver = 20000 } }
    { factory = adapter
      args = { factory.name = support.null-audio-sink node.name = osmoda-test-speaker
               node.description = "osModa test speaker" media.class = Audio/Sink
               audio.position = [ MONO ] audio.rate = 48000 priority.session = 2000 } }
    { factory = adapter
      args = { factory.name = support.null-audio-sink node.name = osmoda-test-mic
               node.description = "osModa test microphone" media.class = Audio/Source/Virtual
               audio.position = [ MONO ] audio.rate = 48000 priority.session = 2000 } }
]
"#;

/// No hardware for WirePlumber 0.4: only the nodes above.
const WP_MAIN: &str = "alsa_monitor.enabled = false\nv4l2_monitor.enabled = false\nlibcamera_monitor.enabled = false\n";
const WP_BLUETOOTH: &str = "bluez_monitor.enabled = false\n";
/// The same for WirePlumber 0.5, which reads SPA-JSON instead of Lua.
const WP05_PROFILE: &str = "wireplumber.profiles = { main = { monitor.alsa = disabled monitor.alsa-midi = disabled monitor.v4l2 = disabled monitor.libcamera = disabled monitor.bluez = disabled monitor.bluez-midi = disabled } }\n";

/// Which PipeWire and WirePlumber run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The machine's own (Debian 12: PipeWire 0.3.65, WirePlumber 0.4), from `PATH`.
    Installed,
    /// PipeWire 1.4 and WirePlumber 0.5, NixOS's generation, fetched by
    /// `scripts/fetch-pipewire-1.4` (Debian's backports, unpacked into a cache).
    Wireplumber05,
}

/// The prefix `scripts/fetch-pipewire-1.4` prints (fetched once, then cached); panics saying
/// why when it cannot be had, so the tests that need it fail rather than skip.
fn wireplumber05_bin() -> PathBuf {
    static PREFIX: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PREFIX
        .get_or_init(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-pipewire-1.4");
            let out = Command::new(&script)
                .stderr(Stdio::inherit())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "{} failed: {text}", script.display());
            let prefix = text
                .lines()
                .find_map(|l| l.strip_prefix("PREFIX="))
                .unwrap_or_else(|| panic!("fetch-pipewire-1.4 printed no PREFIX: {text}"));
            PathBuf::from(prefix).join("bin")
        })
        .clone()
}

pub struct PipeWire {
    dir: tempfile::TempDir,
    procs: Vec<(&'static str, Child)>,
    /// Where its programs are: `None` from `PATH`, else that directory.
    bin: Option<PathBuf>,
}

/// Polls `ok` every 50 ms until it holds; panics after `limit` naming `what`.
fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < limit,
            "gave up after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl PipeWire {
    /// PipeWire and WirePlumber, ready: the test speaker and microphone are the defaults and the
    /// speaker is heard by the microphone.
    pub fn start() -> PipeWire {
        PipeWire::start_release(Release::Installed)
    }

    /// [`start`](Self::start) on the given release.
    pub fn start_release(release: Release) -> PipeWire {
        let mut pw = PipeWire::server_only(release);
        pw.start_session_manager();
        pw
    }

    /// PipeWire alone: its socket answers, but nothing links a client to a node.
    pub fn without_session_manager() -> PipeWire {
        PipeWire::server_only(Release::Installed)
    }

    fn server_only(release: Release) -> PipeWire {
        let dir = tempfile::Builder::new()
            .prefix("osmoda-pipewire-")
            .tempdir()
            .unwrap();
        let mut pw = PipeWire {
            dir,
            procs: Vec::new(),
            bin: (release == Release::Wireplumber05).then(wireplumber05_bin),
        };
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(pw.runtime_dir())
            .unwrap();
        let conf = pw.dir.path().join("pipewire.conf");
        std::fs::write(&conf, CONF).unwrap();
        for (sub, text) in [("main.lua.d", WP_MAIN), ("bluetooth.lua.d", WP_BLUETOOTH)] {
            let d = pw.dir.path().join("config/wireplumber").join(sub);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("60-osmoda-test.lua"), text).unwrap();
        }
        let d = pw.dir.path().join("config/wireplumber/wireplumber.conf.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("60-osmoda-test.conf"), WP05_PROFILE).unwrap();
        let mut c = pw.command("pipewire");
        c.arg("-c").arg(&conf);
        pw.spawn("pipewire", c);
        let sock = pw.runtime_dir().join("pipewire-0");
        wait_until("PipeWire's socket", Duration::from_secs(20), || {
            pw.check_alive();
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
        pw
    }

    fn start_session_manager(&mut self) {
        let bus = self.dir.path().join("bus");
        let mut c = self.command("dbus-daemon");
        c.args(["--session", "--nofork", "--nopidfile"])
            .arg(format!("--address=unix:path={}", bus.display()));
        self.spawn("dbus-daemon", c);
        wait_until("the D-Bus session bus", Duration::from_secs(20), || {
            self.check_alive();
            bus.exists()
        });
        let c = self.command("wireplumber");
        self.spawn("wireplumber", c);
        wait_until(
            "WirePlumber choosing the test speaker and microphone",
            Duration::from_secs(30),
            || {
                self.check_alive();
                let m = self.output("pw-metadata", &["-n", "default"]);
                if self.bin.is_some() && !m.contains(&format!("\"{MIC}\"")) {
                    // WirePlumber 0.5 ranks the speaker's monitor above a virtual source: the
                    // microphone is chosen as a person would, as the configured default.
                    self.set_default("default.configured.audio.source", MIC);
                }
                m.contains(&format!("\"{SPEAKER}\"")) && m.contains(&format!("\"{MIC}\""))
            },
        );
        // What the speaker plays, the microphone hears.
        let (from, to) = (
            format!("{SPEAKER}:monitor_MONO"),
            format!("{MIC}:input_MONO"),
        );
        wait_until(
            "the speaker linked into the microphone",
            Duration::from_secs(20),
            || {
                let _ = self.output("pw-link", &[&from, &to]);
                self.links().contains(&format!("{from}\n  |-> {to}"))
            },
        );
    }

    /// The directory holding `pipewire-0`.
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// osmoda-voice's device on this server (and this release's `pw-play`/`pw-record`).
    pub fn device(&self) -> AudioDevice {
        AudioDevice {
            runtime_dir: Some(self.runtime_dir()),
            player: self.program("pw-play").into(),
            recorder: self.program("pw-record").into(),
            ..AudioDevice::default()
        }
    }

    /// This release's program `name` (PipeWire's and WirePlumber's), else `name` from `PATH`
    /// (dbus-daemon).
    fn program(&self, name: &str) -> std::ffi::OsString {
        match &self.bin {
            Some(b) if b.join(name).exists() => b.join(name).into(),
            _ => name.into(),
        }
    }

    /// Environment for a process of this server (or a client of it).
    pub fn env(&self) -> Vec<(&'static str, PathBuf)> {
        let d = self.dir.path();
        vec![
            ("XDG_RUNTIME_DIR", self.runtime_dir()),
            ("PIPEWIRE_RUNTIME_DIR", self.runtime_dir()),
            ("XDG_CONFIG_HOME", d.join("config")),
            ("XDG_STATE_HOME", d.join("state")),
            ("XDG_DATA_HOME", d.join("data")),
            ("HOME", d.to_owned()),
            (
                "DBUS_SESSION_BUS_ADDRESS",
                format!("unix:path={}", d.join("bus").display()).into(),
            ),
        ]
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.program(program));
        c.envs(self.env())
            .env_remove("PIPEWIRE_REMOTE")
            .env_remove("DISPLAY")
            .stdin(Stdio::null());
        c
    }

    fn spawn(&mut self, name: &'static str, mut c: Command) {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let child = c
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} (apt-get install pipewire pipewire-bin wireplumber dbus-daemon): {e}"));
        self.procs.push((name, child));
    }

    /// Panics with its log when one of the processes has exited.
    fn check_alive(&mut self) {
        for (name, child) in &mut self.procs {
            if let Ok(Some(st)) = child.try_wait() {
                let log = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                    .unwrap_or_default();
                panic!("{name} exited ({st}): {log}");
            }
        }
    }

    /// A client's stdout (run to completion, 20 s at most). The output is read while it runs:
    /// one larger than the pipe's buffer (`pw-dump`) would otherwise never let it finish.
    fn output(&self, program: &str, args: &[&str]) -> String {
        let mut c = self.command(program);
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            use std::io::Read;
            let _ = stdout.read_to_string(&mut out);
            out
        });
        let start = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{program} {args:?} did not finish within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        reader.join().unwrap()
    }

    /// Another client's doing: a new source `name` (silent) made the server's default source,
    /// as any client of a PipeWire server may.
    #[allow(dead_code)] // not every test file that includes this uses it
    pub async fn another_default_source(&self, name: &str) {
        self.output(
            "pw-cli",
            &[
                "create-node",
                "adapter",
                &format!("{{ factory.name=support.null-audio-sink node.name={name} media.class=Audio/Source/Virtual audio.position=[MONO] object.linger=true }}"),
            ],
        );
        // WirePlumber 0.5 recomputes `default.audio.source` from the configured one, which is
        // what a mixer (pavucontrol, wpctl set-default) sets.
        let key = if self.bin.is_some() {
            "default.configured.audio.source"
        } else {
            "default.audio.source"
        };
        self.set_default(key, name);
        // WirePlumber takes it as the default once it has seen the node.
        let start = Instant::now();
        loop {
            let meta = self.output(
                "pw-metadata",
                &["-n", "default", "0", "default.audio.source"],
            );
            let nodes = self.output("pw-cli", &["ls", "Node"]);
            if meta.contains(name) && nodes.contains(name) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{name} not the default source after 30 s: {meta} {nodes}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sets `key` in the default metadata to the node `name`, as any client of the server may.
    fn set_default(&self, key: &str, name: &str) {
        self.output(
            "pw-metadata",
            &[
                "-n",
                "default",
                "0",
                key,
                &format!("{{\"name\":\"{name}\"}}"),
                "Spa:String:JSON",
            ],
        );
    }

    /// Asks the session manager to move the stream node `stream` (its id) to the node with
    /// `object.serial` `target`, as a mixer does: `target.object` in the default metadata.
    pub fn move_stream(&self, stream: u64, target: u64) {
        self.output(
            "pw-metadata",
            &[
                "-n",
                "default",
                &stream.to_string(),
                "target.object",
                &target.to_string(),
                "Spa:Id",
            ],
        );
    }

    /// The nodes (`pw-dump`): (id, `object.serial`, `node.name`, `media.class`).
    pub fn nodes(&self) -> Vec<(u64, u64, String, String)> {
        let dump = self.output("pw-dump", &[]);
        let v: serde_json::Value = serde_json::from_str(&dump).unwrap_or_default();
        let s = |x: &serde_json::Value| x.as_str().unwrap_or_default().to_owned();
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter(|o| o["type"] == "PipeWire:Interface:Node")
                    .map(|o| {
                        let p = &o["info"]["props"];
                        (
                            o["id"].as_u64().unwrap_or_default(),
                            p["object.serial"].as_u64().unwrap_or_default(),
                            s(&p["node.name"]),
                            s(&p["media.class"]),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `pw-link -l`: every link, as `out\n  |-> in` lines.
    pub fn links(&self) -> String {
        self.output("pw-link", &["-l"])
    }

    /// Waits (60 s at most) until a `pw-record` is linked to the microphone: from then on it
    /// hears what is played.
    pub async fn wait_for_recorder(&self) {
        let start = Instant::now();
        let want = format!("{MIC}:capture_MONO\n  |-> pw-record:");
        loop {
            let links = self.links();
            if links.contains(&want) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no pw-record linked to {MIC} after 60 s: {links}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Plays `wav` on the default sink (the speaker) and waits until it has played (60 s at
    /// most).
    pub async fn play(&self, wav: &Path) {
        let mut c = tokio::process::Command::new(self.program("pw-play"));
        c.envs(self.env())
            .arg(wav)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let st = tokio::time::timeout(Duration::from_secs(60), c.status())
            .await
            .expect("pw-play did not finish within 60 s")
            .unwrap();
        assert!(st.success(), "pw-play {}: {st}", wav.display());
    }

    /// Stops every process (SIGTERM, then SIGKILL after 5 s), newest first.
    pub fn stop(&mut self) {
        while let Some((name, mut child)) = self.procs.pop() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(5) {
                    eprintln!("{name} ignored SIGTERM for 5 s; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for PipeWire {
    fn drop(&mut self) {
        self.stop();
    }
}
