//! Chain-specific keys, encodings and signatures.

pub mod eth;
pub mod sol;
pub mod typed;
