//! `--service NAME=port:N|process:NAME|container:NAME`: the operator's names for the services on
//! the node, as a `service` label on the request families. The first rule that matches names an
//! exchange; none matching is `""`.
//!
//! Server view: the serving side is the observed process, so a rule matches its local port, its
//! `process` label or its `container` label. Client view: the service is the one called, known
//! here by the port it was called on (the peer's), so only port rules match.

use std::net::SocketAddr;

use llm_observer_decode::Role;

/// What a rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    Port(u16),
    Process(String),
    Container(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRule {
    pub name: String,
    pub matches: Match,
}

/// Longest service name.
const MAX_NAME: usize = 64;

impl ServiceRule {
    /// `--service`'s value: `chat-api=port:8000`, `ollama=process:ollama`, `llm=container:server`.
    pub fn parse(rule: &str) -> Result<ServiceRule, String> {
        let (name, m) = rule.split_once('=').ok_or_else(|| {
            format!("{rule:?}: expected NAME=port:N, NAME=process:P or NAME=container:C")
        })?;
        let name = name.trim();
        if name.is_empty()
            || name.len() > MAX_NAME
            || !name.bytes().all(|b| (0x21..0x7f).contains(&b))
        {
            return Err(format!(
                "{name:?}: a service name is 1 to {MAX_NAME} printable ASCII characters"
            ));
        }
        let (kind, value) = m
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("{m:?}: expected port:N, process:P or container:C"))?;
        let matches = match (kind, value) {
            ("port", v) => Match::Port(
                v.parse()
                    .map_err(|_| format!("{v:?} is not a port number"))?,
            ),
            ("process", v) if !v.is_empty() => Match::Process(v.to_owned()),
            ("container", v) if !v.is_empty() => Match::Container(v.to_owned()),
            _ => return Err(format!("{m:?}: expected port:N, process:P or container:C")),
        };
        Ok(ServiceRule {
            name: name.to_owned(),
            matches,
        })
    }
}

/// The `service` label of one exchange.
pub fn service<'a>(
    rules: &'a [ServiceRule],
    role: Role,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    process: &str,
    container: &str,
) -> &'a str {
    let port = match role {
        Role::Server => local.map(|a| a.port()),
        Role::Client => peer.map(|a| a.port()),
    };
    rules
        .iter()
        .find(|r| match &r.matches {
            Match::Port(p) => port == Some(*p),
            Match::Process(p) => role == Role::Server && p == process,
            Match::Container(c) => role == Role::Server && c == container,
        })
        .map_or("", |r| r.name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_rule_names_the_service() {
        let rules: Vec<ServiceRule> = [
            "chat-api=port:8000",
            "ollama=process:ollama",
            "llm=container:server",
        ]
        .iter()
        .map(|r| ServiceRule::parse(r).unwrap())
        .collect();
        let at = |p: u16| Some(SocketAddr::from(([127, 0, 0, 1], p)));
        // Server view: its own port, process or container.
        assert_eq!(
            service(&rules, Role::Server, at(8000), at(5000), "vllm", ""),
            "chat-api"
        );
        assert_eq!(
            service(&rules, Role::Server, at(11434), None, "ollama", "server"),
            "ollama"
        );
        assert_eq!(
            service(&rules, Role::Server, at(1), None, "x", "server"),
            "llm"
        );
        assert_eq!(service(&rules, Role::Server, at(1), None, "x", ""), "");
        // Client view: the port it called; its own process is not the service.
        assert_eq!(
            service(&rules, Role::Client, at(5000), at(8000), "curl", ""),
            "chat-api"
        );
        assert_eq!(
            service(&rules, Role::Client, at(5000), at(9), "ollama", "server"),
            ""
        );
        for bad in [
            "x",
            "=port:1",
            "a=port:x",
            "a=port:70000",
            "a=pod:x",
            "a=process:",
            "a b=port:1",
        ] {
            assert!(ServiceRule::parse(bad).is_err(), "{bad}");
        }
    }
}
