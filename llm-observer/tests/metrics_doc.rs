//! `docs/metrics.md` must list exactly what the code registers: every family with its type, label
//! names (in registration order) and help string, and every histogram's buckets. On a mismatch
//! the test prints the tables as the code would have them, ready to paste.

use std::collections::BTreeMap;
use std::path::PathBuf;

use llm_observer::sinks::{FamilyInfo, Metrics, MetricsConfig};

fn doc() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn families() -> Vec<FamilyInfo> {
    Metrics::new(MetricsConfig::default(), "test")
        .unwrap()
        .families()
        .to_vec()
}

/// Table rows between `<!-- {marker}:begin -->` and `<!-- {marker}:end -->`, as trimmed cells,
/// header and separator rows left out.
fn rows(doc: &str, marker: &str) -> Vec<Vec<String>> {
    let begin = format!("<!-- {marker}:begin -->");
    let end = format!("<!-- {marker}:end -->");
    let start = doc
        .find(&begin)
        .unwrap_or_else(|| panic!("no {begin} in docs/metrics.md"));
    let stop = doc[start..]
        .find(&end)
        .unwrap_or_else(|| panic!("no {end}"))
        + start;
    doc[start + begin.len()..stop]
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|cells| cells[0].starts_with('`'))
        .collect()
}

fn unquote(cell: &str) -> &str {
    cell.trim_matches('`')
}

fn label_cell(labels: &[String]) -> String {
    if labels.is_empty() {
        return "—".to_string();
    }
    labels
        .iter()
        .map(|l| format!("`{l}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn family_row(f: &FamilyInfo) -> String {
    format!(
        "| `{}` | {} | {} | {} |",
        f.name,
        f.kind.as_str(),
        label_cell(&f.labels),
        f.help
    )
}

fn bucket_cell(buckets: &[f64]) -> String {
    buckets
        .iter()
        .map(f64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn doc_lists_exactly_the_registered_families() {
    let doc = doc();
    let code = families();
    let want: BTreeMap<&str, String> = code
        .iter()
        .map(|f| (f.name.as_str(), family_row(f)))
        .collect();
    let got: BTreeMap<String, String> = rows(&doc, "families")
        .into_iter()
        .map(|c| {
            assert_eq!(c.len(), 4, "a families row needs 4 cells: {c:?}");
            let name = unquote(&c[0]).to_string();
            let row = format!("| {} | {} | {} | {} |", c[0], c[1], c[2], c[3]);
            (name, row)
        })
        .collect();
    let mismatched: Vec<&str> = want
        .iter()
        .filter(|(name, row)| got.get(**name) != Some(row))
        .map(|(name, _)| *name)
        .collect();
    let extra: Vec<&String> = got
        .keys()
        .filter(|n| !want.contains_key(n.as_str()))
        .collect();
    if !mismatched.is_empty() || !extra.is_empty() {
        let table: Vec<String> = code.iter().map(family_row).collect();
        panic!(
            "docs/metrics.md is out of date.\nmissing or different: {mismatched:?}\n\
             not registered: {extra:?}\nthe code registers:\n{}",
            table.join("\n")
        );
    }
}

#[test]
fn doc_lists_every_histograms_buckets() {
    let doc = doc();
    let code = families();
    let want: BTreeMap<&str, String> = code
        .iter()
        .filter(|f| !f.buckets.is_empty())
        .map(|f| (f.name.as_str(), bucket_cell(&f.buckets)))
        .collect();
    let got: BTreeMap<String, String> = rows(&doc, "buckets")
        .into_iter()
        .map(|c| {
            (
                unquote(&c[0]).to_string(),
                c.get(1).cloned().unwrap_or_default(),
            )
        })
        .collect();
    let got_ref: BTreeMap<&str, String> =
        got.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    if got_ref != want {
        let table: Vec<String> = want
            .iter()
            .map(|(name, b)| format!("| `{name}` | {b} |"))
            .collect();
        panic!(
            "docs/metrics.md bucket table is out of date; the code has:\n{}",
            table.join("\n")
        );
    }
}

/// Every family name in the doc's prose and PromQL examples exists (catches renamed families in
/// examples, which the tables alone would not). Histogram series suffixes are accepted.
#[test]
fn doc_mentions_only_registered_names() {
    let doc = doc();
    let names: Vec<String> = families().into_iter().map(|f| f.name).collect();
    let known = |word: &str| {
        names.iter().any(|n| {
            word == n
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| word.strip_suffix(s) == Some(n.as_str()))
        })
    };
    let mut unknown = Vec::new();
    for word in doc.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        // `llm_client_*` style wildcards and the crate name are not family names.
        let wildcard = word.ends_with('_') || word == "llm_observer";
        if word.starts_with("llm_") && !wildcard && !known(word) {
            unknown.push(word.to_string());
        }
    }
    unknown.sort();
    unknown.dedup();
    assert!(
        unknown.is_empty(),
        "unknown metric names in docs/metrics.md: {unknown:?}"
    );
}
