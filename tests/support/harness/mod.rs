//! Pieces the end-to-end tests are built from.

pub mod bpf_objects;
pub mod expect;
pub mod exposition;
pub mod faults;
pub mod guard;
pub mod http;
pub mod process;
pub mod quiesce;
pub mod rss;
pub mod stack;
pub mod tls_stack;
pub mod wire;
