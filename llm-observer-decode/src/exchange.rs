//! The one record the decoders produce: an [`Exchange`] is one request/response pair.
//!
//! Every timestamp is a kernel monotonic capture time in nanoseconds (`bpf_ktime_get_ns`) of the
//! bytes that carried the event, never the time the parser ran.

use serde::Serialize;

/// Which end of the TCP connection the observed process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The socket came from `accept`: the observed process serves the requests.
    Server,
    /// The socket came from `connect`: the observed process sends the requests.
    Client,
}

/// Which logical stream of a connection a chunk of bytes belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Bytes flowing client → server (requests).
    Request,
    /// Bytes flowing server → client (responses).
    Response,
}

/// The API family an exchange was recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    Ollama,
    Openai,
    Anthropic,
    Tgi,
    Llamacpp,
    Mcp,
    /// Google Gemini `generateContent` / `streamGenerateContent` (Gemini API and Vertex AI).
    Gemini,
}

impl Api {
    /// Stable label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Ollama => "ollama",
            Api::Openai => "openai",
            Api::Anthropic => "anthropic",
            Api::Tgi => "tgi",
            Api::Llamacpp => "llamacpp",
            Api::Mcp => "mcp",
            Api::Gemini => "gemini",
        }
    }
}

/// What the request asked for. Label values follow OTel `gen_ai.operation.name` where one exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Chat: OpenAI `/v1/chat/completions`, Ollama `/api/chat`, Anthropic `/v1/messages`.
    Chat,
    /// Text completion: OpenAI `/v1/completions`, Ollama `/api/generate`, TGI `/generate*`,
    /// llama.cpp `/completion`.
    TextCompletion,
    /// OpenAI Responses API `/v1/responses`.
    Responses,
    /// Embeddings: `/v1/embeddings`, Ollama `/api/embed`, `/api/embeddings`.
    Embeddings,
    /// Ollama model load (`done_reason: "load"`: empty prompt or messages).
    ModelLoad,
    /// Ollama model unload (`done_reason: "unload"`: `keep_alive: 0` with an empty prompt).
    ModelUnload,
    /// Ollama `/api/pull`.
    ModelPull,
    /// MCP `tools/call`.
    ToolCall,
    /// Any other MCP JSON-RPC method (`initialize`, `tools/list`, ...); see [`Exchange::mcp`].
    McpOther,
    /// OpenAI Batch API: `POST /v1/batches`.
    BatchCreate,
    /// `GET /v1/batches/{id}`.
    BatchRetrieve,
    /// `GET /v1/batches`.
    BatchList,
    /// `POST /v1/batches/{id}/cancel`.
    BatchCancel,
}

impl Operation {
    /// Stable label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::TextCompletion => "text_completion",
            Operation::Responses => "responses",
            Operation::Embeddings => "embeddings",
            Operation::ModelLoad => "model_load",
            Operation::ModelUnload => "model_unload",
            Operation::ModelPull => "model_pull",
            Operation::ToolCall => "tool_call",
            Operation::McpOther => "mcp",
            Operation::BatchCreate => "batch_create",
            Operation::BatchRetrieve => "batch_retrieve",
            Operation::BatchList => "batch_list",
            Operation::BatchCancel => "batch_cancel",
        }
    }
}

/// Where a token count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// The server reported it (usage object, Ollama `eval_count`, llama.cpp `timings`, TGI
    /// `details`): the truth.
    Reported,
    /// Counted from streamed content events (one event ≠ one token in general; a lower bound).
    Counted,
    /// Not known.
    #[default]
    Absent,
}

impl TokenSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenSource::Reported => "reported",
            TokenSource::Counted => "counted",
            TokenSource::Absent => "absent",
        }
    }
}

/// A token count and its provenance. `value` is `None` exactly when `source` is `Absent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct TokenCount {
    pub value: Option<u64>,
    pub source: TokenSource,
}

impl TokenCount {
    pub const ABSENT: TokenCount = TokenCount {
        value: None,
        source: TokenSource::Absent,
    };

    pub fn reported(value: u64) -> Self {
        TokenCount {
            value: Some(value),
            source: TokenSource::Reported,
        }
    }

    pub fn counted(value: u64) -> Self {
        TokenCount {
            value: Some(value),
            source: TokenSource::Counted,
        }
    }
}

/// Token usage of one exchange, normalised across APIs: `prompt` includes cached tokens (Anthropic's
/// `input_tokens + cache_creation_input_tokens + cache_read_input_tokens`), `completion` includes
/// reasoning tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Tokens {
    pub prompt: TokenCount,
    pub completion: TokenCount,
    /// Prompt tokens served from a cache (OpenAI `cached_tokens`, Anthropic `cache_read_input_tokens`,
    /// llama.cpp `cache_n`).
    pub cached: TokenCount,
    /// Reasoning tokens (OpenAI `reasoning_tokens`).
    pub reasoning: TokenCount,
}

/// Why an exchange failed, as a bounded label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// HTTP 4xx other than the specific kinds below.
    ClientError,
    /// HTTP 5xx other than the specific kinds below.
    ServerError,
    /// HTTP 429 or a rate-limit error body.
    RateLimited,
    /// HTTP 529 / 503 overloaded, Anthropic `overloaded_error`.
    Overloaded,
    /// The prompt did not fit the context window.
    ContextLengthExceeded,
    /// The server ran out of (GPU) memory, or the kernel's OOM killer ended it mid-request.
    OutOfMemory,
    /// HTTP 408 / 504 or a timeout error body: the server or a gateway gave up waiting.
    Timeout,
    /// An error object arrived in the body after HTTP 200 (stream error event, NDJSON `{"error":..}`).
    StreamError,
    /// The client closed the connection before the response was complete.
    ClientCancelled,
    /// The server closed the connection before the response was complete.
    ServerClosed,
    /// The response framing ended cleanly (last chunk, full length) but the stream never sent its
    /// terminal event (`[DONE]`, `message_stop`, `done:true`): the server cut its own answer.
    Truncated,
    /// JSON-RPC error response (MCP protocol error).
    JsonRpcError,
    /// MCP tool result with `isError: true`.
    ToolError,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ClientError => "client_error",
            ErrorKind::ServerError => "server_error",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::ContextLengthExceeded => "context_length_exceeded",
            ErrorKind::OutOfMemory => "out_of_memory",
            ErrorKind::Timeout => "timeout",
            ErrorKind::StreamError => "stream_error",
            ErrorKind::ClientCancelled => "client_cancelled",
            ErrorKind::ServerClosed => "server_closed",
            ErrorKind::Truncated => "truncated",
            ErrorKind::JsonRpcError => "jsonrpc_error",
            ErrorKind::ToolError => "tool_error",
        }
    }
}

/// Why the capture could not see an exchange whole. None of these is the observed server's (or
/// client's) doing, so such exchanges never count as inference errors: the agent accounts for them
/// in `llm_observer_incomplete_exchanges_total{reason}` instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Incomplete {
    /// Bytes of the exchange were lost by the capture (ring buffer overflow, per-call truncation).
    CaptureGap,
    /// The connection went silent past the idle timeout and was forgotten mid-exchange.
    Expired,
    /// Its fd was reused (or the process exited) without a close the capture saw.
    CloseUnseen,
    /// The bytes stopped being decodable (not HTTP, malformed framing, an upgrade).
    Undecodable,
    /// A decoder limit was reached (too many pipelined requests) and decoding stopped.
    DecoderLimit,
    /// The agent shed the connection to stay within its memory budget (`--max-buffered-bytes`).
    Shed,
}

impl Incomplete {
    pub const ALL: [Incomplete; 6] = [
        Incomplete::CaptureGap,
        Incomplete::Expired,
        Incomplete::CloseUnseen,
        Incomplete::Undecodable,
        Incomplete::DecoderLimit,
        Incomplete::Shed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Incomplete::CaptureGap => "capture_gap",
            Incomplete::Expired => "expired",
            Incomplete::CloseUnseen => "close_unseen",
            Incomplete::Undecodable => "undecodable",
            Incomplete::DecoderLimit => "decoder_limit",
            Incomplete::Shed => "shed",
        }
    }
}

/// Kernel capture times (ns, monotonic) of the events of one exchange.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Timings {
    /// First byte of the request head.
    pub request_start_ns: u64,
    /// Last byte of the request body.
    pub request_end_ns: Option<u64>,
    /// First byte of the (final, non-1xx) response head.
    pub response_start_ns: Option<u64>,
    /// First content-bearing event (not a role-only chunk, not a ping/comment): the TTFT marker.
    pub first_token_ns: Option<u64>,
    /// Last content-bearing event.
    pub last_token_ns: Option<u64>,
    /// Last byte of the response (or the close that ended it).
    pub response_end_ns: Option<u64>,
    /// Number of content-bearing stream events (chunks/lines/deltas that carried output).
    pub content_events: u64,
}

impl Timings {
    /// Time to first token: first content-bearing event − request start.
    pub fn ttft_ns(&self) -> Option<u64> {
        self.first_token_ns
            .map(|t| t.saturating_sub(self.request_start_ns))
    }

    /// End-to-end latency: last response byte − request start.
    pub fn latency_ns(&self) -> Option<u64> {
        self.response_end_ns
            .map(|t| t.saturating_sub(self.request_start_ns))
    }
}

/// MCP details of an exchange (present when `api == Mcp`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct McpInfo {
    /// JSON-RPC method, e.g. `tools/call`, `initialize`.
    pub method: String,
    /// Tool (or prompt / resource) name for `tools/call`, `prompts/get`, `resources/read`.
    pub name: Option<String>,
    /// JSON-RPC error code when the response was an error.
    pub error_code: Option<i64>,
}

/// Request parameters and context an exchange's records report when the request carried them
/// (never text): OpenAI / Anthropic `max_tokens` (`max_completion_tokens`) and `temperature`, and
/// the W3C `traceparent` header.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct RequestParams {
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    /// Prompts the request carries (OpenAI completions `prompt`, embeddings `input`: an array
    /// is a batch); `None` for the APIs that take one conversation.
    pub prompts: Option<u64>,
    /// Choices it asks for (OpenAI `n`, default 1); `None` where the API has no such parameter.
    pub choices: Option<u64>,
    /// The user-defined labels' values ([`crate::labels`]), in rule order; empty without rules.
    pub user_labels: Vec<String>,
    pub trace_parent: Option<crate::TraceParent>,
}

/// A tool call the response asked for, with the id its result will quote.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ToolUse {
    /// OpenAI `tool_calls[].id`, Anthropic `tool_use.id` (bounded length).
    pub id: String,
    /// The tool's name (bounded length).
    pub name: String,
}

/// Tool-call ids of one exchange: what pairs a model's tool call with the later request that
/// carries its result (the agent's tool execution time). Ids are opaque tokens chosen by the
/// server, never text of the conversation; they are never label values.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ToolIds {
    /// Calls the response asked for that carried an id, in order (bounded count).
    pub calls: Vec<ToolUse>,
    /// Ids of the tool results the request carried (OpenAI `role: tool` messages'
    /// `tool_call_id`, Anthropic `tool_result.tool_use_id`): the last ones of the conversation,
    /// bounded count.
    pub results: Vec<String>,
}

impl ToolIds {
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty() && self.results.is_empty()
    }
}

/// One request/response pair, decoded. Holds no prompt or response text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exchange {
    pub api: Api,
    pub operation: Operation,
    /// HTTP method and the path without its query string (bounded length).
    pub method: String,
    pub path: String,
    /// Model named in the request body.
    pub request_model: Option<String>,
    /// Model named by the response (may differ: aliases, dated snapshots).
    pub response_model: Option<String>,
    pub stream: bool,
    /// HTTP status of the final response; `None` when no response head arrived.
    pub status: Option<u16>,
    pub timings: Timings,
    pub tokens: Tokens,
    /// Of `tokens.prompt`, the tokens written to the prompt cache (Anthropic
    /// `cache_creation_input_tokens`): billed at their own price.
    pub cache_write_tokens: TokenCount,
    /// Finish / stop / done reason as the server wrote it (bounded length).
    pub finish_reason: Option<String>,
    pub error: Option<ErrorKind>,
    /// Set when the capture could not see the exchange whole; its figures are then partial and it
    /// is counted only in the agent's own accounting (never as an error of the server).
    pub incomplete: Option<Incomplete>,
    /// Names of tools the model asked to call (OpenAI `tool_calls`, Anthropic `tool_use`, Ollama
    /// `tool_calls`); bounded count.
    pub tool_calls: Vec<String>,
    /// Ids of the tool calls asked for and of the tool results sent (chat APIs only).
    #[serde(skip_serializing_if = "ToolIds::is_empty")]
    pub tool_ids: ToolIds,
    pub mcp: Option<McpInfo>,
    /// Server-reported model load time (Ollama `load_duration`), ns.
    pub load_duration_ns: Option<u64>,
    /// Request and response bytes on the wire (heads + bodies as framed).
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// True when a body exceeded the decode cap and was skipped (framing still followed).
    pub body_truncated: bool,
    pub params: RequestParams,
    /// The strongest fingerprint of the answering server's software in this exchange (response
    /// headers, body fields, API shape); see [`crate::llm::fingerprint`].
    pub server: Option<crate::llm::fingerprint::Evidence>,
}
