//! Price table parsing, lookup and exact cost arithmetic.

use llm_observer_decode::exchange::Timings;
use llm_observer_decode::{Api, Operation, TokenCount, Tokens};

use super::*;

fn exchange(model: &str, prompt: u64, cached: u64, written: u64, output: u64) -> Exchange {
    Exchange {
        api: Api::Anthropic,
        operation: Operation::Chat,
        method: "POST".into(),
        path: "/v1/messages".into(),
        request_model: Some(model.into()),
        response_model: None,
        stream: false,
        status: Some(200),
        timings: Timings::default(),
        tokens: Tokens {
            prompt: TokenCount::reported(prompt),
            completion: TokenCount::reported(output),
            cached: TokenCount::reported(cached),
            reasoning: TokenCount::ABSENT,
        },
        cache_write_tokens: TokenCount::reported(written),
        finish_reason: None,
        error: None,
        incomplete: None,
        tool_calls: vec![],
        tool_ids: Default::default(),
        mcp: None,
        load_duration_ns: None,
        request_bytes: 0,
        response_bytes: 0,
        body_truncated: false,
        params: Default::default(),
        server: None,
    }
}

const TABLE: &str = r#"
as_of = "2025-11-24"
source = "test"

[[model]]
name = "claude-sonnet-4-5"
input = 3.0
cached_input = 0.3
cache_write = 3.75
output = 15.0

[[model]]
name = "gpt-4o"
input = 2.5
cached_input = 1.25
output = 10.0

[[model]]
name = "gpt-4o-mini"
input = 0.15
output = 0.6

[[model]]
name = "gpt-4o"
provider = "azure"
input = 2.75
output = 11.0
"#;

fn table() -> PriceTable {
    PriceTable::parse(TABLE, "test.toml").unwrap()
}

fn usd(t: &PriceTable, provider: Option<&str>, ex: &Exchange) -> f64 {
    match t.cost(provider, ex) {
        Priced::Cost(c) => c.usd(),
        other => panic!("not priced: {other:?}"),
    }
}

#[test]
fn cost_splits_prompt_into_plain_cache_reads_and_writes() {
    let t = table();
    // 2000 prompt tokens: 1000 read from cache, 200 written, 800 plain; 500 output.
    // 800×3 + 1000×0.3 + 200×3.75 + 500×15 = 2400 + 300 + 750 + 7500 = 10950 µ$ = 0.01095 $.
    let ex = exchange("claude-sonnet-4-5-20250929", 2000, 1000, 200, 500);
    let Priced::Cost(c) = t.cost(None, &ex) else {
        panic!("priced")
    };
    assert_eq!(c.picodollars, 10_950_000_000);
    assert_eq!(c.usd(), 0.01095);
    // Defaults: cached and cache-write prices fall back to the input price.
    let mini = exchange("gpt-4o-mini", 1_000_000, 400_000, 0, 1_000_000);
    assert_eq!(usd(&t, None, &mini), 0.75);
    // A million tokens of gpt-4o: 1.25 cached half + 1.25 plain half.
    let four = exchange("gpt-4o-2024-08-06", 1_000_000, 500_000, 0, 0);
    assert_eq!(usd(&t, None, &four), 1.875);
}

#[test]
fn provider_entries_win_and_names_extend_only_by_dates_and_tags() {
    let t = table();
    let ex = exchange("gpt-4o", 1_000_000, 0, 0, 0);
    assert_eq!(usd(&t, None, &ex), 2.5);
    assert_eq!(usd(&t, Some("openai"), &ex), 2.5);
    assert_eq!(usd(&t, Some("azure"), &ex), 2.75);
    for priced in [
        "gpt-4o-2024-08-06",
        "gpt-4o-20240806",
        "gpt-4o:latest",
        "gpt-4o@2024",
        "gpt-4o-latest",
    ] {
        assert!(t.price(None, priced).is_some(), "{priced}");
    }
    // The longest listed name wins.
    assert_eq!(
        t.price(None, "gpt-4o-mini-2024-07-18").map(|p| p.input),
        Some(150_000)
    );
    for other in ["gpt-4o-pro", "gpt-4", "gpt-4o-2024", "gpt-4o:", "llama3"] {
        assert!(t.price(None, other).is_none(), "{other}");
    }
}

#[test]
fn unpriced_models_and_exchanges_without_tokens() {
    let t = table();
    assert_eq!(
        t.cost(None, &exchange("llama3.2", 10, 0, 0, 5)),
        Priced::Unpriced
    );
    let mut none = exchange("gpt-4o", 0, 0, 0, 0);
    none.tokens = Tokens::default();
    assert_eq!(t.cost(None, &none), Priced::NoTokens);
    // Counted output alone (a stream without usage) is priced: what is known.
    none.tokens.completion = TokenCount::counted(100);
    assert_eq!(usd(&t, None, &none), 0.001);
    // The served model is what is billed: looked up before the requested alias.
    let mut alias = exchange("my-alias", 1_000_000, 0, 0, 0);
    alias.response_model = Some("gpt-4o-mini-2024-07-18".into());
    assert_eq!(usd(&t, None, &alias), 0.15);
}

#[test]
fn bad_files_name_the_line() {
    let err = |text: &str| PriceTable::parse(text, "p.toml").unwrap_err().to_string();
    let negative = "[[model]]\nname = \"m\"\ninput = 1.0\noutput = -2.0\n";
    let e = err(negative);
    assert!(e.starts_with("p.toml line 4: output = -2"), "{e}");
    let precise = "[[model]]\nname = \"m\"\ninput = 0.0000001\noutput = 1.0\n";
    assert!(
        err(precise).starts_with("p.toml line 3: input"),
        "{}",
        err(precise)
    );
    let twice = "[[model]]\nname = \"m\"\ninput = 1.0\noutput = 1.0\n\n[[model]]\nname = \"m\"\ninput = 1.0\noutput = 1.0\n";
    assert!(
        err(twice).starts_with("p.toml line 6: model \"m\" is listed twice"),
        "{}",
        err(twice)
    );
    // Syntax errors, unknown keys and missing fields: toml's own message, with line and column.
    for (text, line) in [
        ("[[model]]\nname = \"m\"\ninput = \n", "line 3"),
        (
            "[[model]]\nname = \"m\"\ninput = 1.0\noutput = 1.0\nprompt = 2.0\n",
            "line 5",
        ),
        (
            "as_of = \"x\"\n[[model]]\nname = \"m\"\noutput = 1.0\n",
            "line 2",
        ),
    ] {
        let e = err(text);
        assert!(e.starts_with("p.toml: "), "{e}");
        assert!(e.contains(line), "{e} should name {line}");
    }
    let missing = PriceTable::load(Path::new("/nonexistent/prices.toml")).unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("/nonexistent/prices.toml: ")
    );
}

#[test]
fn the_shipped_table_loads() {
    let t = PriceTable::parse(SHIPPED, "prices.toml").unwrap();
    assert!(t.len() >= 15, "{}", t.len());
    assert!(t.as_of.is_some());
    assert_eq!(PriceTable::shipped().len(), t.len());
    // gpt-4o: $2.50 in, $1.25 cached, $10 out per million.
    assert_eq!(
        t.price(None, "gpt-4o-2024-08-06"),
        Some(Price {
            input: 2_500_000,
            output: 10_000_000,
            cached_input: 1_250_000,
            cache_write: 2_500_000
        })
    );
}
