//! `--config FILE`: every flag of the agent settable in a TOML file under its long name
//! (`metrics-addr = "0.0.0.0:9202"`, `port = [11434, 8000]`, `all-protocols = true`; `_` and `-`
//! are the same, and `"web.config.file"` may be written quoted or as a dotted key).
//!
//! Precedence is flag > environment > file > built-in default. The file's values become the
//! defaults clap falls back to, so the order is clap's own and cannot drift from it.
//!
//! A file is checked whole before anything starts: a syntax error, an unknown key, a wrong type
//! or a value the flag rejects is an error naming the file and line, and nothing of the file is
//! applied. The keys are read from the command definition itself, so a new flag is settable in
//! the file the moment it exists.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use clap::{Arg, ArgAction, Command};
use toml::de::{DeTable, DeValue};

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--config {path}:{line}: {message}")]
    At {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// One setting of the file: a flag's long name and its values as the command line would spell
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub values: Vec<String>,
    /// 1-based line of the key in the file.
    pub line: usize,
}

/// A parsed config file, not yet checked against the flags.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub settings: Vec<Setting>,
}

/// Flags that make no sense in a file: the file's own name, help and version.
const NOT_SETTABLE: [&str; 3] = ["config", "help", "version"];

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses TOML text into settings (syntax and value types only).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let at = |offset: usize, message: String| ConfigError::At {
            path: path.to_owned(),
            line: line_of(text, offset),
            message,
        };
        let table = DeTable::parse(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            at(offset, e.message().trim().to_owned())
        })?;
        let mut settings = Vec::new();
        flatten(table.get_ref(), "", &mut |key, value, offset| {
            let values = scalar_values(value).map_err(|m| at(offset, format!("`{key}`: {m}")))?;
            settings.push(Setting {
                key: key.replace('_', "-"),
                values,
                line: line_of(text, offset),
            });
            Ok(())
        })?;
        settings.sort_by_key(|s| s.line);
        Ok(Self {
            path: path.to_owned(),
            settings,
        })
    }

    /// Checks every setting against `cmd`'s flags and returns `cmd` with the file's values as the
    /// defaults. Nothing is returned (so nothing is applied) unless every setting is valid.
    pub fn apply(&self, mut cmd: Command) -> Result<Command, ConfigError> {
        let err = |s: &Setting, message: String| ConfigError::At {
            path: self.path.clone(),
            line: s.line,
            message,
        };
        let mut seen: Vec<&str> = Vec::new();
        for s in &self.settings {
            if seen.contains(&s.key.as_str()) {
                return Err(err(s, format!("`{}` is set twice", s.key)));
            }
            seen.push(&s.key);
            let Some((sub, arg)) = find_flag(&cmd, &s.key) else {
                return Err(err(
                    s,
                    format!(
                        "unknown key `{}`: not a flag of llm-observer (keys are the long flag names, see --help)",
                        s.key
                    ),
                ));
            };
            check(&arg, &s.values).map_err(|m| err(s, format!("`{}`: {m}", s.key)))?;
            let id = arg.get_id().clone();
            let values = s.values.clone();
            let set = move |a: Arg| a.default_values(values);
            cmd = match sub {
                None => cmd.mut_arg(id, set),
                Some(name) => cmd.mut_subcommand(name, |c| c.mut_arg(id, set)),
            };
        }
        Ok(cmd)
    }
}

/// Every key a file may set, with the subcommand it belongs to (None: the agent itself).
pub fn settable_keys(cmd: &Command) -> Vec<(Option<String>, String)> {
    let mut keys = Vec::new();
    let mut add = |sub: Option<&str>, c: &Command| {
        for a in c.get_arguments() {
            if let Some(long) = a.get_long()
                && !NOT_SETTABLE.contains(&long)
            {
                keys.push((sub.map(str::to_owned), long.to_owned()));
            }
        }
    };
    add(None, cmd);
    for sub in cmd.get_subcommands() {
        add(Some(sub.get_name()), sub);
    }
    keys
}

/// The flag named `key`: the agent's own first, then a subcommand's.
fn find_flag(cmd: &Command, key: &str) -> Option<(Option<String>, Arg)> {
    if NOT_SETTABLE.contains(&key) {
        return None;
    }
    let by_long = |c: &Command| {
        c.get_arguments()
            .find(|a| a.get_long() == Some(key))
            .cloned()
    };
    if let Some(a) = by_long(cmd) {
        return Some((None, a));
    }
    cmd.get_subcommands()
        .find_map(|c| by_long(c).map(|a| (Some(c.get_name().to_owned()), a)))
}

/// Validates values with the flag's own parser, on a one-flag command without its environment
/// twin (so a bad environment value is never blamed on the file).
fn check(arg: &Arg, values: &[String]) -> Result<(), String> {
    let long = arg.get_long().unwrap_or_default().to_owned();
    let multiple = matches!(arg.get_action(), ArgAction::Append)
        || arg.get_num_args().is_some_and(|n| n.max_values() > 1);
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => {
            return match values {
                [v] if v == "true" || v == "false" => Ok(()),
                _ => Err("expects true or false".into()),
            };
        }
        _ if values.len() > 1 && !multiple => return Err("takes one value, not a list".into()),
        _ => {}
    }
    let probe = arg
        .clone()
        .env(None::<&str>)
        .default_value(None::<&str>)
        .required(false)
        .global(false)
        .value_delimiter(None::<char>);
    let mut argv: Vec<OsString> = vec!["llm-observer".into()];
    for v in values {
        argv.push(format!("--{long}={v}").into());
    }
    Command::new("llm-observer")
        .no_binary_name(false)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(probe)
        .try_get_matches_from(argv)
        .map(|_| ())
        .map_err(|e| {
            // clap's message names the flag; keep its reason, which is the useful part.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            first.trim_start_matches("error: ").to_owned()
        })
}

type Visit<'a> = dyn FnMut(&str, &DeValue<'_>, usize) -> Result<(), ConfigError> + 'a;

/// Walks tables into dotted keys (`web.config.file = …` is `"web.config.file" = …`).
fn flatten(table: &DeTable<'_>, prefix: &str, visit: &mut Visit<'_>) -> Result<(), ConfigError> {
    for (k, v) in table.iter() {
        let key = if prefix.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{prefix}.{}", k.get_ref())
        };
        match v.get_ref() {
            DeValue::Table(t) => flatten(t, &key, visit)?,
            other => visit(&key, other, k.span().start)?,
        }
    }
    Ok(())
}

/// A TOML value as command-line values: a scalar is one, an array of scalars is several.
fn scalar_values(v: &DeValue<'_>) -> Result<Vec<String>, String> {
    match v {
        DeValue::Array(items) => items.iter().map(|i| scalar(i.get_ref())).collect(),
        other => Ok(vec![scalar(other)?]),
    }
}

fn scalar(v: &DeValue<'_>) -> Result<String, String> {
    Ok(match v {
        DeValue::String(s) => s.to_string(),
        // as_str() is from_str_radix-ready (no prefix, no underscores).
        DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
            .map_err(|e| format!("bad integer: {e}"))?
            .to_string(),
        DeValue::Float(f) => f.as_str().to_owned(),
        DeValue::Boolean(b) => b.to_string(),
        DeValue::Datetime(_) => return Err("a date is not a flag value".into()),
        DeValue::Array(_) => return Err("nested lists are not flag values".into()),
        DeValue::Table(_) => return Err("a table is not a flag value".into()),
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
#[path = "config_file_tests.rs"]
mod tests;
