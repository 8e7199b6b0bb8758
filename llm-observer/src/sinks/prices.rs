//! The price table behind `llm_client_cost_usd_total`: USD per million tokens per model (and,
//! optionally, provider), from the shipped `prices.toml` or `--prices FILE`.
//!
//! Arithmetic is exact: each price is held as an integer number of picodollars per token
//! ($1 per million tokens = 10^6 pico$ per token, so any price with up to six decimals is exact),
//! costs are integer picodollars, and only the final conversion to dollars rounds (to the double
//! nearest the exact value).

use std::collections::HashMap;
use std::path::Path;

use llm_observer_decode::Exchange;
use serde::Deserialize;

/// The table shipped with the agent (see the file's header for where its prices come from).
pub const SHIPPED: &str = include_str!("../../prices.toml");

#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, a wrong type (toml's message names the line and column).
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path} line {line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// When the prices were collected, and from where: logged at load.
    as_of: Option<String>,
    source: Option<String>,
    #[serde(default)]
    model: Vec<toml::Spanned<Entry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    provider: Option<String>,
    input: toml::Spanned<f64>,
    output: toml::Spanned<f64>,
    cached_input: Option<toml::Spanned<f64>>,
    cache_write: Option<toml::Spanned<f64>>,
}

/// Prices of one model, picodollars per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cache_write: u64,
}

/// What one exchange cost, exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub picodollars: u128,
}

impl Cost {
    pub fn usd(self) -> f64 {
        self.picodollars as f64 / 1e12
    }
}

/// Largest price accepted (USD per million tokens): far above any list price, low enough that
/// picodollars × tokens stays exact in u128.
const MAX_PRICE: f64 = 1_000_000.0;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceTable {
    /// provider (or "") → model name → price. Nested so a lookup borrows its `&str`s (it runs for
    /// every exchange: building owned keys and scanning every entry was most of the metrics
    /// sink's cost for unpriced models).
    entries: HashMap<String, HashMap<String, Price>>,
    len: usize,
    pub as_of: Option<String>,
    pub source: Option<String>,
}

impl PriceTable {
    /// The shipped table.
    pub fn shipped() -> PriceTable {
        // The shipped file is tested (`the_shipped_table_loads`): it cannot fail here.
        PriceTable::parse(SHIPPED, "prices.toml (shipped)").unwrap_or_default()
    }

    pub fn load(path: &Path) -> Result<PriceTable, PriceError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PriceError::Read {
            path: shown.clone(),
            source,
        })?;
        PriceTable::parse(&text, &shown)
    }

    /// `path` only names the file in errors.
    pub fn parse(text: &str, path: &str) -> Result<PriceTable, PriceError> {
        let file: File = toml::from_str(text).map_err(|e| PriceError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let line = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let invalid = |offset: usize, message: String| PriceError::Invalid {
            path: path.to_owned(),
            line: line(offset),
            message,
        };
        let pico = |v: &toml::Spanned<f64>, key: &str| -> Result<u64, PriceError> {
            let usd = *v.get_ref();
            if !usd.is_finite() || !(0.0..=MAX_PRICE).contains(&usd) {
                return Err(invalid(
                    v.span().start,
                    format!(
                        "{key} = {usd}: a price must be between 0 and {MAX_PRICE} USD per million tokens"
                    ),
                ));
            }
            let p = (usd * 1e6).round();
            if (p - usd * 1e6).abs() > 1e-3 {
                return Err(invalid(
                    v.span().start,
                    format!(
                        "{key} = {usd}: more than 6 decimals (the resolution is 0.000001 USD per million tokens)"
                    ),
                ));
            }
            Ok(p as u64)
        };
        let mut entries: HashMap<String, HashMap<String, Price>> = HashMap::new();
        let mut len = 0;
        for e in &file.model {
            let at = e.span().start;
            let e = e.get_ref();
            if e.name.trim().is_empty() {
                return Err(invalid(at, "a model needs a non-empty name".into()));
            }
            let input = pico(&e.input, "input")?;
            let price = Price {
                input,
                output: pico(&e.output, "output")?,
                cached_input: e
                    .cached_input
                    .as_ref()
                    .map_or(Ok(input), |v| pico(v, "cached_input"))?,
                cache_write: e
                    .cache_write
                    .as_ref()
                    .map_or(Ok(input), |v| pico(v, "cache_write"))?,
            };
            let names = entries
                .entry(e.provider.clone().unwrap_or_default())
                .or_default();
            if names.insert(e.name.clone(), price).is_some() {
                return Err(invalid(
                    at,
                    format!("model {:?} is listed twice for the same provider", e.name),
                ));
            }
            len += 1;
        }
        Ok(PriceTable {
            entries,
            len,
            as_of: file.as_of,
            source: file.source,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The price of `model` (of `provider`, when known): an entry of that provider before an
    /// unqualified one; an exact name before a listed name that `model` extends by a date or tag.
    pub fn price(&self, provider: Option<&str>, model: &str) -> Option<Price> {
        let providers = provider.into_iter().chain(std::iter::once(""));
        for p in providers {
            let Some(names) = self.entries.get(p) else {
                continue;
            };
            if let Some(price) = names.get(model) {
                return Some(*price);
            }
            // A listed name that `model` extends ends just before a separator of `model`: try
            // those prefixes, longest first (the most specific listed name wins).
            let base = model
                .char_indices()
                .rev()
                .filter(|&(i, c)| i > 0 && matches!(c, '-' | ':' | '@'))
                .map(|(i, _)| &model[..i])
                .filter(|name| extends(model, name))
                .find_map(|name| names.get(name));
            if let Some(price) = base {
                return Some(*price);
            }
        }
        None
    }

    /// What `ex` cost. The served model (`response_model`, what is billed) is looked up first,
    /// then the requested one.
    pub fn cost(&self, provider: Option<&str>, ex: &Exchange) -> Priced {
        let t = &ex.tokens;
        if t.prompt.value.is_none() && t.completion.value.is_none() {
            return Priced::NoTokens;
        }
        [ex.response_model.as_deref(), ex.request_model.as_deref()]
            .into_iter()
            .flatten()
            .find_map(|m| self.price(provider, m))
            .map_or(Priced::Unpriced, |price| Priced::Cost(cost_of(&price, ex)))
    }
}

/// The outcome of pricing one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priced {
    Cost(Cost),
    /// It has token counts but its model is in no table entry.
    Unpriced,
    /// No reported or counted tokens: nothing to price.
    NoTokens,
}

/// Exact cost: prompt tokens split into cache reads, cache writes and the rest (`prompt` includes
/// both, as the decoders normalise it); output tokens include reasoning tokens.
pub fn cost_of(price: &Price, ex: &Exchange) -> Cost {
    let t = &ex.tokens;
    let prompt = t.prompt.value.unwrap_or(0);
    let cached = t.cached.value.unwrap_or(0).min(prompt);
    let written = ex
        .cache_write_tokens
        .value
        .unwrap_or(0)
        .min(prompt - cached);
    let plain = prompt - cached - written;
    let output = t.completion.value.unwrap_or(0);
    let p = |tokens: u64, pico: u64| u128::from(tokens) * u128::from(pico);
    Cost {
        picodollars: p(plain, price.input)
            + p(cached, price.cached_input)
            + p(written, price.cache_write)
            + p(output, price.output),
    }
}

/// `model` is `name` plus a snapshot date (`-2024-08-06`, `-20250929`), `-latest`, or a tag
/// (`:latest`, `@20240620`). Other suffixes are other models (`gpt-5-pro` is not `gpt-5`).
fn extends(model: &str, name: &str) -> bool {
    let Some(rest) = model.strip_prefix(name) else {
        return false;
    };
    if let Some(tag) = rest.strip_prefix(':').or_else(|| rest.strip_prefix('@')) {
        return !tag.is_empty();
    }
    let Some(suffix) = rest.strip_prefix('-') else {
        return false;
    };
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let dashed = suffix.split('-').collect::<Vec<_>>();
    suffix == "latest"
        || digits(suffix, 8)
        || (dashed.len() == 3
            && digits(dashed[0], 4)
            && digits(dashed[1], 2)
            && digits(dashed[2], 2))
}

#[cfg(test)]
#[path = "prices_tests.rs"]
mod tests;
