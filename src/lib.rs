//! domnet's library side: the control protocol the CLI and the daemon speak, and the
//! test rigs (`domnet rig`), which the `domnet` binary, `domnet demo` and the
//! integration tests all build on.

pub mod control;
pub mod rig;
