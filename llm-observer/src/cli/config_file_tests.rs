use std::path::Path;

use clap::CommandFactory as _;

use super::*;
use crate::cli::{Cli, Command as Sub, parse_from};

fn file(text: &str) -> ConfigFile {
    ConfigFile::parse(Path::new("c.toml"), text).expect("parses")
}

fn refused(text: &str) -> String {
    match ConfigFile::parse(Path::new("c.toml"), text).and_then(|f| f.apply(Cli::command())) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn values_become_command_line_spellings() {
    let f = file(
        "# comment\nmetrics-addr = \"127.0.0.1:1\"\nport = [1, 2]\nall_protocols = true\n\
         ring-bytes = 0x100000\nmax-models = 1_000\nweb.config.file = \"/w.yml\"\n",
    );
    let got: Vec<(&str, Vec<&str>, usize)> = f
        .settings
        .iter()
        .map(|s| {
            let v = s.values.iter().map(String::as_str).collect();
            (s.key.as_str(), v, s.line)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("metrics-addr", vec!["127.0.0.1:1"], 2),
            ("port", vec!["1", "2"], 3),
            ("all-protocols", vec!["true"], 4),
            ("ring-bytes", vec!["1048576"], 5),
            ("max-models", vec!["1000"], 6),
            ("web.config.file", vec!["/w.yml"], 7),
        ]
    );
}

#[test]
fn file_values_are_defaults_and_flags_win() {
    let dir = std::env::temp_dir().join(format!("llmo-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        "max-models = 7\nport = [11434, 8000]\nall-protocols = true\nraw = true\n",
    )
    .unwrap();
    let p = parse_from([
        "llm-observer",
        "--config",
        path.to_str().unwrap(),
        "--port",
        "5",
    ])
    .unwrap();
    assert_eq!(p.cli.run.max_models, 7);
    assert_eq!(p.cli.capture.port, vec![5], "the flag beats the file");
    assert!(p.cli.capture.all_protocols);
    assert_eq!(
        p.cli.run.max_peers, 32,
        "untouched keys keep their defaults"
    );
    // A subcommand's flag is settable too.
    let p = parse_from(["llm-observer", "--config", path.to_str().unwrap(), "trace"]).unwrap();
    match p.cli.command {
        Some(Sub::Trace(t)) => assert!(t.raw),
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_files_name_the_line_and_nothing_applies() {
    assert_eq!(
        refused("max-models = 3\n\nmax-modles = 4\n"),
        "--config c.toml:3: unknown key `max-modles`: not a flag of llm-observer (keys are the long flag names, see --help)"
    );
    assert_eq!(
        refused("\nring-poll-ms = 5000\n"),
        "--config c.toml:2: `ring-poll-ms`: invalid value '5000' for '--ring-poll-ms <RING_POLL_MS>': 5000 is not in 0..=1000"
    );
    assert_eq!(
        refused("all-protocols = \"yes\"\n"),
        "--config c.toml:1: `all-protocols`: expects true or false"
    );
    assert_eq!(
        refused("max-models = [1, 2]\n"),
        "--config c.toml:1: `max-models`: takes one value, not a list"
    );
    assert_eq!(
        refused("max_models = 1\nmax-models = 2\n"),
        "--config c.toml:2: `max-models` is set twice"
    );
    assert_eq!(
        refused("pid = 1979-05-27\n"),
        "--config c.toml:1: `pid`: a date is not a flag value"
    );
    assert_eq!(
        refused("config = \"other.toml\"\n"),
        "--config c.toml:1: unknown key `config`: not a flag of llm-observer (keys are the long flag names, see --help)"
    );
    let syntax = refused("a = 1\nport = [1,\n");
    assert!(syntax.starts_with("--config c.toml:"), "{syntax}");
}

#[test]
fn every_flag_is_a_documented_key() {
    let doc = include_str!("../../../docs/configuration.md");
    let keys = settable_keys(&Cli::command());
    assert!(keys.len() > 25, "{keys:?}");
    let missing: Vec<&str> = keys
        .iter()
        .map(|(_, k)| k.as_str())
        .filter(|k| !doc.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks keys {missing:?}"
    );
    // And each key is accepted by a file: set to its own default where it has one.
    let cmd = Cli::command();
    for (_, k) in &keys {
        let (_, arg) = find_flag(&cmd, k).expect(k);
        let values: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if values.is_empty() {
            continue;
        }
        let f = ConfigFile {
            path: "c.toml".into(),
            settings: vec![Setting {
                key: k.clone(),
                values,
                line: 1,
            }],
        };
        if let Err(e) = f.apply(Cli::command()) {
            panic!("{k}: {e}");
        }
    }
}
