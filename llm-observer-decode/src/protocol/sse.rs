//! Server-Sent Events framing (WHATWG spec), incremental.
