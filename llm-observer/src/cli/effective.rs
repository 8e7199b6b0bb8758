//! `llm-observer config`: the settings the agent would run with, as a TOML file that `--config`
//! accepts, each line saying where its value came from.

use clap::{ArgAction, CommandFactory as _, parser::ValueSource};

use super::{Cli, Parsed, config_file::settable_keys};

/// One line per flag of the agent (not of its subcommands): `key = value  # source`, or a
/// comment for a flag with no value.
pub fn effective_settings(p: &Parsed) -> String {
    let mut out = String::new();
    // Declaration order (the definition the file was applied to has reordered its arguments).
    for (sub, key) in settable_keys(&Cli::command()) {
        if sub.is_some() {
            continue;
        }
        let Some(arg) = p.cmd.get_arguments().find(|a| a.get_long() == Some(&key)) else {
            continue;
        };
        let id = arg.get_id().as_str();
        let values: Vec<String> = p
            .matches
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let source = match p.matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag".to_owned(),
            Some(ValueSource::EnvVariable) => format!(
                "env {}",
                arg.get_env()
                    .map(|e| e.to_string_lossy())
                    .unwrap_or_default()
            ),
            Some(ValueSource::DefaultValue) => match p
                .file
                .as_ref()
                .and_then(|f| f.settings.iter().find(|s| s.key == key).map(|s| (f, s)))
            {
                Some((f, s)) => format!("{}:{}", f.path.display(), s.line),
                None => "default".to_owned(),
            },
            _ => "default".to_owned(),
        };
        if values.is_empty() {
            out.push_str(&format!("# {} (unset)\n", toml_key(&key)));
            continue;
        }
        let list = matches!(arg.get_action(), ArgAction::Append)
            || arg.get_num_args().is_some_and(|n| n.max_values() > 1);
        let rendered: Vec<String> = values.iter().map(|v| toml_value(v)).collect();
        let value = if list {
            format!("[{}]", rendered.join(", "))
        } else {
            rendered.join(", ")
        };
        out.push_str(&format!("{} = {value}  # {source}\n", toml_key(&key)));
    }
    out
}

/// Dotted flag names (`web.config.file`) are quoted so they stay one key.
fn toml_key(key: &str) -> String {
    if key.contains('.') {
        format!("\"{key}\"")
    } else {
        key.to_owned()
    }
}

/// Numbers and booleans bare, everything else a TOML basic string.
fn toml_value(v: &str) -> String {
    if v == "true" || v == "false" || v.parse::<i64>().is_ok() || v.parse::<u64>().is_ok() {
        return v.to_owned();
    }
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if c.is_control() => s.push_str(&format!("\\u{:04X}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}
