//! Server software from the observed process's identity: its exe, comm and `process` name (the
//! interpreter-aware name of attribution/name.rs, e.g. `vllm`, `sglang.launch_server`,
//! `llama_cpp.server`). The process is this node's own, so unlike the wire it cannot be forged by
//! a peer; it names the servers whose answers carry no mark of their own (vLLM and SGLang behind
//! `server: uvicorn`).

use llm_observer_decode::llm::fingerprint::ServerKind;

/// What the process is, or `None` when its names say nothing (an emulator, a custom app).
pub fn from_process(exe: &str, comm: &str, name: &str) -> Option<ServerKind> {
    let any = |f: &dyn Fn(&str) -> bool| [exe, comm, name].into_iter().any(f);
    // Module names (`python -m sglang.launch_server`) and their packages.
    let module =
        |pkg: &str| name == pkg || name.strip_prefix(pkg).is_some_and(|r| r.starts_with('.'));
    if any(&|s| s == "ollama" || s.starts_with("ollama_llama_se")) {
        Some(ServerKind::Ollama)
    } else if any(&|s| s == "llama-server") {
        Some(ServerKind::Llamacpp)
    } else if module("llama_cpp") {
        Some(ServerKind::LlamacppPython)
    } else if any(&|s| s.starts_with("text-generation")) {
        // Launcher, router and shards all start so (their comm is `text-generation`).
        Some(ServerKind::Tgi)
    } else if module("vllm") || exe == "vllm" || comm.starts_with("VLLM::") {
        Some(ServerKind::Vllm)
    } else if module("sglang") || comm.starts_with("sglang::") {
        Some(ServerKind::Sglang)
    } else if module("litellm") || exe == "litellm" {
        Some(ServerKind::Litellm)
    } else if any(&|s| s == "local-ai" || s == "localai") {
        Some(ServerKind::Localai)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_identities() {
        // (exe, comm, process name) as attribution reads them for each server's HTTP process.
        let cases: &[(&str, &str, &str, Option<ServerKind>)] = &[
            ("ollama", "ollama", "ollama", Some(ServerKind::Ollama)),
            // Ollama 0.5.0-0.5.1's runner.
            (
                "ollama_llama_server",
                "ollama_llama_se",
                "ollama_llama_server",
                Some(ServerKind::Ollama),
            ),
            (
                "llama-server",
                "llama-server",
                "llama-server",
                Some(ServerKind::Llamacpp),
            ),
            (
                "python3.12",
                "python3",
                "llama_cpp.server",
                Some(ServerKind::LlamacppPython),
            ),
            (
                "text-generation-router",
                "text-generation",
                "text-generation-router",
                Some(ServerKind::Tgi),
            ),
            ("python3.12", "vllm", "vllm", Some(ServerKind::Vllm)),
            (
                "python3.12",
                "python3",
                "vllm.entrypoints.openai.api_server",
                Some(ServerKind::Vllm),
            ),
            (
                "python3.12",
                "python3",
                "sglang.launch_server",
                Some(ServerKind::Sglang),
            ),
            (
                "python3.12",
                "litellm",
                "litellm",
                Some(ServerKind::Litellm),
            ),
            (
                "local-ai",
                "local-ai",
                "local-ai",
                Some(ServerKind::Localai),
            ),
            ("llm-emulator", "llm-emulator", "llm-emulator", None),
            ("python3.12", "python3", "app", None),
            // A package whose name merely starts like a server's is not it.
            ("python3.12", "python3", "vllm_bench", None),
            ("", "", "", None),
        ];
        for (exe, comm, name, want) in cases {
            assert_eq!(from_process(exe, comm, name), *want, "{exe} {comm} {name}");
        }
    }
}
