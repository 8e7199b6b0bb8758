//! The `process` label: a name a person recognises, from comm and the command line.
//!
//! Rule (docs/attribution.md):
//! 1. When `argv[0]` is an interpreter or launcher (python*, pypy*, node, bun, deno, ruby, java,
//!    uv, uvx, npx, bunx), the name is what it runs: the module of `-m`/`--module`, else the
//!    script's file stem (`/opt/venv/bin/vllm serve` → `vllm`; `cli.js` of a package →
//!    the package directory), `uv run <cmd>` / `uvx <tool>` → the rule applied to `<cmd>`.
//!    Inline code (`-c`, `-e`) or nothing to run leaves the comm.
//! 2. Otherwise the comm, untruncated from `argv[0]` when the kernel cut it at 15 bytes
//!    (`text-generation` → `text-generation-router`, `VLLM::EngineCor` → `VLLM::EngineCore`).
//!
//! The command line is read for this rule only; its arguments never become label values.

/// Longest comm the kernel keeps (TASK_COMM_LEN - 1).
const COMM_MAX: usize = 15;

/// Splits a raw `/proc/<pid>/cmdline` into arguments. A process that rewrote its title
/// (setproctitle) may leave one space-separated string padded with NULs or spaces.
pub fn split_cmdline(raw: &[u8]) -> Vec<String> {
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if args.len() == 1 && args[0].contains(' ') {
        return args[0].split_whitespace().map(str::to_owned).collect();
    }
    args
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Python,
    Node,
    Bun,
    Deno,
    Ruby,
    Java,
    /// `uv run <cmd>`, `uv tool run <tool>`.
    Uv,
    /// `uvx <tool>`, `npx <pkg>`, `bunx <pkg>`: the first operand is the tool.
    Runner,
}

fn interpreter(arg0: &str) -> Option<Kind> {
    let b = basename(arg0);
    let versioned = |prefix: &str| {
        b.strip_prefix(prefix)
            .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit() || c == '.'))
    };
    Some(match b {
        _ if versioned("python") || versioned("pypy") => Kind::Python,
        "node" | "nodejs" => Kind::Node,
        "bun" => Kind::Bun,
        "deno" => Kind::Deno,
        _ if versioned("ruby") => Kind::Ruby,
        "java" => Kind::Java,
        "uv" => Kind::Uv,
        "uvx" | "npx" | "bunx" | "pnpx" => Kind::Runner,
        _ => return None,
    })
}

/// Options of each interpreter that take the next argument as their value.
fn takes_value(kind: Kind, opt: &str) -> bool {
    match kind {
        Kind::Python => matches!(opt, "-W" | "-X" | "-Q"),
        Kind::Node | Kind::Bun => matches!(
            opt,
            "-r" | "--require"
                | "--import"
                | "--loader"
                | "--experimental-loader"
                | "-C"
                | "--conditions"
                | "--env-file"
                | "--cwd"
                | "--preload"
                | "--config"
        ),
        Kind::Deno => matches!(opt, "--config" | "-c" | "--import-map" | "--env-file"),
        Kind::Ruby => matches!(opt, "-I" | "-r" | "-C" | "-E"),
        Kind::Java => matches!(
            opt,
            "-cp" | "-classpath" | "--class-path" | "-p" | "--module-path" | "--add-modules"
        ),
        Kind::Uv => matches!(
            opt,
            "--with"
                | "--python"
                | "-p"
                | "--project"
                | "--directory"
                | "--package"
                | "--env-file"
                | "--from"
                | "--index"
                | "--extra"
                | "--group"
        ),
        Kind::Runner => matches!(opt, "--from" | "--with" | "--python" | "-p" | "--package"),
    }
}

/// Script stems too generic to name a program: the package directory is used instead.
const GENERIC_STEMS: &[&str] = &["index", "main", "cli", "server", "app", "__main__", "run"];
/// Build-output directories skipped when looking for the package directory.
const BUILD_DIRS: &[&str] = &["dist", "build", "lib", "src", "bin", "out", "."];

fn script_name(path: &str) -> String {
    let file = basename(path);
    let stem = [
        ".py", ".pyz", ".js", ".mjs", ".cjs", ".ts", ".mts", ".cts", ".tsx", ".jsx", ".rb", ".jar",
    ]
    .iter()
    .find_map(|ext| file.strip_suffix(ext))
    .unwrap_or(file);
    if GENERIC_STEMS.contains(&stem) {
        let mut dirs: Vec<&str> = path.split('/').collect();
        dirs.pop();
        if let Some(dir) = dirs
            .iter()
            .rev()
            .find(|d| !d.is_empty() && !BUILD_DIRS.contains(d) && **d != "..")
        {
            return (*dir).to_owned();
        }
    }
    stem.to_owned()
}

/// What an interpreter runs, from its arguments after `argv[0]`; `None` for inline code.
fn run_target(kind: Kind, args: &[String]) -> Option<String> {
    let mut i = 0;
    // bun/deno take a subcommand first (`bun run x.ts`, `deno run -A main.ts`); uv needs one.
    match kind {
        Kind::Bun | Kind::Deno if matches!(args.first().map(String::as_str), Some("run")) => i = 1,
        Kind::Bun if matches!(args.first().map(String::as_str), Some("x")) => {
            return run_target(Kind::Runner, &args[1..]);
        }
        Kind::Uv => match args.first().map(String::as_str) {
            Some("run") => i = 1,
            Some("tool") if matches!(args.get(1).map(String::as_str), Some("run")) => {
                return run_target(Kind::Runner, &args[2..]);
            }
            _ => return None,
        },
        _ => {}
    }
    while let Some(a) = args.get(i) {
        let a = a.as_str();
        if a == "--" {
            i += 1;
            break;
        }
        if !a.starts_with('-') || a == "-" {
            break;
        }
        match (kind, a) {
            (Kind::Python, "-m") | (Kind::Java, "-m" | "--module") => {
                return args
                    .get(i + 1)
                    .map(|m| m.split('/').next().unwrap_or(m).to_owned());
            }
            (Kind::Python, "-c")
            | (Kind::Node | Kind::Bun | Kind::Deno, "-e" | "--eval" | "-p" | "--print")
            | (Kind::Ruby, "-e") => return None,
            (Kind::Java, "-jar") => return args.get(i + 1).map(|j| script_name(j)),
            // Option clusters (`-um`, `-Bc`) and `-m` glued to its module (`-mvllm`); `-W`/`-X`
            // glued to their values are skipped whole.
            (Kind::Python, _)
                if a.len() > 2
                    && !a.starts_with("--")
                    && !a.starts_with("-W")
                    && !a.starts_with("-X") =>
            {
                let flags = &a[1..];
                match flags.find(['m', 'c']) {
                    Some(p) if flags.as_bytes()[p] == b'c' => return None,
                    Some(p) => {
                        let glued = &flags[p + 1..];
                        return if glued.is_empty() {
                            args.get(i + 1).cloned()
                        } else {
                            Some(glued.to_owned())
                        };
                    }
                    None => {}
                }
            }
            _ => {}
        }
        i += if takes_value(kind, a) { 2 } else { 1 };
    }
    let target = args.get(i)?;
    match kind {
        // `uv run` runs a command, which may itself be an interpreter (`uv run python -m x`).
        Kind::Uv | Kind::Runner => Some(program_name(target, &args[i..]).unwrap_or_else(|| {
            // An npm package spec: `@scope/name@1.2` → `name`.
            let t = target.rsplit('/').next().unwrap_or(target);
            t.split('@').find(|s| !s.is_empty()).unwrap_or(t).to_owned()
        })),
        // A Java main class `com.example.Main` → `Main`.
        Kind::Java => Some(target.rsplit('.').next().unwrap_or(target).to_owned()),
        _ => Some(script_name(target)),
    }
}

/// The name for a command `argv` when `argv[0]` is an interpreter; `None` otherwise.
fn program_name(arg0: &str, argv: &[String]) -> Option<String> {
    let kind = interpreter(arg0)?;
    run_target(kind, argv.get(1..).unwrap_or(&[]))
        .filter(|n| !n.is_empty())
        .or_else(|| Some(basename(arg0).to_owned()))
}

/// The `process` label of a process with kernel name `comm` and arguments `argv`.
pub fn process_name(comm: &str, argv: &[String]) -> String {
    let Some(arg0) = argv.first() else {
        return comm.to_owned();
    };
    if interpreter(arg0).is_some() {
        // Inline code or no target: the interpreter itself, as the kernel named it.
        return match program_name(arg0, argv) {
            Some(n) if n != basename(arg0) => n,
            _ => comm.to_owned(),
        };
    }
    let b = basename(arg0);
    if comm.len() >= COMM_MAX && b.len() > comm.len() && b.starts_with(comm) {
        return b.to_owned();
    }
    comm.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(comm: &str, cmdline: &str) -> String {
        // Cases write the kernel's NUL separators as `|`.
        process_name(comm, &split_cmdline(cmdline.replace('|', "\0").as_bytes()))
    }

    /// Real `/proc/<pid>/cmdline`s (NUL-separated as the kernel gives them, `|` here) of LLM servers, their
    /// children and agents, with the comm the kernel reports for each.
    #[test]
    fn real_cmdlines() {
        let cases: &[(&str, &str, &str)] = &[
            // vLLM: the API server is a console script (shebang → python, script path), its
            // children rewrite their title.
            (
                "vllm",
                "/usr/bin/python3|/usr/local/bin/vllm|serve|Qwen/Qwen2.5-7B-Instruct|--port|8000|",
                "vllm",
            ),
            (
                "python3",
                "python3|-m|vllm.entrypoints.openai.api_server|--model|m|",
                "vllm.entrypoints.openai.api_server",
            ),
            (
                "VLLM::EngineCor",
                "VLLM::EngineCore||||||",
                "VLLM::EngineCore",
            ),
            ("VLLM::Worker_TP", "VLLM::Worker_TP1|", "VLLM::Worker_TP1"),
            // llama-cpp-python
            (
                "python3",
                "python3|-m|llama_cpp.server|--model|/models/q4.gguf|--n_gpu_layers|-1|",
                "llama_cpp.server",
            ),
            // SGLang: main process and its scheduler child (setproctitle, one padded string).
            (
                "python3",
                "/usr/bin/python3|-m|sglang.launch_server|--model-path|meta-llama/Llama-3.1-8B|--port|30000|",
                "sglang.launch_server",
            ),
            (
                "sglang::schedul",
                "sglang::scheduler_TP0                ",
                "sglang::scheduler_TP0",
            ),
            // TGI: launcher, router (Rust binaries, comm cut at 15) and shard (console script).
            (
                "text-generation",
                "text-generation-launcher|--model-id|bigscience/bloom-560m|--port|80|",
                "text-generation-launcher",
            ),
            (
                "text-generation",
                "text-generation-router|--max-concurrent-requests|128|--port|80|",
                "text-generation-router",
            ),
            (
                "text-generation",
                "/opt/conda/bin/python3.11|/opt/conda/bin/text-generation-server|serve|bigscience/bloom-560m|--uds-path|/tmp/text-generation-server|",
                "text-generation-server",
            ),
            // Ollama: serve and its runners across versions.
            ("ollama", "/usr/local/bin/ollama|serve|", "ollama"),
            (
                "ollama",
                "/usr/local/bin/ollama|runner|--ollama-engine|--model|/root/.ollama/models/blobs/sha256-6a0746a1|--port|41235|",
                "ollama",
            ),
            (
                "ollama_llama_se",
                "/tmp/ollama123/runners/cuda_v12/ollama_llama_server|--model|/m|--port|41235|",
                "ollama_llama_server",
            ),
            (
                "llama-server",
                "/usr/lib/ollama/llama-server|--model|/m|--port|41235|",
                "llama-server",
            ),
            // Agents: node and bun.
            ("node", "node|/usr/local/bin/claude|--print|hi|", "claude"),
            (
                "node",
                "/usr/bin/node|--enable-source-maps|/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js|",
                "claude-code",
            ),
            ("node", "node|-r|dotenv/config|dist/agent.js|", "agent"),
            ("node", "node|-e|fetch('http://x')|", "node"),
            ("MainThread", "node|/srv/my-agent/index.js|", "my-agent"),
            ("bun", "bun|run|src/agent.ts|", "agent"),
            ("bun", "/root/.bun/bin/bun|/app/index.ts|", "app"),
            (
                "deno",
                "deno|run|-A|--env-file|.env|mcp_server.ts|",
                "mcp_server",
            ),
            // Launchers.
            ("uv", "uv|run|--with|openai|python|-m|my_agent|", "my_agent"),
            ("uv", "/root/.local/bin/uv|run|vllm|serve|m|", "vllm"),
            ("uvx", "uvx|mcp-server-fetch|", "mcp-server-fetch"),
            (
                "npm exec @mode",
                "npx|-y|@modelcontextprotocol/server-filesystem|/tmp|",
                "server-filesystem",
            ),
            ("python3", "python3|-c|import openai|", "python3"),
            ("python3", "python3|-u|-m|http.server|", "http.server"),
            ("python3", "python3|-um|http.server|", "http.server"),
            (
                "python3",
                "python3|-Werror::DeprecationWarning|-mvllm.entrypoints.api_server|",
                "vllm.entrypoints.api_server",
            ),
            ("python3", "python3|-Bc|print(1)|", "python3"),
            ("python3", "python3|", "python3"),
            (
                "java",
                "java|-Xmx1g|-jar|/opt/app/gateway-1.2.jar|",
                "gateway-1.2",
            ),
            ("ruby", "ruby|-Ilib|bin/agent.rb|", "agent"),
            // Kernel threads and zombies have no cmdline.
            ("kworker/0:1", "", "kworker/0:1"),
            // Short comms are never replaced (a prctl name, or a busybox applet).
            ("myname", "/usr/bin/othername|", "myname"),
        ];
        for (comm, cmdline, want) in cases {
            assert_eq!(
                &name(comm, cmdline),
                want,
                "comm {comm:?} cmdline {cmdline:?}"
            );
        }
    }
}
