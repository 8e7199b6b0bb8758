//! The committed Grafana dashboards, checked without Grafana or a running Prometheus:
//! - they are what `dashboards/generate.py` writes (the script is their source);
//! - panel ids are unique, grid positions fit the 24-column grid and never overlap;
//! - the `datasource` variable exists and every panel and target reads through `${datasource}`;
//!   no datasource uid is written anywhere else;
//! - every `$variable` a query uses is defined, every template variable's query is a
//!   `label_values(selector, label)` whose selector is valid PromQL, and every panel expression is
//!   valid PromQL (both parsed by `promtool check rules`, Prometheus's own parser);
//! - every metric a query reads is a family the agent registers (docs/metrics.md) or one of
//!   Prometheus's per-target series.
//!
//! promtool comes from Debian's `prometheus` package (`cargo xtask setup --test`); under `CI=true`
//! its absence fails the PromQL checks.

mod operate;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use llm_observer_tests::harness::guard;
use operate::dashboards::{self, Dashboard, regex_value, substitute};
use serde_json::Value;

const BUILTINS: [&str; 3] = ["__rate_interval", "__range", "__interval"];
/// Prometheus's own series per target, which dashboards may read besides the agent's families.
const PER_TARGET: [&str; 3] = ["up", "scrape_duration_seconds", "scrape_samples_scraped"];

#[test]
fn committed_dashboards_are_what_the_generator_writes() {
    let out = Command::new("python3")
        .arg(operate::root().join("dashboards/generate.py"))
        .arg("--check")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn three_dashboards_with_their_titles() {
    let titles: Vec<String> = dashboards::load_all()
        .into_iter()
        .map(|d| d.title)
        .collect();
    assert_eq!(
        titles,
        ["LLM Agents & Tools", "LLM Inference", "llm-observer health"]
    );
}

#[test]
fn panel_ids_are_unique_and_the_grid_has_no_overlap() {
    for d in dashboards::load_all() {
        let mut ids = BTreeSet::new();
        let mut boxes: Vec<(i64, [i64; 4], String)> = Vec::new();
        for p in dashboards::panels(&d.json) {
            let id = p["id"].as_i64().expect("panel id");
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            assert!(ids.insert(id), "{}: panel id {id} twice", d.title);
            let g = &p["gridPos"];
            let r = ["x", "y", "w", "h"].map(|k| {
                g[k].as_i64()
                    .unwrap_or_else(|| panic!("{}: {title}: gridPos.{k}", d.title))
            });
            let [x, y, w, h] = r;
            assert!(
                x >= 0 && y >= 0 && w > 0 && h > 0 && x + w <= 24,
                "{}: {title}: gridPos {r:?} off the 24-column grid",
                d.title
            );
            for (other, o, other_title) in &boxes {
                let [ox, oy, ow, oh] = *o;
                let apart = x + w <= ox || ox + ow <= x || y + h <= oy || oy + oh <= y;
                assert!(
                    apart,
                    "{}: panel {id} {title:?} {r:?} overlaps panel {other} {other_title:?} {o:?}",
                    d.title
                );
            }
            boxes.push((id, r, title));
        }
        assert!(boxes.len() > 10, "{}: only {} panels", d.title, boxes.len());
    }
}

/// Every `datasource` object in the JSON, with where it was found.
fn datasources<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if k == "datasource" {
                    out.push((at.clone(), child));
                }
                datasources(child, format!("{at}.{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                datasources(child, format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_query_reads_through_the_datasource_variable() {
    for d in dashboards::load_all() {
        let var = d
            .variables
            .iter()
            .find(|v| v.name == "datasource")
            .unwrap_or_else(|| panic!("{}: no datasource variable", d.title));
        assert_eq!(var.kind, "datasource");
        let list = d.json["templating"]["list"].as_array().expect("templating");
        assert!(
            list.iter()
                .any(|v| v["name"] == "datasource" && v["query"] == "prometheus"),
            "{}: the datasource variable must list Prometheus datasources",
            d.title
        );
        for p in dashboards::panels(&d.json) {
            if p["type"] == "row" {
                continue;
            }
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{}: panel {}",
                d.title, p["title"]
            );
            for t in p["targets"].as_array().expect("targets") {
                assert_eq!(
                    t["datasource"]["uid"], "${datasource}",
                    "{}: {} {}",
                    d.title, p["title"], t["refId"]
                );
            }
        }
        let mut found = Vec::new();
        datasources(&d.json, String::new(), &mut found);
        for (at, ds) in found {
            assert_eq!(
                ds["uid"], "${datasource}",
                "{}: hard-coded datasource at {at}: {ds}",
                d.title
            );
        }
    }
}

/// `$name` / `${name}` references in `expr`.
fn references(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let braced = rest.starts_with('{');
        let body = if braced { &rest[1..] } else { rest };
        let name: String = body
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

#[test]
fn every_variable_a_query_uses_is_defined() {
    for d in dashboards::load_all() {
        let defined: BTreeSet<&str> = d.variables.iter().map(|v| v.name.as_str()).collect();
        let exprs = d
            .queries
            .iter()
            .map(|q| (q.panel.clone(), q.expr.clone()))
            .chain(
                d.variables
                    .iter()
                    .filter_map(|v| Some((format!("variable {}", v.name), v.query.clone()?))),
            );
        for (what, expr) in exprs {
            for r in references(&expr) {
                assert!(
                    defined.contains(r.as_str()) || BUILTINS.contains(&r.as_str()),
                    "{}: {what} uses ${r}, which is not defined",
                    d.title
                );
            }
        }
        // The filters the issue asks for, where their labels exist today.
        for name in ["node", "datasource"] {
            assert!(defined.contains(name), "{}: no {name} variable", d.title);
        }
    }
}

/// Family names from the generated table in docs/metrics.md.
fn documented_families() -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(operate::root().join("docs/metrics.md")).expect("metrics.md");
    let table = doc
        .split("<!-- families:begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- families:end -->").next())
        .expect("the families table markers");
    table
        .lines()
        .filter_map(|l| {
            let mut cells = l.split('|').map(str::trim).skip(1);
            let name = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
            let kind = cells.next()?;
            name.starts_with("llm_")
                .then(|| (name.to_owned(), kind.to_owned()))
        })
        .collect()
}

#[test]
fn queries_read_only_families_that_exist() {
    let families = documented_families();
    assert!(
        families.len() > 30,
        "docs/metrics.md family table not found"
    );
    for d in dashboards::load_all() {
        for q in &d.queries {
            for name in dashboards::metric_names(&q.expr) {
                if PER_TARGET.contains(&name.as_str()) {
                    continue;
                }
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| {
                        let base = name.strip_suffix(s)?;
                        (families.get(base).map(String::as_str) == Some("histogram"))
                            .then_some(base)
                    })
                    .unwrap_or(&name);
                assert!(
                    families.contains_key(family),
                    "{}: {} reads {name}, which the agent does not register",
                    d.title,
                    q.panel
                );
            }
        }
    }
}

/// Every expression a dashboard holds, variables substituted (each by a regex of sample values,
/// as Grafana would), as (where, PromQL).
fn expressions(d: &Dashboard) -> Vec<(String, String)> {
    let vars: BTreeMap<String, String> = d
        .variables
        .iter()
        .map(|v| (v.name.clone(), regex_value(&["a".into(), "b.c:1".into()])))
        .collect();
    let mut out = Vec::new();
    for v in &d.variables {
        if v.kind != "query" {
            continue;
        }
        let q = v.query.as_deref().expect("query variable has a query");
        let (selector, label) = dashboards::label_values(q).unwrap_or_else(|| {
            panic!(
                "{}: variable {}: {q} is not label_values(...)",
                d.title, v.name
            )
        });
        assert!(
            label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{}: variable {}: bad label {label:?}",
            d.title,
            v.name
        );
        if let Some(s) = selector {
            out.push((format!("variable {}", v.name), substitute(&s, &vars, "5m")));
        }
    }
    for q in &d.queries {
        out.push((
            format!("panel {} {:?} {}", q.panel_id, q.panel, q.ref_id),
            substitute(&q.expr, &vars, "5m"),
        ));
    }
    out
}

#[test]
fn every_expression_and_variable_query_is_valid_promql() {
    if Command::new("promtool").arg("--version").output().is_err() {
        guard::skip_or_fail::<()>("no promtool (apt-get install prometheus)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("llm-observer-dashboards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for d in dashboards::load_all() {
        let exprs = expressions(&d);
        // One recording rule per expression: `promtool check rules` parses each with Prometheus's
        // own PromQL parser and names the rule that fails.
        let mut yaml = String::from("groups:\n  - name: dashboard\n    rules:\n");
        for (i, (_, e)) in exprs.iter().enumerate() {
            let quoted = serde_json::to_string(e).expect("JSON string is YAML");
            yaml.push_str(&format!(
                "      - record: dashboard:expr_{i}\n        expr: {quoted}\n"
            ));
        }
        let file = dir.join(format!("{}.yml", d.json["uid"].as_str().unwrap_or("x")));
        std::fs::write(&file, &yaml).expect("write rules");
        let out = Command::new("promtool")
            .args(["check", "rules"])
            .arg(&file)
            .output()
            .expect("promtool runs");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let listing: Vec<String> = exprs
            .iter()
            .enumerate()
            .map(|(i, (w, e))| format!("expr_{i}: {w}: {e}"))
            .collect();
        assert!(
            out.status.success() && said.contains(&format!("SUCCESS: {} rules found", exprs.len())),
            "{}: invalid PromQL:\n{said}\n{}",
            d.title,
            listing.join("\n")
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_promql_check_rejects_a_broken_expression() {
    // The check above is only worth something if promtool fails on bad PromQL.
    if Command::new("promtool").arg("--version").output().is_err() {
        guard::skip_or_fail::<()>("no promtool (apt-get install prometheus)");
        return;
    }
    let file = std::env::temp_dir().join(format!("llm-observer-bad-{}.yml", std::process::id()));
    std::fs::write(
        &file,
        "groups:\n  - name: x\n    rules:\n      - record: x:y\n        expr: \"sum by (le (rate(x[5m]))\"\n",
    )
    .expect("write");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool runs");
    let _ = std::fs::remove_file(&file);
    assert!(!out.status.success());
}
