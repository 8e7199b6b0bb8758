//! The deploy files, checked by the tools that consume them:
//! - Prometheus: `promtool check config` (static and Kubernetes scrape configs), `check rules`,
//!   `test rules` (deploy/prometheus/tests);
//! - Kubernetes: every manifest of the kustomize base and the PodMonitor against the Kubernetes
//!   1.37 schemas shipped by `kubernetes-validate` (strict: unknown fields fail), the base rendered
//!   by `kubectl kustomize` where kubectl exists, and the cross-references between objects;
//! - compose: the compose specification's JSON schema (`check-jsonschema`'s vendored copy);
//! - systemd: `systemd-analyze verify`.
//!
//! Each validator is shown to reject a broken copy, so a pass means something. The Python tools
//! live in the venv (`deploy/requirements.txt`, installed by `cargo xtask setup --test`); promtool
//! and systemd-analyze come from Debian. Under `CI=true` a missing tool fails its test.

mod operate;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use llm_observer_tests::harness::{guard, stack::path_from_env};
use serde_json::Value;

fn deploy(rel: &str) -> PathBuf {
    operate::root().join("deploy").join(rel)
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&std::ffi::OsStr]) -> Output {
    let program = program.as_ref();
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program:?} does not run: {e}"))
}

/// A venv tool (`kubernetes-validate`, `check-jsonschema`), or None after skip_or_fail.
fn venv_tool(name: &str) -> Option<PathBuf> {
    let bin = path_from_env("LLM_OBSERVER_VENV", ".venv")
        .join("bin")
        .join(name);
    if bin.exists() {
        Some(bin)
    } else {
        guard::skip_or_fail(&format!(
            "no {} (cargo xtask setup --test installs deploy/requirements.txt)",
            bin.display()
        ))
    }
}

fn promtool() -> bool {
    operate::have("promtool")
        || guard::skip_or_fail::<()>("no promtool (apt-get install prometheus)").is_some()
}

fn tmp(name: &str) -> PathBuf {
    // Under target/ (ignored by git, removed by cargo clean), one folder per test run.
    let dir = operate::root().join(format!("target/operate/deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

#[test]
fn prometheus_configs_rules_and_rule_unit_tests_pass_promtool() {
    if !promtool() {
        return;
    }
    let out = run(
        "promtool",
        &[
            "check".as_ref(),
            "config".as_ref(),
            deploy("prometheus/prometheus.yml").as_os_str(),
        ],
    );
    assert!(out.status.success(), "{}", said(&out));
    for rules in std::fs::read_dir(deploy("prometheus/rules"))
        .expect("rules dir")
        .flatten()
    {
        let out = run(
            "promtool",
            &["check".as_ref(), "rules".as_ref(), rules.path().as_os_str()],
        );
        assert!(out.status.success(), "{}", said(&out));
        assert!(
            said(&out).contains("SUCCESS: 9 rules found"),
            "{}",
            said(&out)
        );
    }
    let out = run(
        "promtool",
        &[
            "test".as_ref(),
            "rules".as_ref(),
            deploy("prometheus/tests/llm-observer.test.yml").as_os_str(),
        ],
    );
    assert!(out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("SUCCESS"), "{}", said(&out));
}

#[test]
fn the_rule_unit_tests_catch_a_changed_threshold() {
    if !promtool() {
        return;
    }
    // The same tests against rules whose error-ratio threshold moved above the test's 10%.
    let rules =
        std::fs::read_to_string(deploy("prometheus/rules/llm-observer.yml")).expect("rules");
    let broken = rules.replace(") > 0.05", ") > 0.5");
    assert_ne!(broken, rules);
    let dir = tmp("rules-broken");
    std::fs::create_dir_all(dir.join("rules")).expect("dir");
    std::fs::create_dir_all(dir.join("tests")).expect("dir");
    std::fs::write(dir.join("rules/llm-observer.yml"), broken).expect("write");
    std::fs::copy(
        deploy("prometheus/tests/llm-observer.test.yml"),
        dir.join("tests/t.yml"),
    )
    .expect("copy");
    let out = run(
        "promtool",
        &[
            "test".as_ref(),
            "rules".as_ref(),
            dir.join("tests/t.yml").as_os_str(),
        ],
    );
    assert!(!out.status.success(), "{}", said(&out));
    assert!(said(&out).contains("LLMHighErrorRatio"), "{}", said(&out));
}

#[test]
fn kubernetes_sd_scrape_config_passes_promtool() {
    if !promtool() {
        return;
    }
    let path = deploy("prometheus/kubernetes-sd.yml");
    let out = run(
        "promtool",
        &["check".as_ref(), "config".as_ref(), path.as_os_str()],
    );
    if out.status.success() {
        return;
    }
    // Debian builds Prometheus without the Kubernetes service discovery (its client libraries are
    // not packaged), so its promtool does not know `kubernetes_sd_configs`. Check everything else
    // of the file — the relabelling above all — with the discovery swapped for a static target.
    assert!(
        said(&out).contains("field kubernetes_sd_configs not found"),
        "{}",
        said(&out)
    );
    println!(
        "note: this promtool has no kubernetes_sd; checking the rest of {}",
        path.display()
    );
    let text = std::fs::read_to_string(&path).expect("read");
    let swapped = text.replace(
        "    kubernetes_sd_configs:\n      - role: pod\n",
        "    static_configs:\n      - targets: ['localhost:9202']\n",
    );
    assert_ne!(swapped, text, "the kubernetes_sd_configs block moved");
    let copy = tmp("kubernetes-sd-static.yml");
    std::fs::write(&copy, swapped).expect("write");
    std::fs::create_dir_all(copy.parent().expect("dir").join("rules")).expect("rules dir");
    for r in std::fs::read_dir(deploy("prometheus/rules"))
        .expect("rules")
        .flatten()
    {
        std::fs::copy(
            r.path(),
            copy.parent()
                .expect("dir")
                .join("rules")
                .join(r.file_name()),
        )
        .expect("copy");
    }
    let out = run(
        "promtool",
        &["check".as_ref(), "config".as_ref(), copy.as_os_str()],
    );
    assert!(out.status.success(), "{}", said(&out));
}

/// The files of the kustomize base (its `resources`).
fn base_resources() -> Vec<PathBuf> {
    let k = &operate::yaml_docs(&deploy("kubernetes/kustomization.yaml"))[0];
    k["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| deploy("kubernetes").join(r.as_str().expect("resource path")))
        .collect()
}

fn kubernetes_validate(kv: &Path, files: &[PathBuf]) -> Output {
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["--strict".as_ref(), "-k".as_ref(), "1.37.0".as_ref()];
    args.extend(files.iter().map(|f| f.as_os_str()));
    run(kv, &args)
}

#[test]
fn kubernetes_manifests_validate_against_the_kubernetes_schema() {
    let Some(kv) = venv_tool("kubernetes-validate") else {
        return;
    };
    let files = base_resources();
    // Every manifest in the folder is in the base (or is the kustomization itself).
    let mut on_disk: Vec<PathBuf> = std::fs::read_dir(deploy("kubernetes"))
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "yaml") && !p.ends_with("kustomization.yaml")
        })
        .collect();
    on_disk.sort();
    let mut listed = files.clone();
    listed.sort();
    assert_eq!(
        listed, on_disk,
        "kustomization.yaml resources vs the folder"
    );
    let out = kubernetes_validate(&kv, &files);
    let text = said(&out);
    assert!(out.status.success(), "{text}");
    for kind in [
        "namespace",
        "serviceaccount",
        "clusterrole",
        "clusterrolebinding",
        "service",
        "daemonset",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}/llm-observer")),
            "{kind}:\n{text}"
        );
    }
    assert!(!text.contains("WARN") && !text.contains("ERROR"), "{text}");
    // kustomize's rendering of the base, where kubectl is installed (it is not a CI prerequisite).
    if operate::have("kubectl") {
        let out = run(
            "kubectl",
            &["kustomize".as_ref(), deploy("kubernetes").as_os_str()],
        );
        assert!(out.status.success(), "{}", said(&out));
        let rendered = tmp("rendered.yaml");
        std::fs::write(&rendered, &out.stdout).expect("write");
        let out = kubernetes_validate(&kv, &[rendered]);
        assert!(out.status.success(), "{}", said(&out));
    } else {
        println!("note: no kubectl, the kustomize rendering is not checked");
    }
}

#[test]
fn kubernetes_validate_rejects_a_misspelt_field() {
    let Some(kv) = venv_tool("kubernetes-validate") else {
        return;
    };
    let ds = std::fs::read_to_string(deploy("kubernetes/daemonset.yaml")).expect("read");
    let bad = tmp("bad-daemonset.yaml");
    std::fs::write(
        &bad,
        ds.replace("readOnlyRootFilesystem", "readOnlyRootFileSystem"),
    )
    .expect("write");
    let out = kubernetes_validate(&kv, &[bad]);
    assert!(!out.status.success(), "{}", said(&out));
}

fn daemonset() -> Value {
    operate::yaml_docs(&deploy("kubernetes/daemonset.yaml")).remove(0)
}

#[test]
fn the_daemonset_runs_the_agent_as_the_container_test_does() {
    if venv_tool("kubernetes-validate").is_none() {
        return;
    }
    let ds = daemonset();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(
        sc["capabilities"]["add"],
        serde_json::json!(["BPF", "PERFMON", "SYS_PTRACE"])
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["env"][0]["name"], "NODE_NAME");
    assert_eq!(
        c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert!(c["resources"]["limits"]["memory"].is_string());
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| m["mountPath"].as_str().expect("path"))
        .collect();
    assert!(
        mounts.contains(&"/host/proc") && mounts.contains(&"/sys/kernel/tracing"),
        "{mounts:?}"
    );
    assert!(
        c["args"]
            .as_array()
            .expect("args")
            .contains(&"--proc-root=/host/proc".into())
    );
}

#[test]
fn service_and_pod_monitor_select_the_daemonset_pods_and_port() {
    let Some(kv) = venv_tool("kubernetes-validate") else {
        return;
    };
    let ds = daemonset();
    let labels = ds["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .expect("labels")
        .clone();
    let port = &ds["spec"]["template"]["spec"]["containers"][0]["ports"][0];
    let selects = |sel: &Value| {
        sel.as_object()
            .expect("selector")
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    };
    let svc = operate::yaml_docs(&deploy("kubernetes/service.yaml")).remove(0);
    assert!(selects(&svc["spec"]["selector"]));
    assert_eq!(svc["spec"]["clusterIP"], "None", "headless");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], port["name"]);
    let ann = &svc["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], port["containerPort"].to_string());
    let pm_file = deploy("kubernetes/prometheus-operator/podmonitor.yaml");
    let pm = operate::yaml_docs(&pm_file).remove(0);
    assert_eq!(pm["kind"], "PodMonitor");
    assert!(selects(&pm["spec"]["selector"]["matchLabels"]));
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], port["name"]);
    // kubernetes-validate has no schema for the prometheus-operator CRD; it must say so and
    // nothing else (a schema-level check of the PodMonitor needs the CRD's schema).
    let out = kubernetes_validate(&kv, &[pm_file]);
    assert!(
        said(&out).contains("Couldn't find schema for kind PodMonitor"),
        "{}",
        said(&out)
    );
}

#[test]
fn compose_file_validates_against_the_compose_specification() {
    let Some(cj) = venv_tool("check-jsonschema") else {
        return;
    };
    let compose = deploy("compose/compose.yaml");
    let check = |f: &Path| {
        run(
            &cj,
            &[
                "--builtin-schema".as_ref(),
                "vendor.compose-spec".as_ref(),
                f.as_os_str(),
            ],
        )
    };
    let out = check(&compose);
    assert!(out.status.success(), "{}", said(&out));
    // A misspelt key fails, so the schema is really applied.
    let text = std::fs::read_to_string(&compose).expect("read");
    let bad = tmp("bad-compose.yaml");
    std::fs::write(&bad, text.replace("read_only: true", "read_onlyy: true")).expect("write");
    assert!(!check(&bad).status.success());
    // The stack's host paths exist, and the agent runs with the DaemonSet's capabilities.
    let doc = operate::yaml_docs(&compose).remove(0);
    for (name, svc) in doc["services"].as_object().expect("services") {
        for v in svc["volumes"].as_array().into_iter().flatten() {
            let host = v
                .as_str()
                .expect("short volume syntax")
                .split(':')
                .next()
                .expect("host part");
            if host.starts_with('.') {
                assert!(
                    deploy("compose").join(host).exists(),
                    "{name}: {host} does not exist"
                );
            }
        }
    }
    let agent = &doc["services"]["llm-observer"];
    let caps = &daemonset()["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"];
    assert_eq!(agent["cap_add"], caps["add"]);
    assert_eq!(agent["pid"], "host");
    assert_eq!(agent["read_only"], true);
    // Prometheus of the stack scrapes the port the agent serves (host network: localhost).
    let served = agent["command"]
        .as_array()
        .expect("command")
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix("--metrics-addr=0.0.0.0:"))
        .expect("the agent's --metrics-addr");
    let prom = &operate::yaml_docs(&deploy("prometheus/prometheus.yml"))[0];
    assert_eq!(prom["scrape_configs"][0]["job_name"], "llm-metrics");
    assert_eq!(
        prom["scrape_configs"][0]["static_configs"][0]["targets"][0],
        format!("localhost:{served}")
    );
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    if !operate::have("systemd-analyze") {
        guard::skip_or_fail::<()>("no systemd-analyze");
        return;
    }
    // verify checks that ExecStart's binary exists: point it at the built agent.
    let bin = path_from_env("LLM_OBSERVER_BIN", "target/release/llm-observer");
    if !bin.exists() {
        guard::skip_or_fail::<()>(&format!("no agent at {}", bin.display()));
        return;
    }
    let unit = std::fs::read_to_string(deploy("systemd/llm-observer.service")).expect("unit");
    assert!(unit.contains("ExecStart=/usr/local/bin/llm-observer run"));
    let caps = &daemonset()["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
        ["add"];
    let want: Vec<String> = caps
        .as_array()
        .expect("caps")
        .iter()
        .map(|c| format!("CAP_{}", c.as_str().expect("cap")))
        .collect();
    assert!(
        unit.contains(&format!("CapabilityBoundingSet={}", want.join(" "))),
        "unit caps vs DaemonSet {want:?}"
    );
    let verify = |text: &str| {
        let f = tmp("llm-observer.service");
        std::fs::write(
            &f,
            text.replace("/usr/local/bin/llm-observer", &bin.display().to_string()),
        )
        .expect("write");
        run("systemd-analyze", &["verify".as_ref(), f.as_os_str()])
    };
    let out = verify(&unit);
    // verify exits 0 on unknown keys and bad values too, so its output must be empty.
    assert!(
        out.status.success() && said(&out).trim().is_empty(),
        "{}",
        said(&out)
    );
    let out = verify(&unit.replace("NoNewPrivileges=", "NoNewPrivilegez="));
    assert!(said(&out).contains("Unknown key"), "{}", said(&out));
}
