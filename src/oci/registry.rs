//! OCI Distribution API client over ureq: tag → (index → platform) → manifest → config, and
//! layer blobs streamed into a [`BlobSink`].
//!
//! Policy, in one place:
//! - TLS is verified (rustls with the webpki roots). Plain HTTP is used only for loopback hosts
//!   and hosts named with `--insecure-registry`, after HTTPS failed to connect.
//! - Redirects are followed by hand (at most [`MAX_REDIRECTS`]) so that the Authorization header
//!   is attached only to URLs on the registry's own host; a redirect to plain HTTP on another
//!   host is refused.
//! - Manifests and configs are read with a cap ([`MAX_DOCUMENT`]) and checked against their digest
//!   before they are parsed. Blobs are never longer than their descriptor says.
//! - Transient failures (connection errors, 5xx, 429) are retried with exponential backoff; an
//!   interrupted blob resumes with `Range: bytes=N-` when the server answers 206.
use super::auth::{Challenge, Credentials, Session};
use super::{
    check_image, decode_document, media, BlobSink, Document, Error, Fetch, ImageRef, PlatformSpec,
    Resolved, Result, MAX_DOCUMENT,
};
use crate::digest::sha256_digest;
use crate::error_chain::chain;
use oci_spec::image::{Descriptor, Digest};
use std::io::Read;
use std::net::IpAddr;
use std::time::Duration;
use ureq::http::{Response, Uri};
use ureq::Body;

/// Redirect hops followed per request.
pub const MAX_REDIRECTS: usize = 5;

/// How to reach a registry.
#[derive(Debug, Clone)]
pub struct Options {
    /// Hosts (`host` or `host:port`) that may be spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// Credentials; `None` means anonymous unless `~/.docker/config.json` has some.
    pub creds: Option<Credentials>,
    /// Retries of a transient failure before giving up.
    pub retries: u32,
    /// First backoff delay; doubled per retry.
    pub backoff: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            insecure: Vec::new(),
            creds: None,
            retries: 4,
            backoff: Duration::from_millis(200),
        }
    }
}

/// A connection to one repository of one registry.
pub struct Registry {
    agent: ureq::Agent,
    /// `host[:port]` of the registry.
    authority: String,
    /// `https://host[:port]` or `http://…`.
    base: String,
    repository: String,
    scope: String,
    session: Session,
    insecure: Vec<String>,
    retries: u32,
    backoff: Duration,
}

/// True for `localhost`, 127.0.0.0/8 and ::1 (with or without a port).
pub fn is_loopback(authority: &str) -> bool {
    let host = host_part(authority);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// `host` of `host:port`, `[v6]:port` or `host`.
fn host_part(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    }
}

fn transient(e: &Error) -> bool {
    match e {
        Error::Http { source, .. } => matches!(
            source,
            ureq::Error::Io(_)
                | ureq::Error::Timeout(_)
                | ureq::Error::ConnectionFailed
                | ureq::Error::HostNotFound
                | ureq::Error::Protocol(_)
                | ureq::Error::BodyStalled
        ),
        Error::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
        _ => false,
    }
}

impl Registry {
    /// Connects to the registry of `image`: decides HTTPS or (loopback/insecure only) HTTP and
    /// loads credentials from `opts` or the Docker config.
    pub fn connect(image: &ImageRef, opts: &Options) -> Result<Registry> {
        let authority = image.api_host().to_string();
        let creds = match &opts.creds {
            Some(c) => Some(c.clone()),
            None => Credentials::from_docker_config(image.registry())?,
        };
        let config = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_recv_body(None)
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("bfcfs/", env!("CARGO_PKG_VERSION")))
            .accept_encoding("identity")
            .build();
        let mut reg = Registry {
            agent: config.into(),
            base: format!("https://{authority}"),
            scope: format!("repository:{}:pull", image.repository()),
            repository: image.repository().to_string(),
            authority,
            session: Session::new(creds),
            insecure: opts.insecure.clone(),
            retries: opts.retries,
            backoff: opts.backoff,
        };
        if reg.plain_http_allowed(&reg.authority) {
            // Probe HTTPS first; fall back to HTTP only if TLS could not be spoken at all.
            let probe = format!("{}/v2/", reg.base);
            if let Err(e) = reg.agent.get(&probe).call() {
                log::debug!("{probe}: {e}; using plain HTTP");
                reg.base = format!("http://{}", reg.authority);
            }
        }
        Ok(reg)
    }

    fn plain_http_allowed(&self, authority: &str) -> bool {
        is_loopback(authority)
            || self
                .insecure
                .iter()
                .any(|h| h == authority || h == host_part(authority))
    }

    /// The base URL in use (`http://…` or `https://…`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn blob_url(&self, digest: &Digest) -> String {
        format!("{}/v2/{}/blobs/{digest}", self.base, self.repository)
    }

    /// URL of a manifest by tag or digest.
    fn manifest_url(&self, reference: impl std::fmt::Display) -> String {
        format!("{}/v2/{}/manifests/{reference}", self.base, self.repository)
    }

    /// Whether `url` is on the registry's own origin (so it may carry credentials).
    fn same_origin(&self, url: &str) -> bool {
        url.strip_prefix(&self.base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Runs `f` until it succeeds, fails for good, or runs out of retries.
    fn retrying<T>(&self, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        let mut delay = self.backoff;
        let mut attempt = 0;
        loop {
            match f() {
                Err(e) if transient(&e) && attempt < self.retries => {
                    log::warn!("{}; retrying in {delay:?}", chain(&e));
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(10));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// One GET, answering auth challenges and following redirects.
    fn get(
        &self,
        url: &str,
        accept: Option<&str>,
        range_from: Option<u64>,
    ) -> Result<(String, Response<Body>)> {
        let mut url = url.to_string();
        let mut answered = false;
        let mut hops = 0;
        loop {
            let own = self.same_origin(&url);
            let mut req = self.agent.get(&url);
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            if let Some(from) = range_from {
                req = req.header("Range", format!("bytes={from}-"));
            }
            if own {
                if let Some(h) = self.session.header(&self.scope) {
                    req = req.header("Authorization", h);
                }
            }
            let resp = req.call().map_err(|source| Error::Http {
                url: url.clone(),
                source,
            })?;
            let status = resp.status().as_u16();
            if status == 401 && own && !answered {
                answered = true;
                let challenge = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .and_then(Challenge::parse)
                    .ok_or_else(|| Error::Auth {
                        url: url.clone(),
                        why: "401 without a usable WWW-Authenticate header".into(),
                    })?;
                self.session.drop_token(&self.scope);
                self.session
                    .answer(&url, &self.scope, &challenge, &|realm, query, auth| {
                        self.fetch_token(realm, query, auth)
                    })?;
                continue;
            }
            if status == 401 && own {
                return Err(Error::Auth {
                    url,
                    why: "credentials or token rejected (HTTP 401)".into(),
                });
            }
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                hops += 1;
                if hops > MAX_REDIRECTS {
                    return Err(Error::Status {
                        url,
                        status,
                        detail: format!("more than {MAX_REDIRECTS} redirects"),
                    });
                }
                let location = resp
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| Error::Status {
                        url: url.clone(),
                        status,
                        detail: "redirect without Location".into(),
                    })?;
                url = self.redirect_target(&url, location)?;
                continue;
            }
            return Ok((url, resp));
        }
    }

    /// Resolves a Location header against `from` and checks its scheme.
    fn redirect_target(&self, from: &str, location: &str) -> Result<String> {
        let next = if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            let uri: Uri = from.parse().map_err(|_| Error::Status {
                url: from.into(),
                status: 302,
                detail: "bad URL".into(),
            })?;
            let scheme = uri.scheme_str().unwrap_or("https");
            let auth = uri.authority().map(|a| a.as_str()).unwrap_or("");
            if location.starts_with('/') {
                format!("{scheme}://{auth}{location}")
            } else {
                return Err(Error::Status {
                    url: from.into(),
                    status: 302,
                    detail: format!("unsupported relative redirect {location:?}"),
                });
            }
        };
        let uri: Uri = next.parse().map_err(|_| Error::Status {
            url: from.into(),
            status: 302,
            detail: format!("bad redirect target {next:?}"),
        })?;
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
        if uri.scheme_str() == Some("http") && !self.plain_http_allowed(authority) {
            return Err(Error::Insecure {
                host: authority.to_string(),
                url: next,
            });
        }
        Ok(next)
    }

    fn fetch_token(
        &self,
        realm: &str,
        query: &[(&str, &str)],
        auth: Option<&str>,
    ) -> Result<Vec<u8>> {
        let uri: Uri = realm.parse().map_err(|_| Error::Auth {
            url: realm.into(),
            why: "token realm is not a URL".into(),
        })?;
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
        if uri.scheme_str() != Some("https") && !self.plain_http_allowed(authority) {
            return Err(Error::Insecure {
                host: authority.to_string(),
                url: realm.into(),
            });
        }
        let mut req = self.agent.get(realm);
        for (k, v) in query {
            req = req.query(k, v);
        }
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let mut resp = req.call().map_err(|source| Error::Http {
            url: realm.into(),
            source,
        })?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(Error::Auth {
                url: realm.into(),
                why: format!("token endpoint answered HTTP {status}"),
            });
        }
        read_capped(realm, "token response", resp.body_mut())
    }

    /// GETs a small document (manifest, index, config), capped and checked against `expected`.
    fn fetch_document(
        &self,
        url: &str,
        accept: Option<&str>,
        what: &'static str,
        expected: Option<&Digest>,
    ) -> Result<(Vec<u8>, Option<String>, String)> {
        self.retrying(|| {
            let (final_url, mut resp) = self.get(url, accept, None)?;
            check_status(&final_url, &mut resp, &[200])?;
            if let Some(len) = resp.body().content_length() {
                if len > MAX_DOCUMENT {
                    return Err(Error::TooLarge {
                        url: url.into(),
                        what,
                        limit: MAX_DOCUMENT,
                    });
                }
            }
            let ct = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let bytes = read_capped(url, what, resp.body_mut())?;
            let found = sha256_digest(&bytes);
            if let Some(exp) = expected {
                if found != exp.as_ref() {
                    return Err(Error::DigestMismatch {
                        url: url.into(),
                        expected: exp.to_string(),
                        found,
                    });
                }
            }
            Ok((bytes, ct, found))
        })
    }

    /// Resolves `image` to one platform manifest and its config. `cached` may supply the config
    /// from a local store (it is checked against the digest all the same), so that pulling an
    /// image already present costs only the manifest requests.
    pub fn resolve(
        &self,
        image: &ImageRef,
        platform: &PlatformSpec,
        cached: &dyn Fn(&Digest) -> Option<Vec<u8>>,
    ) -> Result<Resolved> {
        let url = self.manifest_url(image.manifest_reference());
        let (bytes, ct, digest) = self.fetch_document(
            &url,
            Some(media::ACCEPT_MANIFESTS),
            "manifest",
            image.digest(),
        )?;
        let (manifest, manifest_bytes, digest) = match decode_document(&url, ct.as_deref(), &bytes)?
        {
            Document::Manifest(m) => (*m, bytes, digest),
            Document::Index(index) => {
                let desc = platform.choose(&image.to_string(), &index)?;
                let url = self.manifest_url(desc.digest());
                let (bytes, ct, digest) = self.fetch_document(
                    &url,
                    Some(media::ACCEPT_MANIFESTS),
                    "manifest",
                    Some(desc.digest()),
                )?;
                match decode_document(&url, ct.as_deref(), &bytes)? {
                    Document::Manifest(m) => (*m, bytes, digest),
                    Document::Index(_) => {
                        return Err(Error::BadDocument {
                            url,
                            what: "manifest",
                            why: "an index entry points to another index".into(),
                        })
                    }
                }
            }
        };
        let cfg = manifest.config();
        if cfg.digest().algorithm().as_ref() != "sha256" || cfg.size() > MAX_DOCUMENT {
            return Err(Error::BadDocument {
                url,
                what: "manifest",
                why: format!(
                    "config {} ({} bytes) is not a sha256 blob under the cap",
                    cfg.digest(),
                    cfg.size()
                ),
            });
        }
        let config_url = self.blob_url(cfg.digest());
        let config_bytes = match cached(cfg.digest()) {
            Some(b) if sha256_digest(&b) == cfg.digest().as_ref() => b,
            _ => {
                self.fetch_document(&config_url, None, "image config", Some(cfg.digest()))?
                    .0
            }
        };
        let config = check_image(&url, &manifest, &config_bytes)?;
        let manifest_digest = digest.parse().map_err(|e| Error::BadDocument {
            url: url.clone(),
            what: "manifest",
            why: format!("{e}"),
        })?;
        Ok(Resolved {
            manifest_digest,
            manifest_bytes,
            manifest,
            config_bytes,
            config,
        })
    }
}

impl Fetch for Registry {
    /// Streams the blob `desc` into `sink`, resuming after interruptions. `progress` is told the
    /// sink offset after each chunk. The caller checks the digest when it commits the sink.
    fn fetch_blob(
        &self,
        desc: &Descriptor,
        sink: &mut dyn BlobSink,
        progress: &dyn Fn(u64),
    ) -> Result<()> {
        let url = self.blob_url(desc.digest());
        let expected = desc.size();
        let digest = desc.digest().to_string();
        let sink_err = |source| Error::Sink {
            url: url.clone(),
            digest: digest.clone(),
            source,
        };
        let mut delay = self.backoff;
        let mut failures = 0;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let from = sink.offset();
            if from == expected && expected > 0 {
                return Ok(());
            }
            let attempt: Result<()> = (|| {
                let (final_url, mut resp) = self.get(&url, None, (from > 0).then_some(from))?;
                let status = check_status(&final_url, &mut resp, &[200, 206])?;
                if status == 206 {
                    let range = resp
                        .headers()
                        .get("content-range")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if !range.starts_with(&format!("bytes {from}-")) {
                        sink.restart().map_err(sink_err)?;
                        return Err(Error::Status {
                            url: final_url,
                            status,
                            detail: format!("unexpected Content-Range {range:?}"),
                        });
                    }
                    log::info!("{url}: resuming at byte {from}");
                } else if from > 0 {
                    log::info!("{url}: server ignored Range; starting over");
                    sink.restart().map_err(sink_err)?;
                }
                let mut reader = resp.into_body().into_reader();
                loop {
                    let n = match reader.read(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            return Err(Error::Http {
                                url: final_url,
                                source: ureq::Error::Io(e),
                            })
                        }
                    };
                    if n == 0 {
                        break;
                    }
                    let have = sink.offset();
                    let found = have.saturating_add(n as u64);
                    if found > expected {
                        return Err(Error::SizeMismatch {
                            url: final_url,
                            digest: digest.clone(),
                            expected,
                            found,
                        });
                    }
                    sink.write_all(&buf[..n]).map_err(sink_err)?;
                    progress(sink.offset());
                }
                if sink.offset() < expected {
                    return Err(Error::Http {
                        url: final_url,
                        source: ureq::Error::Io(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("body ended at byte {} of {expected}", sink.offset()),
                        )),
                    });
                }
                Ok(())
            })();
            match attempt {
                Ok(()) => return Ok(()),
                Err(e) if transient(&e) && failures < self.retries => {
                    // A resumed transfer that made progress does not count against the budget.
                    if sink.offset() <= from {
                        failures += 1;
                    }
                    log::warn!("{}; retrying in {delay:?}", chain(&e));
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Checks the status against `ok`; otherwise reads up to 1 KiB of the body for the message.
fn check_status(url: &str, resp: &mut Response<Body>, ok: &[u16]) -> Result<u16> {
    let status = resp.status().as_u16();
    if ok.contains(&status) {
        return Ok(status);
    }
    let detail = resp
        .body_mut()
        .with_config()
        .limit(1024)
        .lossy_utf8(true)
        .read_to_string()
        .unwrap_or_default();
    Err(Error::Status {
        url: url.into(),
        status,
        detail: detail.trim().chars().take(300).collect(),
    })
}

fn read_capped(url: &str, what: &'static str, body: &mut Body) -> Result<Vec<u8>> {
    body.with_config()
        .limit(MAX_DOCUMENT)
        .read_to_vec()
        .map_err(|source| match source {
            ureq::Error::BodyExceedsLimit(_) => Error::TooLarge {
                url: url.into(),
                what,
                limit: MAX_DOCUMENT,
            },
            source => Error::Http {
                url: url.into(),
                source,
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]:5000",
            "127.1.2.3",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "example.com",
            "10.0.0.1:5000",
            "localhost.evil.com",
            "[::2]:1",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
