//! `osmoda-check-config DAEMON FILE`: validates a rendered `/etc/osmoda/<daemon>.json`.
//!
//! Used by the NixOS module at build time for daemons whose binary has no `check-config`
//! subcommand yet; exits 0 when valid, 1 with a precise message otherwise, 2 on bad usage.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [daemon, file] = args.as_slice() else {
        eprintln!(
            "usage: osmoda-check-config DAEMON FILE\n  DAEMON: one of {}",
            osmoda_config::DAEMONS.join(", ")
        );
        return ExitCode::from(2);
    };
    match osmoda_config::check_config(daemon, Path::new(file)) {
        Ok(()) => {
            println!("{file}: valid {daemon} config");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
