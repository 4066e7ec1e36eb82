//! The leaves: error kinds, the clock, the console, key digests, redaction, the memory bound, git state,
//! identity and the interrupt. They import nothing from the crate but each other, so every
//! layer above can use them.

pub(crate) mod clock;
pub mod console;
pub(crate) mod digest;
pub(crate) mod error;
pub mod git;
pub mod identity;
pub(crate) mod interrupt;
pub mod memory;
pub mod redact;
