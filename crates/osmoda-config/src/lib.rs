//! Serde schema of every `/etc/osmoda/<daemon>.json`, loading with precise errors, and the
//! shared `check-config` logic each daemon binary exposes.
//!
//! The JSON is rendered by `lib/default.nix` from `services.osmoda.*` options; every struct
//! uses `deny_unknown_fields`, so a misspelt or stale key fails loudly at build time
//! (`<daemon> check-config FILE` in the module's `runCommand`) instead of being ignored.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod agentd;
pub mod binds;
pub mod egress;
pub mod health;
pub mod keyd;
pub mod mesh;
pub mod options;
pub mod routines;
pub mod sandbox;
pub mod tree_edit;
pub mod voice;
pub mod watch;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// agentd's approval socket (the person's, mode 0600) where the NixOS module puts it
/// (lib/default.nix's `approvalSocket`); agentd binds it and agentctl calls it by default.
pub const DEFAULT_APPROVAL_SOCKET: &str = "/run/osmoda-admin/approval.sock";

pub use agentd::{
    AgentdConfig, ApprovalConfig, CheckpointConfig, DaemonEndpoints, FilesConfig, LedgerConfig,
    MemoryConfig, DEFAULT_WRITABLE_ROOTS,
};
pub use egress::{Capability, EgressConfig, EgressLimits};
pub use health::HealthCheck;
pub use keyd::{
    Amount, Chain, ChainPolicy, KeydConfig, Policy, TokenPolicy, TypedDataDomain, WalletPolicy,
};
pub use mesh::{MeshConfig, Peer, PeerKeys};
pub use routines::{
    Concurrency, HttpMethod, Missed, Routine, RoutineAction, RoutinesConfig, Trigger,
};
pub use sandbox::Sandbox;
pub use voice::VoiceConfig;
pub use watch::{BoundaryConfig, SafeSwitchDefaults, WatchAction, WatchConfig, Watcher};

/// Names of the daemons that read a file `/etc/osmoda/<name>.json`.
pub const DAEMONS: [&str; 7] = [
    "agentd", "watch", "routines", "keyd", "mesh", "egress", "voice",
];

/// Everything that can go wrong reading a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}; check the path and permissions (the NixOS module writes /etc/osmoda/<daemon>.json)")]
    Io {
        /// File that was read.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON or does not match the schema.
    #[error("{path}:{line}:{column}: at `{field}`: {message}; fix the corresponding services.osmoda option (daemon keeps its previous config)")]
    Parse {
        /// File that was read.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// JSON path of the offending value, e.g. `watchers.web.check.type` (`.` = the root).
        field: String,
        /// What serde found wrong (unknown field, missing field, wrong type, ...).
        message: String,
    },
    /// The file parses but a value is out of range or inconsistent.
    #[error("{path}: invalid value: {message}; fix the corresponding services.osmoda option")]
    Invalid {
        /// File that was read.
        path: PathBuf,
        /// What is wrong, starting with the JSON path of the value.
        message: String,
    },
    /// `check_config` was asked about a daemon that has no config file.
    #[error("unknown daemon {name:?}; expected one of: agentd, watch, routines, keyd, mesh, egress, voice")]
    UnknownDaemon {
        /// The name given.
        name: String,
    },
}

/// A config file type: deserializable and able to check values serde cannot.
pub trait ConfigFile: DeserializeOwned {
    /// Semantic validation; the message starts with the JSON path of the bad value.
    ///
    /// # Errors
    /// Returns a human-readable message when a value is out of range or inconsistent.
    fn validate(&self) -> Result<(), String>;
}

macro_rules! config_file {
    ($($t:ty),*) => {$(
        impl ConfigFile for $t {
            fn validate(&self) -> Result<(), String> { <$t>::validate(self) }
        }
    )*};
}
config_file!(
    AgentdConfig,
    WatchConfig,
    RoutinesConfig,
    KeydConfig,
    MeshConfig,
    EgressConfig,
    VoiceConfig
);

/// Parses `text` (the contents of `path`, used in messages) as `T` and validates it.
///
/// # Errors
/// [`ConfigError::Parse`] with line, column and field path, or [`ConfigError::Invalid`].
pub fn parse<T: ConfigFile>(path: &Path, text: &str) -> Result<T, ConfigError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        ConfigError::Parse {
            path: path.to_path_buf(),
            line: inner.line(),
            column: inner.column(),
            field,
            message: strip_position(&inner.to_string()),
        }
    })?;
    value.validate().map_err(|message| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    })?;
    Ok(value)
}

/// serde_json appends " at line L column C"; we report those separately.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Reads, parses and validates one config file.
///
/// # Errors
/// [`ConfigError::Io`] when the file cannot be read; otherwise as [`parse`].
pub fn load<T: ConfigFile>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Checks `path` against the schema of `daemon` (one of [`DAEMONS`]); the body of every
/// daemon's `check-config FILE` subcommand.
///
/// # Errors
/// [`ConfigError::UnknownDaemon`] for an unknown name; otherwise as [`load`].
pub fn check_config(daemon: &str, path: &Path) -> Result<(), ConfigError> {
    if !DAEMONS.contains(&daemon) {
        return Err(ConfigError::UnknownDaemon {
            name: daemon.to_string(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    check_text(daemon, path, &text)
}

/// Checks `text`, the contents of `daemon`'s config file `path` (used in messages), exactly as
/// the daemon checks it at load: the same parse and the same value checks as [`check_config`],
/// for a file that is not on disk (agentd checks what `lib/` renders from an edit before it
/// commits the edit).
///
/// # Errors
/// [`ConfigError::UnknownDaemon`] for an unknown name; otherwise as [`parse`].
pub fn check_text(daemon: &str, path: &Path, text: &str) -> Result<(), ConfigError> {
    match daemon {
        "agentd" => parse::<AgentdConfig>(path, text).map(drop),
        "watch" => parse::<WatchConfig>(path, text).map(drop),
        "routines" => parse::<RoutinesConfig>(path, text).map(drop),
        "keyd" => parse::<KeydConfig>(path, text).map(drop),
        "mesh" => parse::<MeshConfig>(path, text).map(drop),
        "egress" => parse::<EgressConfig>(path, text).map(drop),
        "voice" => parse::<VoiceConfig>(path, text).map(drop),
        other => Err(ConfigError::UnknownDaemon {
            name: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_names_file_position_and_field() {
        let text = "{\n  \"listen\": \"127.0.0.1:19999\",\n  \"capabilities\": {\"gh\": {\"domains\": [], \"port\": [443]}}\n}";
        let err = parse::<EgressConfig>(Path::new("/etc/osmoda/egress.json"), text).unwrap_err();
        match &err {
            ConfigError::Parse {
                line,
                field,
                message,
                ..
            } => {
                assert_eq!(*line, 3);
                assert_eq!(field, "capabilities.gh.port");
                assert!(message.starts_with("unknown field `port`"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        let shown = err.to_string();
        assert!(shown.starts_with("/etc/osmoda/egress.json:3:"), "{shown}");
    }

    #[test]
    fn invalid_value_is_reported_after_parse() {
        let text = r#"{"listen":"0.0.0.0:1","capabilities":{}}"#;
        let err = parse::<EgressConfig>(Path::new("e.json"), text).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
        assert!(err.to_string().contains("loopback"), "{err}");
    }

    #[test]
    fn check_config_unknown_daemon_and_missing_file() {
        let err = check_config("nope", Path::new("/x")).unwrap_err();
        assert!(err.to_string().contains("unknown daemon \"nope\""), "{err}");
        let err = check_config("voice", Path::new("/nonexistent/osmoda/voice.json")).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
        let err = check_text("nope", Path::new("/x"), "{}").unwrap_err();
        assert!(matches!(err, ConfigError::UnknownDaemon { .. }), "{err:?}");
    }

    #[test]
    fn check_text_runs_the_daemons_value_checks() {
        let at = Path::new("/etc/osmoda/routines.json");
        let cron = r#"{"routines":{"r":{"enable":true,"trigger":{"type":"cron","schedule":"61 * * * *"},"action":{"type":"command","command":["true"],"timeout_secs":60}}}}"#;
        let err = check_text("routines", at, cron).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
        assert!(err.to_string().contains("routines.r.trigger"), "{err}");
        let ok = cron.replace("61 * * * *", "0 8 * * *");
        check_text("routines", at, &ok).unwrap();
    }
}
