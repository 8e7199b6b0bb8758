//! Pieces the end-to-end tests are built from.

pub mod expect;
pub mod exposition;
pub mod guard;
pub mod http;
pub mod process;
pub mod quiesce;
pub mod stack;
pub mod wire;
