//! SafeSwitch: apply a generation with health gates and a rollback that always happens.
//!
//! [`Engine`] runs at most one switch at a time. Every state is persisted (see [`store`]) before
//! the side effect that belongs to it, so a daemon killed at any instant finds the switch on start
//! and finishes it ([`Engine::recover`]): inside the TTL it resumes probing, a decided commit or
//! rollback is completed, anything else is rolled back.

mod driver;
pub mod engine;
pub mod session;
pub mod store;

pub use engine::{check_text, BeginRequest, Engine, EngineOptions, PausePoint};
pub use session::{SwitchSession, SwitchState};

#[cfg(test)]
mod tests;
