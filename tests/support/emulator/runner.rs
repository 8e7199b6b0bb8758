//! Runner mode, shaped like Ollama: the process that accepts the user's request (`serve`) hands
//! the generation to a child "runner" process over loopback HTTP before answering, as Ollama's
//! `serve` calls its `ollama runner` / `llama-server` child with `POST /completion`. The runner is
//! another `llm-emulator` (started by [`spawn`]); it answers llama.cpp's native `/completion`
//! ([`completion_reply`]) with exact counts (`timings.prompt_n`, `timings.predicted_n`).
//!
//! Token accounting: the runner's request carries the user prompt's text (its words are the prompt
//! tokens, as everywhere in the emulator) and `n_predict` = the outer plan's output tokens, so the
//! runner's reported counts are exactly the user request's.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::plan::{self, Plan};

/// Starts the runner child: this executable again, on a free loopback port, quiet and fast. The
/// child dies with its parent (`PR_SET_PDEATHSIG`), so a killed serve leaves no runner behind.
pub fn spawn() -> anyhow::Result<(Child, SocketAddr)> {
    let exe = std::env::current_exe().context("locating llm-emulator")?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--quiet",
        "--ttft-ms",
        "1",
        "--token-interval-ms",
        "1",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the runner")?;
    let stdout = child.stdout.take().context("the runner's stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading the runner's address")?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("the runner printed {line:?}"))?;
    Ok((child, addr))
}

/// The text of every prompt field of a user request, joined (as Ollama renders the prompt it sends
/// its runner): strings, and the `text` of content parts.
fn prompt_text(body: &Value) -> String {
    fn push(v: &Value, parts: &mut Vec<String>) {
        match v {
            Value::String(s) => parts.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|i| push(i, parts)),
            Value::Object(part) => {
                if let Some(t) = part.get("text").and_then(Value::as_str) {
                    parts.push(t.to_owned());
                }
            }
            _ => {}
        }
    }
    let mut parts = Vec::new();
    for field in ["system", "prompt"] {
        if let Some(v) = body.get(field) {
            push(v, &mut parts);
        }
    }
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        for m in messages {
            if let Some(c) = m.get("content") {
                push(c, &mut parts);
            }
        }
    }
    parts.join(" ")
}

/// Hands `plan`'s generation to the runner and waits for its answer (its content is not used: the
/// serve process streams its own tokens, as Ollama relays the runner's).
pub async fn generate(runner: SocketAddr, body: &Value, plan: &Plan) -> anyhow::Result<()> {
    let req = json!({
        "prompt": prompt_text(body),
        "n_predict": plan.output_tokens,
        "stream": false,
        "cache_prompt": true,
    })
    .to_string();
    let mut s = tokio::net::TcpStream::connect(runner)
        .await
        .with_context(|| format!("connecting to the runner at {runner}"))?;
    let head = format!(
        "POST /completion HTTP/1.1\r\nHost: {runner}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        req.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(req.as_bytes()).await?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await?;
    anyhow::ensure!(
        answer.starts_with(b"HTTP/1.1 200"),
        "the runner answered {:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(64)])
    );
    Ok(())
}

/// llama.cpp's native `/completion` final object (non-streamed): exact prompt and output counts.
pub fn completion_reply(body: &Value, plan: &Plan) -> String {
    let n = body
        .get("n_predict")
        .and_then(Value::as_u64)
        .map_or(plan.output_tokens, |n| u32::try_from(n).unwrap_or(u32::MAX));
    let prompt = plan::prompt_words(body);
    let content: String = (0..n).map(plan::token_text).collect();
    json!({
        "content": content,
        "stop": true,
        "stop_type": "limit",
        "model": plan.model,
        "tokens_evaluated": prompt,
        "tokens_predicted": n,
        "timings": {"prompt_n": prompt, "cache_n": 0, "predicted_n": n},
    })
    .to_string()
}
