//! netback
