//! [`TraceSink`]: one JSON line per captured event (`--raw`) or per decoded exchange — a tcpdump
//! for LLM traffic. Exchanges carry no prompt or response text. Raw payloads are printed only on
//! request, with credential headers redacted unless `--show-secrets` is given.

use std::io::Write;

use llm_observer_decode::{DecodeError, Exchange, Unsupported, llm::RequestSummary};
use serde_json::json;

use crate::{
    capture::{DataKind, Event},
    conn::{ConnView, Sink},
};

pub struct TraceSink<W: Write> {
    out: W,
    raw: bool,
    show_secrets: bool,
    pub lines: u64,
    limit: Option<(u64, tokio::sync::watch::Sender<bool>)>,
}

impl<W: Write> TraceSink<W> {
    pub fn new(out: W, raw: bool, show_secrets: bool) -> Self {
        TraceSink {
            out,
            raw,
            show_secrets,
            lines: 0,
            limit: None,
        }
    }

    /// Signals `done` once `limit` lines have been printed (`trace --count N`).
    pub fn with_limit(
        mut self,
        limit: Option<u64>,
        done: tokio::sync::watch::Sender<bool>,
    ) -> Self {
        // Without a count the sender is still kept: a broken pipe must end the trace too.
        self.limit = Some((limit.unwrap_or(u64::MAX), done));
        self
    }

    fn line(&mut self, v: serde_json::Value) {
        if let Some((n, _)) = &self.limit
            && self.lines >= *n
        {
            return;
        }
        let written = writeln!(self.out, "{v}").and_then(|()| self.out.flush());
        if written.is_ok() {
            self.lines += 1;
        }
        // Done after the requested count, or when the reader went away (`trace | head`).
        let full = self.limit.as_ref().is_some_and(|(n, _)| self.lines >= *n);
        if (full || written.is_err())
            && let Some((_, done)) = &self.limit
        {
            let _ = done.send(true);
        }
    }
}

fn conn_json(c: &ConnView<'_>) -> serde_json::Value {
    json!({
        "tgid": c.id.tgid, "fd": c.id.fd, "generation": c.id.generation, "comm": &*c.process.comm,
        "role": c.role, "local": c.local.map(|a| a.to_string()), "peer": c.peer.map(|a| a.to_string()),
    })
}

/// Header names whose values are credentials.
const SECRET_HEADERS: [&[u8]; 8] = [
    b"x-goog-api-key:",
    b"x-amz-security-token:",
    b"authorization:",
    b"proxy-authorization:",
    b"x-api-key:",
    b"api-key:",
    b"cookie:",
    b"set-cookie:",
];

/// Replaces the values of credential headers with `[redacted]` (line-based, case-insensitive).
pub fn redact(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len());
    for line in payload.split_inclusive(|&b| b == b'\n') {
        let secret = SECRET_HEADERS
            .iter()
            .find(|h| line.len() >= h.len() && line[..h.len()].eq_ignore_ascii_case(h));
        match secret {
            Some(h) => {
                out.extend_from_slice(&line[..h.len()]);
                out.extend_from_slice(b" [redacted]");
                if line.ends_with(b"\r\n") {
                    out.extend_from_slice(b"\r\n");
                } else if line.ends_with(b"\n") {
                    out.push(b'\n');
                }
            }
            None => out.extend_from_slice(line),
        }
    }
    out
}

/// Bytes as printable text: ASCII as is, `\r`, `\n`, `\t`, `\\` and `\xNN` for the rest.
pub fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

impl<W: Write> Sink for TraceSink<W> {
    fn started(&mut self, _conn: &ConnView<'_>, _seq: u64, _summary: &RequestSummary) {}

    fn first_token(&mut self, _conn: &ConnView<'_>, _seq: u64, _ts_ns: u64) {}

    fn done(&mut self, conn: &ConnView<'_>, seq: u64, exchange: &Exchange) {
        if !self.raw {
            self.line(json!({"type": "exchange", "conn": conn_json(conn), "seq": seq, "exchange": exchange}));
        }
    }

    fn decode_error(&mut self, conn: &ConnView<'_>, error: &DecodeError) {
        if !self.raw {
            self.line(
                json!({"type": "decode_error", "conn": conn_json(conn), "reason": error.reason()}),
            );
        }
    }

    fn unsupported(&mut self, conn: &ConnView<'_>, what: Unsupported) {
        if !self.raw {
            self.line(json!({"type": "unsupported", "conn": conn_json(conn), "what": format!("{what:?}")}));
        }
    }

    fn raw(&mut self, event: &Event, conn: Option<&ConnView<'_>>) {
        if !self.raw {
            return;
        }
        let conn = conn.map(conn_json);
        let v = match event {
            Event::Data(d) => {
                let (kind, missing) = match d.kind {
                    DataKind::Bytes => ("bytes", None),
                    DataKind::Truncated { missing } => ("truncated", Some(missing)),
                    DataKind::Eof => ("eof", None),
                    DataKind::Reset => ("reset", None),
                };
                let payload = if self.show_secrets {
                    escape(&d.payload)
                } else {
                    escape(&redact(&d.payload))
                };
                json!({
                    "type": "data", "ts_ns": d.ts_ns, "tgid": d.conn.tgid, "tid": d.tid, "fd": d.conn.fd,
                    "generation": d.conn.generation, "conn": conn, "direction": d.direction,
                    "syscall": d.syscall.as_str(), "pos": d.pos, "len": d.payload.len(), "msg_len": d.msg_len,
                    "kind": kind, "missing": missing, "payload": payload,
                })
            }
            Event::Open(c) | Event::Close(c) => json!({
                "type": event.kind_label(), "ts_ns": c.ts_ns, "tgid": c.conn.tgid, "tid": c.tid, "fd": c.conn.fd,
                "generation": c.conn.generation, "role": c.role, "peer": c.peer.map(|a| a.to_string()), "conn": conn,
            }),
            Event::ProcExit { tgid, ts_ns } => {
                json!({"type": "proc_exit", "ts_ns": ts_ns, "tgid": tgid})
            }
        };
        self.line(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials_case_insensitively() {
        let req = b"POST /v1/chat/completions HTTP/1.1\r\nAuthorization: Bearer sk-local-test\r\nx-api-key: abc\r\nHost: x\r\n\r\n{}";
        let red = redact(req);
        assert_eq!(
            red,
            b"POST /v1/chat/completions HTTP/1.1\r\nAuthorization: [redacted]\r\nx-api-key: [redacted]\r\nHost: x\r\n\r\n{}"
                .to_vec()
        );
    }

    #[test]
    fn escapes_bytes() {
        assert_eq!(escape(b"a\r\n\x00\xff\"z"), "a\\r\\n\\x00\\xff\\\"z");
    }
}
