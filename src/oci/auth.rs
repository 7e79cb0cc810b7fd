//! Registry authentication: anonymous, Basic, and the Bearer token flow.
//!
//! A [`Session`] belongs to one registry host. It answers a `401` by reading the
//! `WWW-Authenticate` challenge: `Basic` means send the credentials; `Bearer realm=…,service=…,
//! scope=…` means fetch a token from the realm (with the credentials, if any) and send it. Tokens
//! are cached per scope until shortly before they expire. The registry client attaches the header
//! only to requests for this host, so nothing follows a redirect to another host.
use super::{Error, Result};
use crate::error_chain::escape;
use base64::Engine as _;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A user name and password (or identity token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

impl Credentials {
    /// Parses `USER:PASS` (the password may contain `:`).
    pub fn parse(s: &str) -> Option<Credentials> {
        let (u, p) = s.split_once(':')?;
        (!u.is_empty()).then(|| Credentials {
            username: u.to_string(),
            password: p.to_string(),
        })
    }

    fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `basic` or `bearer` (lowercased).
    pub scheme: String,
    /// Parameters, names lowercased.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// Parses `Scheme k="v", k2=v2` (one challenge; quoted values may contain commas).
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = match header.find(char::is_whitespace) {
            Some(i) => (&header[..i], header[i..].trim_start()),
            None => (header, ""),
        };
        if scheme.is_empty() {
            return None;
        }
        let mut params = Vec::new();
        let mut chars = rest.chars().peekable();
        loop {
            while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
                chars.next();
            }
            let mut key = String::new();
            while let Some(&c) = chars.peek() {
                if c == '=' {
                    break;
                }
                key.push(c);
                chars.next();
            }
            if key.is_empty() || chars.next() != Some('=') {
                break;
            }
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => value.extend(chars.next()),
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
            params.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        Some(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Fetches a token: `(realm, query, Authorization header) -> JSON body`.
pub type TokenFetcher<'a> = dyn Fn(&str, &[(&str, &str)], Option<&str>) -> Result<Vec<u8>> + 'a;

/// Longest token lifetime believed (a day), whatever `expires_in` says.
const MAX_TOKEN_LIFE: u64 = 24 * 60 * 60;

/// `now + secs`, or `now` if that is beyond what an `Instant` holds (the token then counts as
/// expired at once, which costs one more token request, never a panic).
fn token_expiry(now: Instant, secs: u64) -> Instant {
    now.checked_add(Duration::from_secs(secs)).unwrap_or(now)
}

struct Token {
    header: String,
    expires: Instant,
}

/// Authentication state for one registry host.
pub struct Session {
    creds: Option<Credentials>,
    /// Set once the registry asked for Basic auth.
    basic: Mutex<bool>,
    /// Bearer tokens by scope.
    tokens: Mutex<HashMap<String, Token>>,
}

impl Session {
    pub fn new(creds: Option<Credentials>) -> Session {
        Session {
            creds,
            basic: Mutex::new(false),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The Authorization header to send for `scope`, if one is known and still valid.
    pub fn header(&self, scope: &str) -> Option<String> {
        if let Ok(tokens) = self.tokens.lock() {
            if let Some(t) = tokens.get(scope) {
                if Instant::now() < t.expires {
                    return Some(t.header.clone());
                }
            }
        }
        let basic = self.basic.lock().map(|b| *b).unwrap_or(false);
        match (&self.creds, basic) {
            (Some(c), true) => Some(c.basic_header()),
            _ => None,
        }
    }

    /// Answers a challenge from `url`. `fetch_token` performs the GET of the token URL with the
    /// given Authorization header and returns the JSON body.
    pub fn answer(
        &self,
        url: &str,
        scope: &str,
        challenge: &Challenge,
        fetch_token: &TokenFetcher,
    ) -> Result<()> {
        let fail = |why: String| Error::Auth {
            url: url.to_string(),
            why,
        };
        match challenge.scheme.as_str() {
            "basic" => {
                if self.creds.is_none() {
                    return Err(fail(
                        "the registry wants a user name and password: `bfcfs login REGISTRY` stores them, or give --creds USER[:PASS] or --authfile FILE".into(),
                    ));
                }
                let mut b = self
                    .basic
                    .lock()
                    .map_err(|_| fail("lock poisoned".into()))?;
                if *b {
                    return Err(fail("credentials rejected".into()));
                }
                *b = true;
                Ok(())
            }
            "bearer" => {
                let realm = challenge
                    .param("realm")
                    .ok_or_else(|| fail("Bearer challenge without realm".into()))?;
                let mut query: Vec<(&str, &str)> = Vec::new();
                if let Some(service) = challenge.param("service") {
                    query.push(("service", service));
                }
                // One `scope` parameter per scope: ours, and those the registry's challenge
                // lists (separated by spaces; a cross-repository mount needs two), so one token
                // serves both. The token is cached under our scope.
                for s in scope.split_ascii_whitespace().chain(
                    challenge
                        .param("scope")
                        .unwrap_or("")
                        .split_ascii_whitespace(),
                ) {
                    if !query.contains(&("scope", s)) {
                        query.push(("scope", s));
                    }
                }
                let basic = self.creds.as_ref().map(|c| c.basic_header());
                let body = fetch_token(realm, &query, basic.as_deref())?;
                #[derive(serde::Deserialize)]
                struct TokenResponse {
                    token: Option<String>,
                    access_token: Option<String>,
                    expires_in: Option<u64>,
                }
                let t: TokenResponse = serde_json::from_slice(&body)
                    .map_err(|e| fail(format!("token response from {}: {e}", escape(realm))))?;
                let token = t
                    .token
                    .or(t.access_token)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        fail(format!("no token in the response from {}", escape(realm)))
                    })?;
                // The spec's default lifetime is 60 s; renew 10 s early. The number comes from
                // the token server: cap it at a day so no arithmetic on it can overflow.
                let life = t.expires_in.unwrap_or(60).clamp(20, MAX_TOKEN_LIFE) - 10;
                let mut tokens = self
                    .tokens
                    .lock()
                    .map_err(|_| fail("lock poisoned".into()))?;
                tokens.insert(
                    scope.to_string(),
                    Token {
                        header: format!("Bearer {token}"),
                        expires: token_expiry(Instant::now(), life),
                    },
                );
                Ok(())
            }
            other => Err(fail(format!("unsupported auth scheme {other:?}"))),
        }
    }

    /// Forgets a token that the registry refused.
    pub fn drop_token(&self, scope: &str) {
        if let Ok(mut t) = self.tokens.lock() {
            t.remove(scope);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c.param("service"), Some("registry.docker.io"));
        assert_eq!(
            c.param("scope"),
            Some("repository:library/alpine:pull,push")
        );
        let c = Challenge::parse(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(
            (c.scheme.as_str(), c.param("realm")),
            ("basic", Some("Registry Realm"))
        );
        assert!(Challenge::parse("").is_none());
    }

    #[test]
    fn bearer_tokens_are_cached_per_scope() {
        let s = Session::new(None);
        let c = Challenge::parse(r#"Bearer realm="http://127.0.0.1:1/t",service="reg""#).unwrap();
        let calls = std::cell::Cell::new(0);
        let fetch = |realm: &str, q: &[(&str, &str)], auth: Option<&str>| {
            calls.set(calls.get() + 1);
            assert_eq!(realm, "http://127.0.0.1:1/t");
            assert_eq!(q, &[("service", "reg"), ("scope", "repository:a:pull")]);
            assert!(auth.is_none());
            Ok(br#"{"token":"T","expires_in":300}"#.to_vec())
        };
        s.answer("u", "repository:a:pull", &c, &fetch).unwrap();
        assert_eq!(s.header("repository:a:pull").as_deref(), Some("Bearer T"));
        assert_eq!(s.header("repository:b:pull"), None);
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn huge_or_tiny_expires_in_does_not_panic() {
        let c = Challenge::parse(r#"Bearer realm="http://127.0.0.1:1/t""#).unwrap();
        for body in [
            br#"{"token":"T","expires_in":18446744073709551615}"#.as_slice(),
            br#"{"token":"T","expires_in":0}"#.as_slice(),
            br#"{"token":"T"}"#.as_slice(),
        ] {
            let s = Session::new(None);
            let fetch = |_: &str, _: &[(&str, &str)], _: Option<&str>| Ok(body.to_vec());
            s.answer("u", "repository:a:pull", &c, &fetch).unwrap();
            assert_eq!(s.header("repository:a:pull").as_deref(), Some("Bearer T"));
        }
        // A negative or non-integer lifetime is a bad token response, not a panic.
        let s = Session::new(None);
        let fetch = |_: &str, _: &[(&str, &str)], _: Option<&str>| {
            Ok(br#"{"token":"T","expires_in":-1}"#.to_vec())
        };
        assert!(s.answer("u", "repository:a:pull", &c, &fetch).is_err());
    }

    #[test]
    fn expiry_saturates() {
        let now = Instant::now();
        assert_eq!(token_expiry(now, u64::MAX), now);
        assert!(token_expiry(now, 5) > now);
    }
}
