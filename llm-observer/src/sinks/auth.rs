//! HTTP basic authentication against the web config's bcrypt hashes. bcrypt costs tens of
//! milliseconds per check by design, so (like the exporter-toolkit) a verified password is cached
//! and later scrapes pay one SHA-256; checks that miss the cache run one at a time on the blocking
//! pool, so a flood of wrong passwords costs at most one core. Failures are never cached (the cache
//! stays bounded by the number of users). No credential is ever logged.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use base64::Engine as _;

/// The users and their bcrypt hashes, and the passwords already verified.
#[derive(Debug)]
pub struct BasicAuth {
    users: Arc<BTreeMap<String, String>>,
    /// User → SHA-256 of the password that verified against the user's current hash.
    verified: Mutex<HashMap<String, [u8; 32]>>,
    /// Serializes the bcrypt work.
    bcrypt_turn: tokio::sync::Mutex<()>,
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// User and password of an `Authorization: Basic …` header value.
pub fn parse_basic(header: &[u8]) -> Option<(String, Vec<u8>)> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, rest) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

impl BasicAuth {
    /// `None` when no users are configured (no authentication).
    pub fn new(users: BTreeMap<String, String>) -> Option<BasicAuth> {
        (!users.is_empty()).then(|| BasicAuth {
            users: Arc::new(users),
            verified: Mutex::new(HashMap::new()),
            bcrypt_turn: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether the `Authorization` header value (if any) carries a configured user's password.
    pub async fn check(&self, header: Option<&[u8]>) -> bool {
        let Some((user, password)) = header.and_then(parse_basic) else {
            return false;
        };
        let sum = sha256(&password);
        let cached = self
            .verified
            .lock()
            .map(|v| v.get(&user).is_some_and(|d| *d == sum))
            .unwrap_or(false);
        if cached {
            return true;
        }
        let known = self.users.contains_key(&user);
        // An unknown user still pays one bcrypt (against some configured hash, result discarded),
        // so response times do not tell which user names exist.
        let Some(hash) = self
            .users
            .get(&user)
            .or_else(|| self.users.values().next())
            .cloned()
        else {
            return false;
        };
        let _turn = self.bcrypt_turn.lock().await;
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(&password, &hash))
            .await
            .is_ok_and(|r| r.unwrap_or(false));
        let ok = ok && known;
        if ok && let Ok(mut v) = self.verified.lock() {
            v.insert(user, sum);
        }
        ok
    }

    /// Number of users whose password is cached (for tests).
    pub fn cached(&self) -> usize {
        self.verified.lock().map(|v| v.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pass: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
        .into_bytes()
    }

    #[test]
    fn parses_basic_headers() {
        assert_eq!(
            parse_basic(&basic("alice", "p:w")),
            Some(("alice".to_owned(), b"p:w".to_vec()))
        );
        assert_eq!(
            parse_basic(b"basic YWxpY2U6"),
            Some(("alice".into(), vec![]))
        );
        assert_eq!(parse_basic(b"Bearer abc"), None);
        assert_eq!(parse_basic(b"Basic !!!"), None);
        assert_eq!(parse_basic(b"Basic YWxpY2U="), None); // no colon
        assert_eq!(parse_basic(b"\xff\xfe"), None);
    }

    #[tokio::test]
    async fn verifies_and_caches_only_successes() {
        // Cost 4: the lowest bcrypt allows, so the test is fast.
        let hash = bcrypt::hash("right", 4).expect("hash");
        let auth = BasicAuth::new(BTreeMap::from([("alice".to_owned(), hash)])).expect("users");
        assert!(!auth.check(None).await);
        assert!(!auth.check(Some(&basic("alice", "wrong"))).await);
        assert!(!auth.check(Some(&basic("bob", "right"))).await);
        assert_eq!(auth.cached(), 0);
        assert!(auth.check(Some(&basic("alice", "right"))).await);
        assert_eq!(auth.cached(), 1);
        assert!(auth.check(Some(&basic("alice", "right"))).await);
        // A wrong password after a cached right one is still refused.
        assert!(!auth.check(Some(&basic("alice", "wrong"))).await);
        assert_eq!(auth.cached(), 1);
        assert!(BasicAuth::new(BTreeMap::new()).is_none());
    }

    #[tokio::test]
    async fn a_cached_password_skips_bcrypt() {
        // Cost 10, the usual htpasswd choice: tens of milliseconds per bcrypt check.
        let hash = bcrypt::hash("right", 10).expect("hash");
        let auth = BasicAuth::new(BTreeMap::from([("alice".to_owned(), hash)])).expect("users");
        let header = basic("alice", "right");
        let t = std::time::Instant::now();
        assert!(auth.check(Some(&header)).await);
        let first = t.elapsed();
        let t = std::time::Instant::now();
        for _ in 0..100 {
            assert!(auth.check(Some(&header)).await);
        }
        let hundred_cached = t.elapsed();
        println!("one bcrypt check {first:?}, 100 cached checks {hundred_cached:?}");
        // Measured in one run as a ratio: 100 cached checks cost less than one bcrypt check.
        assert!(
            hundred_cached < first,
            "100 cached checks took {hundred_cached:?}, one bcrypt check {first:?}"
        );
    }
}
