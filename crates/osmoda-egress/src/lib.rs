//! osmoda-egress: the loopback HTTP CONNECT proxy that is a sandboxed tool's only way out
//! (DESIGN.md §1, Ring 1 and 2), and the capability tokens it accepts.
//!
//! - [`token`]: the token format (Ed25519-signed claims) that agentd mints and the proxy
//!   verifies offline;
//! - [`host`]: CONNECT targets, host normalisation, label-boundary wildcards;
//! - [`classify`]: which resolved addresses may be dialled;
//! - [`policy`]: token × declared capabilities → allowed or not;
//! - `proxy`, `admission`, `tunnel`, `head`, `keys`, `events` (feature `proxy`): the daemon.
//!
//! agentd depends on this crate without its default `proxy` feature, for [`token`],
//! [`host`] and [`policy`] only.

#![cfg_attr(test, allow(clippy::unwrap_used))]

#[cfg(feature = "proxy")]
pub mod admission;
pub mod classify;
pub mod host;
pub mod token;

#[cfg(feature = "proxy")]
pub mod events;
#[cfg(feature = "proxy")]
pub mod head;
#[cfg(feature = "proxy")]
pub mod keys;
pub mod policy;
#[cfg(feature = "proxy")]
pub mod proxy;
#[cfg(feature = "proxy")]
mod tunnel;

#[cfg(feature = "proxy")]
pub use proxy::Proxy;
#[cfg(feature = "proxy")]
pub mod relay;
