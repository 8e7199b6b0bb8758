//! Pieces the end-to-end tests are built from.

pub mod http;
