//! netfront
