//! [`TraceSink`]: one JSON line per captured event (`--raw`) or per decoded exchange — a tcpdump
//! for LLM traffic. Exchanges carry no prompt or response text. Raw payloads are printed only on
//! request, with credential headers redacted unless `--show-secrets` is given.

use std::{collections::HashMap, io::Write};

use llm_observer_decode::{DecodeError, Exchange, Unsupported, llm::RequestSummary};
use serde_json::json;

use crate::{
    capture::{ConnId, DataKind, Direction, Event},
    sinks::redact::Redactor,
    sinks::sink::{ConnView, Sink},
};

pub struct TraceSink<W: Write> {
    out: W,
    raw: bool,
    show_secrets: bool,
    pub lines: u64,
    limit: Option<(u64, tokio::sync::watch::Sender<bool>)>,
    /// Credential redaction state (a header can span events), by connection, direction and
    /// whether the bytes are TLS plaintext: a connection's plaintext stream starts afresh (at a
    /// line start), whatever its ciphertext's last bytes were.
    redactors: HashMap<(ConnId, Direction, bool), Redactor>,
}

/// Redaction states kept at most; beyond, they are reset (a bounded trace-only cost).
const MAX_REDACTORS: usize = 65_536;

impl<W: Write> TraceSink<W> {
    pub fn new(out: W, raw: bool, show_secrets: bool) -> Self {
        TraceSink {
            out,
            raw,
            show_secrets,
            lines: 0,
            limit: None,
            redactors: HashMap::new(),
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
        "transport": if c.stdio { "stdio" } else { "tcp" },
    })
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
                    if self.redactors.len() > MAX_REDACTORS {
                        self.redactors.clear();
                    }
                    let r = self
                        .redactors
                        .entry((d.conn, d.direction, d.tls))
                        .or_default();
                    escape(&r.redact(&d.payload))
                };
                json!({
                    "type": "data", "ts_ns": d.ts_ns, "tgid": d.conn.tgid, "tid": d.tid, "fd": d.conn.fd,
                    "generation": d.conn.generation, "conn": conn, "direction": d.direction,
                    "syscall": d.syscall.as_str(), "pos": d.pos, "len": d.payload.len(), "msg_len": d.msg_len,
                    "kind": kind, "missing": missing, "payload": payload,
                })
            }
            Event::Open(c) | Event::Close(c) => {
                for dir in [Direction::Egress, Direction::Ingress] {
                    for tls in [false, true] {
                        self.redactors.remove(&(c.conn, dir, tls));
                    }
                }
                json!({
                "type": event.kind_label(), "ts_ns": c.ts_ns, "tgid": c.conn.tgid, "tid": c.tid, "fd": c.conn.fd,
                "generation": c.conn.generation, "role": c.role, "peer": c.peer.map(|a| a.to_string()), "conn": conn,
                "inherited_from": c.inherited_from,
                "passed_fd": c.passed_fd,
                })
            }
            Event::ProcExit { tgid, ts_ns } => {
                self.redactors.retain(|(id, _, _), _| id.tgid != *tgid);
                json!({"type": "proc_exit", "ts_ns": ts_ns, "tgid": tgid})
            }
            Event::OomVictim { pid, ts_ns } => {
                json!({"type": "oom_victim", "ts_ns": ts_ns, "pid": pid})
            }
            Event::ProcExec { tgid, ts_ns } => {
                json!({"type": "proc_exec", "ts_ns": ts_ns, "tgid": tgid})
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
        let red = Redactor::default().redact(req);
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
