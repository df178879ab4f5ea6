//! rx
