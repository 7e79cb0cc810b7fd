//! Where registry credentials are kept, found and stored: the auth files podman and docker use,
//! and docker credential helpers. Pull and push call [`lookup`]; `login`/`logout` call
//! [`store`]/[`erase`].
//!
//! Files, read in this order (podman's, containers-auth.json(5)); the first that has credentials
//! for the registry wins:
//! 1. `--authfile FILE`, else `$REGISTRY_AUTH_FILE`: then this file only;
//! 2. `${XDG_RUNTIME_DIR}/containers/auth.json` (as root without `XDG_RUNTIME_DIR`:
//!    `/run/containers/0/auth.json`) — where `login` writes;
//! 3. `${XDG_CONFIG_HOME:-~/.config}/containers/auth.json`;
//! 4. `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
//!
//! In one file: `credHelpers[REGISTRY]` names a helper for that registry; else an `auths` entry
//! (the most specific key first: `reg/ns/repo`, then `reg/ns`, then `reg`; `https://` and a
//! trailing path such as docker's `/v1/` are ignored) with `auth` (base64 `USER:PASS`),
//! `username` + `password`, or `identitytoken`; else `credsStore` names a helper for every
//! registry. A helper is `docker-credential-NAME` on PATH, spoken to as the docker credential
//! helper protocol says: `get` reads the server URL on stdin and prints
//! `{"ServerURL","Username","Secret"}`; `store` reads that JSON; `erase` reads the URL.
use super::auth::Credentials;
use super::{Error, Result};
use crate::atomic_file::AtomicFile;
use crate::error_chain::escape;
use base64::Engine as _;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The auth file named on the command line or by `$REGISTRY_AUTH_FILE`.
fn chosen(authfile: Option<&Path>) -> Option<PathBuf> {
    authfile.map(Path::to_path_buf).or_else(|| {
        std::env::var_os("REGISTRY_AUTH_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Where `login` writes and `logout` erases: `authfile`, `$REGISTRY_AUTH_FILE`, or podman's
/// `${XDG_RUNTIME_DIR}/containers/auth.json` (`/run/containers/UID/auth.json` without it).
pub fn default_auth_file(authfile: Option<&Path>) -> PathBuf {
    if let Some(f) = chosen(authfile) {
        return f;
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("containers/auth.json"),
        None => PathBuf::from(format!(
            "/run/containers/{}/auth.json",
            rustix::process::getuid().as_raw()
        )),
    }
}

/// The files [`lookup`] reads, in order.
pub fn auth_files(authfile: Option<&Path>) -> Vec<PathBuf> {
    if let Some(f) = chosen(authfile) {
        return vec![f];
    }
    let mut out = vec![default_auth_file(None)];
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".config")));
    if let Some(c) = config {
        out.push(c.join("containers/auth.json"));
    }
    match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        Some(d) => out.push(PathBuf::from(d).join("config.json")),
        None => {
            if let Some(h) = home() {
                out.push(h.join(".docker/config.json"));
            }
        }
    }
    out
}

/// Credentials for `repository` on `registry` (`docker.io`, `host:port`), from the first auth
/// file that has some. A missing file is skipped; a malformed one is an error naming it.
pub fn lookup(
    registry: &str,
    repository: &str,
    authfile: Option<&Path>,
) -> Result<Option<Credentials>> {
    for path in auth_files(authfile) {
        let Some(file) = AuthFile::read(&path)? else {
            continue;
        };
        if let Some(c) = file.find(registry, repository)? {
            log::debug!("credentials for {registry} from {}", path.display());
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Stores `creds` for `key` (`REGISTRY` or `REGISTRY/NAMESPACE`) in `authfile` (see
/// [`default_auth_file`]): through the file's helper for that registry if it names one, else as
/// an `auths` entry. Returns where they went.
pub fn store(key: &str, creds: &Credentials, authfile: Option<&Path>) -> Result<String> {
    let path = default_auth_file(authfile);
    let mut file = AuthFile::read(&path)?.unwrap_or_default();
    let (host, _) = normalize_key(key);
    if let Some(helper) = file.helper_for(host) {
        helper_store(&helper, host, creds)?;
        return Ok(format!("docker-credential-{helper}"));
    }
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", creds.username, creds.password));
    let auths = file.object_mut("auths", &path)?;
    let want = normalize_key(key);
    auths.retain(|k, _| normalize_key(k) != want);
    auths.insert(key.to_string(), serde_json::json!({ "auth": auth }));
    file.write(&path)?;
    Ok(path.display().to_string())
}

/// Removes the credentials for `key` (every `auths` key that names the same registry and
/// namespace) from `authfile`, and from the file's helper for it. Ok(false): there were none.
pub fn erase(key: &str, authfile: Option<&Path>) -> Result<bool> {
    let path = default_auth_file(authfile);
    let Some(mut file) = AuthFile::read(&path)? else {
        return Ok(false);
    };
    let want = normalize_key(key);
    let mut found = false;
    if want.1.is_empty() {
        if let Some(helper) = file.helper_for(want.0) {
            found |= helper_erase(&helper, want.0)?;
        }
    }
    let auths = file.object_mut("auths", &path)?;
    let before = auths.len();
    auths.retain(|k, _| normalize_key(k) != want);
    if auths.len() != before {
        found = true;
        file.write(&path)?;
    }
    Ok(found)
}

/// Removes every `auths` entry of `authfile`. Ok(false): there were none.
pub fn erase_all(authfile: Option<&Path>) -> Result<bool> {
    let path = default_auth_file(authfile);
    let Some(mut file) = AuthFile::read(&path)? else {
        return Ok(false);
    };
    let auths = file.object_mut("auths", &path)?;
    let had = !auths.is_empty();
    auths.clear();
    if had {
        file.write(&path)?;
    }
    Ok(had)
}

/// `docker.io` for Docker Hub's other names.
fn canonical_host(host: &str) -> &str {
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        h => h,
    }
}

/// An `auths` key as (host, path): `https://index.docker.io/v1/` → (`docker.io`, ``),
/// `reg:5000/team/app` → (`reg:5000`, `team/app`).
fn normalize_key(key: &str) -> (&str, &str) {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key)
        .trim_end_matches('/');
    let (host, path) = k.split_once('/').unwrap_or((k, ""));
    let path = match path {
        "v1" | "v2" => "",
        p => p,
    };
    (canonical_host(host), path)
}

/// One auth file, kept as JSON so that whatever else it holds survives a `login`.
#[derive(Debug, Default)]
struct AuthFile {
    json: serde_json::Map<String, serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct Entry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

impl AuthFile {
    fn read(path: &Path) -> Result<Option<AuthFile>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Some(AuthFile::default()));
        }
        let json = serde_json::from_slice(&bytes).map_err(|e| bad(path, format!("{e}")))?;
        Ok(Some(AuthFile { json }))
    }

    fn write(&self, path: &Path) -> Result<()> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let bytes = serde_json::to_vec_pretty(&self.json).map_err(|e| bad(path, format!("{e}")))?;
        let mut tmp = AtomicFile::beside(path).map_err(io)?.with_mode(0o600);
        tmp.write_all(&bytes).map_err(io)?;
        tmp.write_all(b"\n").map_err(io)?;
        tmp.commit(path).map_err(io)
    }

    fn object_mut(
        &mut self,
        key: &str,
        path: &Path,
    ) -> Result<&mut serde_json::Map<String, serde_json::Value>> {
        self.json
            .entry(key)
            .or_insert_with(|| serde_json::Value::Object(Default::default()))
            .as_object_mut()
            .ok_or_else(|| bad(path, format!("{key:?} is not an object")))
    }

    fn str_field(&self, key: &str) -> Option<String> {
        self.json.get(key)?.as_str().map(str::to_string)
    }

    /// `credHelpers[registry]`.
    fn cred_helper(&self, registry: &str) -> Option<String> {
        let helpers = self.json.get("credHelpers")?.as_object()?;
        let (_, v) = helpers
            .iter()
            .find(|(k, _)| normalize_key(k) == (canonical_host(registry), ""))?;
        v.as_str().filter(|h| !h.is_empty()).map(str::to_string)
    }

    /// The helper for `registry`: `credHelpers[registry]`, else `credsStore`.
    fn helper_for(&self, registry: &str) -> Option<String> {
        self.cred_helper(registry)
            .or_else(|| self.str_field("credsStore"))
            .filter(|h| !h.is_empty())
    }

    fn find(&self, registry: &str, repository: &str) -> Result<Option<Credentials>> {
        let host = canonical_host(registry);
        if let Some(helper) = self.cred_helper(registry) {
            return helper_get(&helper, registry);
        }
        // auths: `host/a/b`, then `host/a`, then `host`.
        let auths = self.json.get("auths").and_then(|v| v.as_object());
        let mut path = repository;
        loop {
            let hit = auths.and_then(|a| a.iter().find(|(k, _)| normalize_key(k) == (host, path)));
            if let Some((key, value)) = hit {
                if let Some(c) = entry_credentials(key, value)? {
                    return Ok(Some(c));
                }
            }
            if path.is_empty() {
                break;
            }
            path = path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        }
        match self.str_field("credsStore").filter(|h| !h.is_empty()) {
            Some(helper) => helper_get(&helper, registry),
            None => Ok(None),
        }
    }
}

fn bad(path: &Path, why: String) -> Error {
    Error::Auth {
        url: path.display().to_string(),
        why: format!("not a usable auth file: {why}"),
    }
}

/// The credentials an `auths` entry holds; None for an empty entry (docker leaves `{}` when
/// a helper keeps the secret).
fn entry_credentials(key: &str, value: &serde_json::Value) -> Result<Option<Credentials>> {
    let fail = |why: String| Error::Auth {
        url: format!("auths.{key}"),
        why,
    };
    let e: Entry =
        serde_json::from_value(value.clone()).map_err(|e| fail(format!("bad entry: {e}")))?;
    if let Some(auth) = e.auth.filter(|a| !a.trim().is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| fail(format!("auth is not base64: {e}")))?;
        let raw = String::from_utf8(raw).map_err(|_| fail("auth is not UTF-8".into()))?;
        return Credentials::parse(&raw)
            .map(Some)
            .ok_or_else(|| fail("auth is not USER:PASS".into()));
    }
    if let (Some(u), Some(p)) = (e.username, e.password) {
        return Ok(Some(Credentials {
            username: u,
            password: p,
        }));
    }
    if let Some(t) = e.identitytoken.filter(|t| !t.is_empty()) {
        return Ok(Some(Credentials {
            username: "<token>".into(),
            password: t,
        }));
    }
    Ok(None)
}

/// The server URL a helper is asked about: what docker uses for Docker Hub, else the host.
fn server_url(registry: &str) -> &str {
    match canonical_host(registry) {
        "docker.io" => "https://index.docker.io/v1/",
        h => h,
    }
}

/// Runs `docker-credential-NAME VERB` with `input` on stdin: (success, stdout).
fn helper(name: &str, verb: &str, input: &[u8]) -> Result<(bool, String)> {
    let program = format!("docker-credential-{name}");
    let fail = |why: String| Error::Auth {
        url: program.clone(),
        why,
    };
    if name.contains('/') {
        return Err(fail("a helper name cannot contain '/'".into()));
    }
    let mut child = Command::new(&program)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run it (named by an auth file): {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| fail(format!("writing to it: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for it: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() && text.is_empty() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Ok((false, err));
    }
    Ok((out.status.success(), text))
}

/// What helpers say when they hold nothing for a server.
fn not_found(text: &str) -> bool {
    text.contains("credentials not found")
}

fn helper_get(name: &str, registry: &str) -> Result<Option<Credentials>> {
    let (ok, text) = helper(name, "get", server_url(registry).as_bytes())?;
    if !ok {
        if not_found(&text) {
            return Ok(None);
        }
        return Err(Error::Auth {
            url: format!("docker-credential-{name} get"),
            why: escape(&text).into_owned(),
        });
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Reply {
        username: String,
        secret: String,
    }
    let r: Reply = serde_json::from_str(&text).map_err(|e| Error::Auth {
        url: format!("docker-credential-{name} get"),
        why: format!("bad reply: {e}"),
    })?;
    Ok(Some(Credentials {
        username: r.username,
        password: r.secret,
    }))
}

fn helper_store(name: &str, registry: &str, creds: &Credentials) -> Result<()> {
    let input = serde_json::json!({
        "ServerURL": server_url(registry),
        "Username": creds.username,
        "Secret": creds.password,
    });
    let (ok, text) = helper(name, "store", input.to_string().as_bytes())?;
    if ok {
        Ok(())
    } else {
        Err(Error::Auth {
            url: format!("docker-credential-{name} store"),
            why: escape(&text).into_owned(),
        })
    }
}

fn helper_erase(name: &str, registry: &str) -> Result<bool> {
    let (ok, text) = helper(name, "erase", server_url(registry).as_bytes())?;
    match (ok, not_found(&text)) {
        (true, _) => Ok(true),
        (false, true) => Ok(false),
        (false, false) => Err(Error::Auth {
            url: format!("docker-credential-{name} erase"),
            why: escape(&text).into_owned(),
        }),
    }
}

/// Keys of an auth file's `auths`, normalized (for `logout` messages and tests).
pub fn logged_in(authfile: Option<&Path>) -> Result<Vec<String>> {
    let path = default_auth_file(authfile);
    let Some(file) = AuthFile::read(&path)? else {
        return Ok(Vec::new());
    };
    let keys: BTreeMap<String, ()> = file
        .json
        .get("auths")
        .and_then(|v| v.as_object())
        .map(|a| a.keys().map(|k| (k.clone(), ())).collect())
        .unwrap_or_default();
    Ok(keys.into_keys().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str) -> AuthFile {
        AuthFile {
            json: serde_json::from_str(json).unwrap(),
        }
    }

    #[test]
    fn auths_entries_match_the_most_specific_key_first() {
        let f = file(
            r#"{"auths": {
                "https://index.docker.io/v1/": {"auth": "dTpw"},
                "localhost:5000": {"username": "a", "password": "b"},
                "localhost:5000/team": {"auth": "dGVhbTpwdw=="},
                "ghcr.io": {}
            }}"#,
        );
        let get = |r: &str, repo: &str| f.find(r, repo).unwrap().map(|c| c.username);
        assert_eq!(get("docker.io", "library/alpine").as_deref(), Some("u"));
        assert_eq!(get("localhost:5000", "other/x").as_deref(), Some("a"));
        assert_eq!(get("localhost:5000", "team/app").as_deref(), Some("team"));
        assert_eq!(get("ghcr.io", "x"), None, "an empty entry holds nothing");
        assert_eq!(get("quay.io", "x"), None);
        assert!(file(r#"{"auths": {"x": {"auth": "%%"}}}"#)
            .find("x", "y")
            .is_err());
    }

    #[test]
    fn keys_are_normalized() {
        assert_eq!(
            normalize_key("https://index.docker.io/v1/"),
            ("docker.io", "")
        );
        assert_eq!(
            normalize_key("http://reg:5000/team/app"),
            ("reg:5000", "team/app")
        );
        assert_eq!(normalize_key("registry-1.docker.io"), ("docker.io", ""));
    }

    #[test]
    fn login_keeps_what_else_the_file_holds_and_logout_removes_only_its_registry() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sub/auth.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            r#"{"auths": {"other:1": {"auth": "eDp5"}}, "HttpHeaders": {"X": "y"}}"#,
        )
        .unwrap();
        let c = Credentials::parse("alice:s3:cret").unwrap();
        store("127.0.0.1:5000", &c, Some(&path)).unwrap();
        let got = lookup("127.0.0.1:5000", "app", Some(&path)).unwrap();
        assert_eq!(got, Some(c));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["HttpHeaders"]["X"], "y");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(erase("127.0.0.1:5000", Some(&path)).unwrap());
        assert!(!erase("127.0.0.1:5000", Some(&path)).unwrap());
        assert_eq!(logged_in(Some(&path)).unwrap(), ["other:1"]);
        assert!(erase_all(Some(&path)).unwrap());
        assert!(logged_in(Some(&path)).unwrap().is_empty());
    }
}
