//! `--label-header NAME=HEADER`, `--label-body-field NAME=/json/pointer`, `--label-pod-label
//! NAME=KEY` and `--service`: the operator's own labels on the request families. Each rule is
//! checked as the flag (or its config-file key) is read, so a bad one names its flag or its line;
//! [`user_labels`] then puts them in label order, each with its cap and admission rule.

use llm_observer_decode::labels::{LabelRule, LabelRules, LabelSource};

use crate::servers::services::ServiceRule;
use crate::sinks::families::{CLIENT_LABELS, SERVER_LABELS};
use crate::sinks::metrics::UserLabel;

/// Label names the request families add after their view's own, and those Prometheus (or its
/// scrape config) sets: a rule may take none of these, nor any of the views' labels.
const TAKEN: &[&str] = &[
    "status",
    "source",
    "type",
    "tool",
    "token_type",
    "le",
    "quantile",
    "job",
    "instance",
    // Other families' labels: a user value expiring removes series by label name and value, so
    // a user label must not share a name with any family's label.
    "method",
    "error",
    "gpu",
    "uuid",
    "name",
    "family",
    "parameter_size",
    "quantization",
    "state",
    "endpoint",
    "result",
    "view",
    "kind",
    "stage",
    "reason",
    "direction",
    "role",
    "version",
    "attach_mode",
];

fn taken(name: &str) -> bool {
    TAKEN
        .iter()
        .chain(SERVER_LABELS)
        .chain(CLIENT_LABELS)
        .any(|t| *t == name)
}

/// `NAME=SOURCE` or `NAME:CAP=SOURCE` (a cap of that label's own instead of
/// `--max-label-values`; label names have no `:`, so the two cannot be confused).
fn split(rule: &str) -> Result<(&str, Option<usize>, &str), String> {
    let (name, source) = rule
        .split_once('=')
        .ok_or_else(|| format!("{rule:?}: expected NAME=SOURCE or NAME:CAP=SOURCE"))?;
    let (name, source) = (name.trim(), source.trim());
    let (name, cap) = match name.split_once(':') {
        Some((n, c)) => {
            let cap = c
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|&c| c >= 1)
                .ok_or_else(|| {
                    format!("{c:?}: a label's cap is a whole number of values, at least 1")
                })?;
            (n.trim(), Some(cap))
        }
        None => (name, None),
    };
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__");
    if !valid {
        return Err(format!(
            "{name:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
        ));
    }
    if taken(name) {
        return Err(format!("{name:?} is a label the agent already sets"));
    }
    if source.is_empty() {
        return Err(format!("{rule:?}: no source after ="));
    }
    Ok((name, cap, source))
}

/// `--label-header`'s value parser: `tenant=x-tenant`.
pub fn parse_header_rule(rule: &str) -> Result<String, String> {
    let (_, _, header) = split(rule)?;
    let token = header
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(format!("{header:?} is not an HTTP header name"));
    }
    let lower = header.to_ascii_lowercase();
    // The headers `trace --raw` redacts, and any whose name says it carries a secret.
    let credential = [
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
        "x-amz-security-token",
    ]
    .contains(&lower.as_str())
        || ["key", "token", "secret", "auth", "password", "session"]
            .iter()
            .any(|w| lower.contains(w));
    if credential {
        return Err(format!(
            "{header:?} carries credentials; it is never copied into a label"
        ));
    }
    let (name_part, _) = rule.split_once('=').unwrap_or((rule, ""));
    Ok(format!(
        "{}={}",
        name_part.trim(),
        header.to_ascii_lowercase()
    ))
}

/// `--label-pod-label`'s value parser: `app=app.kubernetes.io/name` (a Kubernetes label key:
/// an optional DNS prefix and `/`, then a name).
pub fn parse_pod_rule(rule: &str) -> Result<String, String> {
    let (_, _, key) = split(rule)?;
    let ok = key.len() <= 317
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._/".contains(&b));
    if !ok {
        return Err(format!("{key:?} is not a Kubernetes label key"));
    }
    Ok(rule.trim().to_owned())
}

/// `--label-body-field`'s value parser: `user=/user`, `user_id=/metadata/user_id`.
pub fn parse_body_rule(rule: &str) -> Result<String, String> {
    let (_, _, pointer) = split(rule)?;
    if !pointer.starts_with('/') {
        return Err(format!(
            "{pointer:?} is not a JSON pointer (RFC 6901: /field/sub-field)"
        ));
    }
    Ok(rule.trim().to_owned())
}

/// All user labels: the request-side rules the decoders read, the pod label keys attribution
/// reads, the service rules, and every name in label order (headers, body fields, pod labels,
/// then `service` when there are service rules).
#[derive(Debug, Default)]
pub struct UserLabels {
    pub request: LabelRules,
    pub pod_keys: Vec<String>,
    pub services: Vec<ServiceRule>,
    /// Every label in order, with its cap and admission rule.
    pub labels: Vec<UserLabel>,
}

/// `--service`'s value parser (checked as the flag or its config-file key is read).
pub fn parse_service_rule(rule: &str) -> Result<String, String> {
    ServiceRule::parse(rule).map(|_| rule.trim().to_owned())
}

/// [`UserLabels`] of the four flags; a name used twice is an error. `default_cap` is
/// `--max-label-values`, for rules without a cap of their own.
///
/// Admission: a value from the wire (a header, a body field) takes a slot only once a request
/// carrying it succeeded, so junk cannot crowd out real values; a pod label or a service name
/// comes from this node or the operator, and is admitted at once.
pub fn user_labels(
    headers: &[String],
    body_fields: &[String],
    pod_labels: &[String],
    services: &[String],
    default_cap: usize,
) -> Result<UserLabels, String> {
    let mut request = LabelRules::default();
    let mut labels: Vec<UserLabel> = Vec::new();
    let mut named = |name: &str, cap: Option<usize>, from_wire: bool| {
        if labels.iter().any(|l| l.name == name) {
            return Err(format!("label {name:?} is defined twice"));
        }
        labels.push(UserLabel {
            name: name.to_owned(),
            max_values: cap.unwrap_or(default_cap),
            from_wire,
        });
        Ok(())
    };
    let wire = headers
        .iter()
        .map(|r| (r, true))
        .chain(body_fields.iter().map(|r| (r, false)));
    for (rule, header) in wire {
        let (name, cap, source) = split(rule)?;
        named(name, cap, true)?;
        request.rules.push(LabelRule {
            name: name.to_owned(),
            source: if header {
                LabelSource::Header(source.to_ascii_lowercase())
            } else {
                LabelSource::BodyField(source.to_owned())
            },
        });
    }
    let mut pod_keys = Vec::new();
    for rule in pod_labels {
        let (name, cap, key) = split(rule)?;
        named(name, cap, false)?;
        pod_keys.push(key.to_owned());
    }
    let services = services
        .iter()
        .map(|r| ServiceRule::parse(r))
        .collect::<Result<Vec<_>, _>>()?;
    if !services.is_empty() {
        // Bounded by the rules themselves: every name has its slot.
        named("service", Some(services.len()), false)
            .map_err(|e| format!("{e} (--service sets it)"))?;
    }
    Ok(UserLabels {
        request,
        pod_keys,
        services,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_checked_and_ordered() {
        assert_eq!(
            parse_header_rule("tenant=X-Tenant"),
            Ok("tenant=x-tenant".into())
        );
        assert_eq!(
            parse_body_rule("user_id=/metadata/user_id"),
            Ok("user_id=/metadata/user_id".into())
        );
        for bad in [
            "tenant",
            "=x",
            "1x=y",
            "__x=y",
            "model=x-model",
            "t=",
            "t=bad header",
        ] {
            assert!(parse_header_rule(bad).is_err(), "{bad}");
        }
        for secret in [
            "Authorization",
            "x-goog-api-key",
            "X-Auth-Token",
            "x-my-secret",
        ] {
            assert!(
                parse_header_rule(&format!("k={secret}")).is_err(),
                "{secret}"
            );
        }
        assert!(
            parse_header_rule("error=x-e").is_err(),
            "another family's label"
        );
        assert!(parse_body_rule("u=user").is_err());
        let r = user_labels(
            &["tenant=x-tenant".into()],
            &["user=/user".into()],
            &[],
            &[],
            32,
        )
        .unwrap()
        .request;
        assert_eq!(
            r.rules,
            [
                LabelRule {
                    name: "tenant".into(),
                    source: LabelSource::Header("x-tenant".into())
                },
                LabelRule {
                    name: "user".into(),
                    source: LabelSource::BodyField("/user".into())
                },
            ]
        );
        assert!(user_labels(&["a=x".into()], &["a=/a".into()], &[], &[], 32).is_err());
        assert_eq!(
            parse_pod_rule("app=app.kubernetes.io/name"),
            Ok("app=app.kubernetes.io/name".into())
        );
        assert!(parse_pod_rule("app=bad key").is_err());
        let u = user_labels(
            &["t:5=x-t".into()],
            &["u=/u".into()],
            &["app=app".into()],
            &[],
            32,
        )
        .unwrap();
        let caps: Vec<(&str, usize, bool)> = u
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.max_values, l.from_wire))
            .collect();
        assert_eq!(caps, [("t", 5, true), ("u", 32, true), ("app", 32, false)]);
        assert_eq!(u.pod_keys, ["app"]);
        assert_eq!(
            u.request.rules[0].name, "t",
            "the cap is not part of the name"
        );
        assert_eq!(parse_header_rule("t:5=X-T"), Ok("t:5=x-t".into()));
        for bad in ["t:0=x", "t:x=x", "t:=x"] {
            assert!(parse_header_rule(bad).is_err(), "{bad}");
        }
        assert!(user_labels(&["t=x-t".into()], &[], &["t=app".into()], &[], 32).is_err());
        let u = user_labels(&[], &[], &[], &["api=port:8000".into()], 32).unwrap();
        assert_eq!(
            (
                u.labels[0].name.as_str(),
                u.labels[0].max_values,
                u.services.len()
            ),
            ("service", 1, 1)
        );
        assert!(
            user_labels(
                &["service=x-s".into()],
                &[],
                &[],
                &["api=port:1".into()],
                32
            )
            .is_err()
        );
    }
}
