//! The committed Grafana dashboards (`dashboards/*.json`): their template variables and every
//! panel target's PromQL, and Grafana's substitution of variables into a query.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

/// One panel target.
#[derive(Debug, Clone)]
pub struct Query {
    pub dashboard: String,
    pub panel_id: i64,
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
}

/// One template variable.
#[derive(Debug, Clone)]
pub struct Variable {
    pub name: String,
    pub kind: String,
    /// The `label_values(...)` query of a query variable.
    pub query: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Dashboard {
    pub file: PathBuf,
    pub json: Value,
    pub title: String,
    pub variables: Vec<Variable>,
    pub queries: Vec<Query>,
}

/// Every `dashboards/*.json`, sorted by file name.
pub fn load_all() -> Vec<Dashboard> {
    let dir = super::root().join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("dashboards/ exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files.into_iter().map(load).collect()
}

fn load(file: PathBuf) -> Dashboard {
    let text = std::fs::read_to_string(&file).expect("dashboard readable");
    let json: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", file.display()));
    let title = json["title"].as_str().unwrap_or_default().to_owned();
    let variables = json["templating"]["list"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|v| Variable {
                    name: v["name"].as_str().unwrap_or_default().to_owned(),
                    kind: v["type"].as_str().unwrap_or_default().to_owned(),
                    query: v["query"]["query"]
                        .as_str()
                        .or_else(|| v["query"].as_str().filter(|_| v["type"] == "query"))
                        .map(str::to_owned),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut queries = Vec::new();
    for p in panels(&json) {
        for t in p["targets"].as_array().into_iter().flatten() {
            queries.push(Query {
                dashboard: title.clone(),
                panel_id: p["id"].as_i64().unwrap_or(-1),
                panel: p["title"].as_str().unwrap_or_default().to_owned(),
                ref_id: t["refId"].as_str().unwrap_or_default().to_owned(),
                expr: t["expr"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }
    Dashboard {
        file,
        json,
        title,
        variables,
        queries,
    }
}

/// Every panel, rows' nested panels included.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(p);
        for inner in p["panels"].as_array().into_iter().flatten() {
            out.push(inner);
        }
    }
    out
}

/// `label_values(selector, label)` or `label_values(label)` → (selector, label).
pub fn label_values(query: &str) -> Option<(Option<String>, String)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    match inner.rfind(',') {
        Some(i) => Some((
            Some(inner[..i].trim().to_owned()),
            inner[i + 1..].trim().to_owned(),
        )),
        None => Some((None, inner.trim().to_owned())),
    }
}

/// Grafana's escaping of one value inside a Prometheus regex matcher (`prometheusSpecialRegexEscape`):
/// regex metacharacters get a backslash, written doubled inside the PromQL string.
pub fn regex_escape(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        if "\\^$*+?.()|{}[]'".contains(c) {
            out.push_str("\\\\");
        }
        out.push(c);
    }
    out
}

/// What Grafana puts for a multi-value variable in a regex matcher: one escaped value, or
/// `(a|b|…)`.
pub fn regex_value(values: &[String]) -> String {
    let escaped: Vec<String> = values.iter().map(|v| regex_escape(v)).collect();
    match escaped.as_slice() {
        [one] => one.clone(),
        many => format!("({})", many.join("|")),
    }
}

/// Replaces `$name` / `${name}` of `vars` (values already formatted) and Grafana's range builtins
/// (`$__rate_interval`, `$__range`, `$__interval`) by `range`. Longer names first, so `$model`
/// never eats the start of `$models`.
pub fn substitute(expr: &str, vars: &BTreeMap<String, String>, range: &str) -> String {
    let mut out = expr.to_owned();
    for b in ["$__rate_interval", "$__range", "$__interval"] {
        out = out.replace(b, range);
    }
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for n in names {
        out = out.replace(&format!("${{{n}}}"), &vars[n]);
        out = out.replace(&format!("${n}"), &vars[n]);
    }
    out
}

/// Metric names (`llm_*` and Prometheus's per-target series) a query reads.
pub fn metric_names(expr: &str) -> Vec<String> {
    let mut out: Vec<String> = expr
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| {
            w.starts_with("llm_")
                || ["up", "scrape_duration_seconds", "scrape_samples_scraped"].contains(w)
        })
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_forms() {
        assert_eq!(
            label_values("label_values(up{job=~\"a,b\"}, instance)"),
            Some((Some("up{job=~\"a,b\"}".into()), "instance".into()))
        );
        assert_eq!(
            label_values("label_values(job)"),
            Some((None, "job".into()))
        );
        assert_eq!(label_values("up"), None);
    }

    #[test]
    fn substitution_escapes_like_grafana() {
        let mut vars = BTreeMap::new();
        vars.insert("node".into(), regex_value(&["127.0.0.1:9202".into()]));
        vars.insert("model".into(), regex_value(&["a:1".into(), "b.c".into()]));
        assert_eq!(
            substitute(
                "rate(x{instance=~\"$node\", model=~\"${model}\"}[$__rate_interval])",
                &vars,
                "5m"
            ),
            "rate(x{instance=~\"127\\\\.0\\\\.0\\\\.1:9202\", model=~\"(a:1|b\\\\.c)\"}[5m])"
        );
    }
}
