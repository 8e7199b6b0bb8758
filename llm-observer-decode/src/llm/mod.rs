//! LLM / MCP API recognition and decoders.
