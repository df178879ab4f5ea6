//! The sans-IO core of domnet's userspace switch.
pub mod time;
pub mod wire;
pub use time::Timestamp;
