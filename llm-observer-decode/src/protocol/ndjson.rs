//! Newline-delimited JSON framing, incremental.
