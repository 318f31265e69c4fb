//! osmoda-keyd: Ethereum and Solana wallets whose keys never leave this process, signing under
//! a default-deny policy declared in NixOS (`/etc/osmoda/keyd.json`), never broadcasting.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod chains;
pub mod error;
pub mod keys;

#[cfg(test)]
mod vectors;

pub use error::KeydError;
