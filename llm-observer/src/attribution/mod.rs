//! Who is behind a connection: process names now; containers, pods and GPUs come next.
pub mod process;
