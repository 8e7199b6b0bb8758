//! Root tests of TLS plaintext capture beyond OpenSSL's socket BIOs, with the stack of tests/tls.rs
//! (nginx terminating TLS in front of the loopback emulator, HTTP/1.1 and HTTP/2):
//! - memory-BIO stacks: Node's `fetch` and `https` (NodeSource's `node` carries OpenSSL) and the
//!   official SDK's async client (asyncio's `SSLObject`), tied to their sockets by the TLS records
//!   their thread writes after an SSL call;
//! - Go's `crypto/tls` (a net/http client built with Debian's golang-go), over HTTP/1.1 and HTTP/2;
//! - curl over HTTP/2.
//!
//! Each call is counted exactly in the client's view and in nginx's server view.
//!
//! They need root, BPF, nginx, curl, node, go, openssl, a built agent and the clients' venv (see
//! e2e.rs).

use llm_observer_tests::harness::expect::Expected;
use llm_observer_tests::harness::tls_stack::{Stack, calls, calls_both_views, expect};

const EMULATOR: &str = env!("CARGO_BIN_EXE_llm-emulator");

fn servers(tag: &str) -> Stack {
    llm_observer_tests::harness::tls_stack::servers(EMULATOR, tag)
}

/// Memory-BIO stacks: Node's TLS (NodeSource's `node` carries OpenSSL inside the executable) and
/// asyncio's (the SDK's async client) run OpenSSL on memory BIOs: `SSL_write` makes no syscall,
/// the program writes the records to the socket after it. Their connections are tied to their
/// `SSL*` by those records (tls.rs `bind_by_record`), so Node's `fetch` and `https` and the async
/// SDK, streamed and not, are decoded exactly in the client view and in nginx's server view. The
/// `-fresh` runs make a connection (and an `SSL` object) per call in one process: the allocator
/// hands a later `SSL*` an earlier one's address, which must not keep the earlier socket.
#[test]
#[ignore = "needs root, BPF, nginx, node, the release agent and the clients' venv"]
fn memory_bio_stacks_node_and_asyncio_are_decoded() {
    let s = servers("membio");
    let agent = llm_observer_tests::harness::stack::Agent::start(&[]).expect("agent starts");
    let peer = s.peer();
    let mut e = Expected::new();
    for (via, stream) in [
        ("fetch", false),
        ("fetch", true),
        ("https", false),
        ("https", true),
        ("asyncio", false),
        ("asyncio", true),
        ("https-fresh", false),
        ("asyncio-fresh", false),
        ("asyncio-fresh", true),
    ] {
        let kind = if stream { "stream" } else { "plain" };
        let model = s.model(&format!("tls-{via}-{kind}"));
        // Interpreters are named by their script (docs/metrics.md, `process`).
        // Fresh runs make 3 calls: CPython frees each `SSL` at its connection's close, so the
        // third gets the second's address (checked with bpftrace on SSL_new/SSL_free); Node frees
        // them at garbage collection, later.
        let n = if via.ends_with("-fresh") { 3 } else { 2 };
        let (c, process) = if let Some(fresh) = via.strip_prefix("asyncio") {
            (
                s.sdk_async(stream, fresh == "-fresh", &model, n),
                "async_https",
            )
        } else {
            (s.node(via, stream, &model, n), "node_https")
        };
        e = calls_both_views(e, &c, n as u64, &model, &peer, process, stream);
    }
    // One connection per keep-alive client process and three per fresh one (the counter is
    // node-wide: at least).
    e = e.at_least("llm_observer_tls_record_binds_total", &[], 15.0);
    expect(&agent, &s, &e);
}

/// Go's crypto/tls (goroutine-keyed uprobes on `(*Conn).Write`/`Read` and on each of their `RET`
/// instructions, the fd read from the `Conn`) over HTTP/1.1 and HTTP/2 (net/http's h2 when nginx
/// offers it by ALPN), streamed and not; and curl over HTTP/2 (OpenSSL). Each is decoded exactly in
/// the client view and in nginx's server view. The Go client is an executable the agent has never
/// seen: its first process waits until the agent has probed it, the three after it are covered
/// from their first instruction.
#[test]
#[ignore = "needs root, BPF, nginx, curl, go, the release agent"]
fn go_crypto_tls_and_http2_over_tls_are_decoded() {
    let s = servers("go");
    let agent = llm_observer_tests::harness::stack::Agent::start(&[]).expect("agent starts");
    let (peer, h2_peer) = (s.peer(), s.h2_peer());
    let mut e = Expected::new();
    let curl_model = s.model("tls-curl-h2");
    let (prompt, completion) = s.curl_with(&curl_model, 2, true);
    let m = curl_model.as_str();
    e = calls(
        e,
        true,
        &[("model", m), ("peer", &h2_peer)],
        2.0,
        prompt as f64,
        completion as f64,
    );
    e = calls(
        e,
        false,
        &[("model", m), ("process", "nginx")],
        2.0,
        prompt as f64,
        completion as f64,
    );
    for (h2, stream) in [(false, false), (false, true), (true, false), (true, true)] {
        let model = s.model(&format!(
            "tls-go-{}-{}",
            if h2 { "h2" } else { "h1" },
            if stream { "stream" } else { "plain" }
        ));
        // The first run waits until its executable is probed; the others start with the probes.
        let probed = (!h2 && !stream).then(|| {
            let libs = agent
                .scrape()
                .expect("scrape")
                .get("llm_observer_tls_libraries", &[])
                .expect("tls_libraries");
            (&agent, libs)
        });
        let c = s.go(stream, h2, &model, 2, probed);
        let p = if h2 { &h2_peer } else { &peer };
        e = calls_both_views(e, &c, 2, &model, p, "go_https", stream);
    }
    expect(&agent, &s, &e);
}

/// The official `openai` and `anthropic` SDKs over HTTPS, streamed and not, sending the cloud
/// APIs' Host (`api.openai.com`, `api.anthropic.com`) to nginx at 127.0.0.1: the client view
/// names the provider from the Host the request carried, and both views are exact.
#[test]
#[ignore = "needs root, BPF, nginx, the release agent and the clients' venv"]
fn sdks_over_https_are_named_by_the_provider_their_host_names() {
    let s = servers("provider");
    let agent = llm_observer_tests::harness::stack::Agent::start(&[]).expect("agent starts");
    let peer = s.peer();
    let mut e = Expected::new();
    for (api, host, provider, stream) in [
        ("openai", "api.openai.com", "openai", false),
        ("openai", "api.openai.com", "openai", true),
        ("anthropic", "api.anthropic.com", "anthropic", false),
        ("anthropic", "api.anthropic.com", "anthropic", true),
    ] {
        let kind = if stream { "stream" } else { "nonstream" };
        let model = s.model(&format!("tls-{api}-{kind}"));
        let mut args = vec!["--api", api, "--mode", kind, "--n", "2", "--keepalive"];
        args.extend(["--model", &model, "--host", host]);
        if api == "openai" && stream {
            args.push("--usage");
        }
        let c = s.sdk(&args);
        let m = model.as_str();
        e = calls_both_views(e, &c, 2, m, &peer, "workload", stream).exactly(
            "llm_client_requests_total",
            &[("model", m), ("peer", &peer), ("provider", provider)],
            2.0,
        );
    }
    expect(&agent, &s, &e);
}
