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
//!   interrupted blob resumes with `Range: bytes=N-` when the server answers 206, at most
//!   [`Options::max_resumes`] times per blob.
//! - Deadlines: a transfer slower than [`Options::low_speed_limit`] bytes/s over a window of
//!   [`Options::low_speed_time`] fails (as curl's `--speed-limit/--speed-time`), and so does a
//!   read or a response that stays silent for that window. Every attempt is therefore bounded in
//!   time, and the number of attempts is bounded, so a pull of a blob is too.
//! - `Retry-After` (delta-seconds or an HTTP date) on 429/503 is honoured up to
//!   [`Options::max_retry_wait`]; a registry that asks for longer fails at once, saying how long
//!   it asked to wait.
use super::auth::{Challenge, Credentials, Session};
use super::credentials;
use super::{
    check_image, decode_document, media, BlobSink, Document, Error, Fetch, ImageRef, PlatformSpec,
    Resolved, Result, MAX_DOCUMENT,
};
use crate::digest::sha256_digest;
use crate::error_chain::{chain, escape};
use oci_spec::image::{Descriptor, Digest};
use std::io::Read;
use std::net::IpAddr;
use std::time::Duration;
use ureq::http::{Response, Uri};
use ureq::Body;

pub mod push;
pub mod range;

/// Redirect hops followed per request.
pub const MAX_REDIRECTS: usize = 5;

/// How to reach a registry.
#[derive(Debug, Clone)]
pub struct Options {
    /// Hosts (`host` or `host:port`) that may be spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// Credentials; `None` means those [`credentials::lookup`] finds, else anonymous.
    pub creds: Option<Credentials>,
    /// The auth file to read credentials from instead of the default ones (`--authfile`).
    pub authfile: Option<std::path::PathBuf>,
    /// Verify TLS certificates and require HTTPS (`--tls-verify`, default true); false allows
    /// plain HTTP and skips certificate checks for every registry, as podman does.
    pub tls_verify: bool,
    /// Retries of a transient failure before giving up.
    pub retries: u32,
    /// First backoff delay; doubled per retry.
    pub backoff: Duration,
    /// Bytes per second below which a transfer counts as stalled ...
    pub low_speed_limit: u64,
    /// ... when it stays below for this long; also the longest a read or a response may stay
    /// silent.
    pub low_speed_time: Duration,
    /// Interrupted transfers of one blob that made progress and are resumed; failures without
    /// progress count against `retries` instead.
    pub max_resumes: u32,
    /// Longest `Retry-After` waited for.
    pub max_retry_wait: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            insecure: Vec::new(),
            creds: None,
            authfile: None,
            tls_verify: true,
            retries: 4,
            backoff: Duration::from_millis(200),
            low_speed_limit: 1024,
            low_speed_time: Duration::from_secs(30),
            max_resumes: 8,
            max_retry_wait: Duration::from_secs(60),
        }
    }
}

impl Options {
    /// The defaults, with the deadlines taken from the environment where set:
    /// `BFCFS_LOW_SPEED_LIMIT` (bytes/s), `BFCFS_LOW_SPEED_TIME` (s), `BFCFS_MAX_RESUMES`,
    /// `BFCFS_MAX_RETRY_WAIT` (s), `BFCFS_RETRIES`, `BFCFS_RETRY_BACKOFF_MS`. A value that does
    /// not parse is an error naming the variable.
    pub fn from_env() -> std::result::Result<Options, String> {
        fn var(name: &str) -> std::result::Result<Option<u64>, String> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("{name}={} is not a whole number", escape(&v))),
                Err(std::env::VarError::NotPresent) => Ok(None),
                Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not UTF-8")),
            }
        }
        let mut o = Options::default();
        if let Some(v) = var("BFCFS_LOW_SPEED_LIMIT")? {
            o.low_speed_limit = v;
        }
        if let Some(v) = var("BFCFS_LOW_SPEED_TIME")? {
            o.low_speed_time = Duration::from_secs(v.max(1));
        }
        if let Some(v) = var("BFCFS_MAX_RESUMES")? {
            o.max_resumes = u32::try_from(v).unwrap_or(u32::MAX);
        }
        if let Some(v) = var("BFCFS_MAX_RETRY_WAIT")? {
            o.max_retry_wait = Duration::from_secs(v);
        }
        if let Some(v) = var("BFCFS_RETRIES")? {
            o.retries = u32::try_from(v).unwrap_or(u32::MAX);
        }
        if let Some(v) = var("BFCFS_RETRY_BACKOFF_MS")? {
            o.backoff = Duration::from_millis(v);
        }
        Ok(o)
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
    /// `--tls-verify=false`: every host may be spoken to over plain HTTP.
    any_insecure: bool,
    retries: u32,
    backoff: Duration,
    low_speed_limit: u64,
    low_speed_time: Duration,
    max_resumes: u32,
    max_retry_wait: Duration,
    /// Blob size up to which a push uploads in one request (push.rs).
    chunk_size: u64,
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
        Error::Busy { .. } | Error::TooSlow { .. } | Error::Stalled { .. } => true,
        _ => false,
    }
}

/// How long to wait before the next attempt after `e`: the registry's `Retry-After` if it gave
/// one (an error if that is over `cap`), else the backoff `delay`.
fn wait_after(e: &Error, delay: Duration, cap: Duration) -> Result<Duration> {
    match e {
        Error::Busy { url, status, wait } if *wait > cap => Err(Error::WaitTooLong {
            url: url.clone(),
            status: *status,
            wait: wait.as_secs(),
            cap: cap.as_secs(),
        }),
        Error::Busy { wait, .. } => Ok((*wait).max(delay)),
        _ => Ok(delay),
    }
}

/// `Retry-After` (RFC 9110 §10.2.3): delta-seconds, or an HTTP date (IMF-fixdate, or the
/// obsolete RFC 850 and asctime forms). A date counts from the response's own `Date` when it
/// has one, so that only the registry's clock is involved and a skewed clock here changes
/// nothing; else from our clock. A date already past means no wait (the backoff applies).
fn retry_after(resp: &Response<Body>) -> Option<Duration> {
    let header = |name: &str| Some(resp.headers().get(name)?.to_str().ok()?.trim());
    let v = header("retry-after")?;
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    let now = header("date")
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .unwrap_or_else(std::time::SystemTime::now);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

impl Registry {
    /// Connects to the registry of `image`: decides HTTPS or (loopback/insecure only) HTTP and
    /// loads credentials from `opts` or the Docker config.
    pub fn connect(image: &ImageRef, opts: &Options) -> Result<Registry> {
        let scope = format!("repository:{}:pull", image.repository());
        Self::connect_scoped(image, scope, opts)
    }

    /// Checks that the registry of `image` accepts `opts.creds` (what `login` does): a GET of
    /// `/v2/` that answers the registry's challenge, with no repository scope.
    pub fn check_login(image: &ImageRef, opts: &Options) -> Result<()> {
        let reg = Self::connect_scoped(image, String::new(), opts)?;
        let url = format!("{}/v2/", reg.base);
        let (url, resp) = reg.retrying(|| reg.get(&url, None, None))?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            status => Err(Error::Status {
                url,
                status,
                detail: String::new(),
            }),
        }
    }

    fn connect_scoped(image: &ImageRef, scope: String, opts: &Options) -> Result<Registry> {
        let authority = image.api_host().to_string();
        let creds = match &opts.creds {
            Some(c) => Some(c.clone()),
            None => credentials::lookup(
                image.registry(),
                image.repository(),
                opts.authfile.as_deref(),
            )?,
        };
        let tls = ureq::tls::TlsConfig::builder()
            .disable_verification(!opts.tls_verify)
            .build();
        let config = ureq::Agent::config_builder()
            .tls_config(tls)
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(opts.low_speed_time))
            .timeout_recv_body(None)
            .timeout_per_read(Some(opts.low_speed_time))
            .user_agent(concat!("bfcfs/", env!("CARGO_PKG_VERSION")))
            .accept_encoding("identity")
            .build();
        let mut reg = Registry {
            agent: config.into(),
            base: format!("https://{authority}"),
            scope,
            repository: image.repository().to_string(),
            authority,
            session: Session::new(creds),
            insecure: opts.insecure.clone(),
            any_insecure: !opts.tls_verify,
            retries: opts.retries,
            backoff: opts.backoff,
            low_speed_limit: opts.low_speed_limit,
            low_speed_time: opts.low_speed_time,
            max_resumes: opts.max_resumes,
            max_retry_wait: opts.max_retry_wait,
            chunk_size: push::DEFAULT_CHUNK_SIZE,
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
        self.any_insecure
            || is_loopback(authority)
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
                    let wait = wait_after(&e, delay, self.max_retry_wait)?;
                    log::warn!("{}; retrying in {wait:?}", chain(&e));
                    std::thread::sleep(wait);
                    delay = (delay * 2).min(Duration::from_secs(10));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// One GET (with a `Range` header value if given), answering auth challenges and
    /// following redirects.
    fn get(
        &self,
        url: &str,
        accept: Option<&str>,
        range: Option<&str>,
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
            if let Some(r) = range {
                req = req.header("Range", r);
            }
            if own {
                if let Some(h) = self.session.header(&self.scope) {
                    req = req.header("Authorization", h);
                }
            }
            let resp = req.call().map_err(|source| match source {
                ureq::Error::Timeout(ureq::Timeout::RecvResponse) => Error::Stalled {
                    url: url.clone(),
                    what: "response",
                    secs: self.low_speed_time.as_secs(),
                },
                source => Error::Http {
                    url: url.clone(),
                    source,
                },
            })?;
            let status = resp.status().as_u16();
            if self.retry_after_401(&url, &resp, own, &mut answered, "")? {
                continue;
            }
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                url = self.follow_redirect(&url, &resp, &mut hops)?;
                continue;
            }
            return Ok((url, resp));
        }
    }

    /// The URL redirect `resp` (a 3xx reply to `url`) points to, counting it in `hops`; an error
    /// past [`MAX_REDIRECTS`].
    fn follow_redirect(
        &self,
        url: &str,
        resp: &Response<Body>,
        hops: &mut usize,
    ) -> Result<String> {
        *hops += 1;
        if *hops > MAX_REDIRECTS {
            return Err(Error::Status {
                url: url.to_string(),
                status: resp.status().as_u16(),
                detail: format!("more than {MAX_REDIRECTS} redirects"),
            });
        }
        let location = location_header(url, resp, "redirect without Location")?;
        self.redirect_target(url, location)
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

    /// Whether reply `resp` to `url` was a first 401 from our own registry (`own`), now
    /// answered, so that the caller sends the request again; a second one is an error (`denied`
    /// adds what the request needed).
    fn retry_after_401(
        &self,
        url: &str,
        resp: &Response<Body>,
        own: bool,
        answered: &mut bool,
        denied: &str,
    ) -> Result<bool> {
        if resp.status().as_u16() != 401 || !own {
            return Ok(false);
        }
        if *answered {
            return Err(Error::Auth {
                url: url.to_string(),
                why: format!("credentials or token rejected (HTTP 401){denied}"),
            });
        }
        *answered = true;
        self.answer_401(url, resp)?;
        Ok(true)
    }

    /// Answers a 401 from our own registry: forgets the token of our scope and gets a new one as
    /// the reply's WWW-Authenticate asks (pull and push both come here).
    fn answer_401(&self, url: &str, resp: &Response<Body>) -> Result<()> {
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse)
            .ok_or_else(|| Error::Auth {
                url: url.to_string(),
                why: "401 without a usable WWW-Authenticate header".into(),
            })?;
        self.session.drop_token(&self.scope);
        self.session
            .answer(url, &self.scope, &challenge, &|realm, query, auth| {
                self.fetch_token(realm, query, auth)
            })
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
        self.read_capped(realm, "token response", resp.body_mut())
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
            let bytes = self.read_capped(url, what, resp.body_mut())?;
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
        self.resolve_with(
            image,
            &|i, _| platform.choose(&image.to_string(), i).cloned(),
            cached,
        )
    }

    /// [`Registry::resolve`] with `choose` picking the manifest out of an index (given decoded
    /// and as served: oci-spec does not read every field, e.g. `platform.os.features`).
    pub fn resolve_with(
        &self,
        image: &ImageRef,
        choose: &dyn Fn(&oci_spec::image::ImageIndex, &[u8]) -> Result<Descriptor>,
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
                let desc = choose(&index, &bytes)?;
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
        let mut resumes = 0;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let from = sink.offset();
            if from == expected && expected > 0 {
                return Ok(());
            }
            let attempt: Result<()> = (|| {
                let range = (from > 0).then(|| format!("bytes={from}-"));
                let (final_url, mut resp) = self.get(&url, None, range.as_deref())?;
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
                let mut pace = Pace::new(self.low_speed_limit, self.low_speed_time);
                loop {
                    let n = match reader.read(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(self.read_error(&final_url, e)),
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
                    if let Err((bytes, secs)) = pace.tick(n as u64) {
                        return Err(Error::TooSlow {
                            url: final_url,
                            bytes,
                            secs,
                            limit: self.low_speed_limit,
                        });
                    }
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
                Err(e) if transient(&e) => {
                    // An attempt that made progress is a resume, one without is a failure;
                    // each has its own bound, so a server that sends a byte per connection
                    // cannot keep the pull going forever.
                    if sink.offset() > from {
                        resumes += 1;
                        if resumes > self.max_resumes {
                            return Err(Error::TooManyResumes {
                                url,
                                digest,
                                resumes: self.max_resumes,
                                have: sink.offset(),
                                expected,
                                last: chain(&e),
                            });
                        }
                    } else {
                        failures += 1;
                        if failures > self.retries {
                            return Err(e);
                        }
                    }
                    let wait = wait_after(&e, delay, self.max_retry_wait)?;
                    log::warn!("{}; retrying in {wait:?}", chain(&e));
                    std::thread::sleep(wait);
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Checks the status against `ok`; otherwise reads up to 1 KiB of the body for the message.
/// The `Location` header of reply `resp` to `url`; `missing` is the error's detail without one.
fn location_header<'r>(url: &str, resp: &'r Response<Body>, missing: &str) -> Result<&'r str> {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::Status {
            url: url.to_string(),
            status: resp.status().as_u16(),
            detail: missing.into(),
        })
}

fn check_status(url: &str, resp: &mut Response<Body>, ok: &[u16]) -> Result<u16> {
    let status = resp.status().as_u16();
    if ok.contains(&status) {
        return Ok(status);
    }
    if matches!(status, 429 | 503) {
        if let Some(wait) = retry_after(resp) {
            return Err(Error::Busy {
                url: url.into(),
                status,
                wait,
            });
        }
    }
    let detail = resp
        .body_mut()
        .with_config()
        .limit(1024)
        .lossy_utf8(true)
        .read_to_string()
        .unwrap_or_default();
    let detail: String = detail.trim().chars().take(300).collect();
    Err(Error::Status {
        url: url.into(),
        status,
        detail: escape(&detail).into_owned(),
    })
}

/// The minimum-rate rule over one window: fewer than `limit × window` bytes in a window of
/// `window` fails the transfer.
struct Pace {
    limit: u64,
    window: Duration,
    start: std::time::Instant,
    bytes: u64,
}

impl Pace {
    fn new(limit: u64, window: Duration) -> Pace {
        Pace {
            limit,
            window,
            start: std::time::Instant::now(),
            bytes: 0,
        }
    }

    /// Counts `n` more bytes; `Err((bytes, secs))` when the window closed under the rate.
    fn tick(&mut self, n: u64) -> std::result::Result<(), (u64, u64)> {
        self.bytes = self.bytes.saturating_add(n);
        let elapsed = self.start.elapsed();
        if elapsed >= self.window {
            let min = self.limit.saturating_mul(self.window.as_secs().max(1));
            if self.bytes < min {
                return Err((self.bytes, elapsed.as_secs()));
            }
            self.start = std::time::Instant::now();
            self.bytes = 0;
        }
        Ok(())
    }
}

impl Registry {
    /// A failed read of a body: a read that timed out is a stall of the low-speed window.
    fn read_error(&self, url: &str, e: std::io::Error) -> Error {
        let timed_out = e.kind() == std::io::ErrorKind::TimedOut
            || e.get_ref()
                .and_then(|i| i.downcast_ref::<ureq::Error>())
                .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)));
        if timed_out {
            return Error::Stalled {
                url: url.into(),
                what: "data",
                secs: self.low_speed_time.as_secs(),
            };
        }
        Error::Http {
            url: url.into(),
            source: ureq::Error::Io(e),
        }
    }

    /// Reads a small document (manifest, config, token) under [`MAX_DOCUMENT`] and the speed
    /// rule, so neither a huge nor a dripping document holds the pull.
    fn read_capped(&self, url: &str, what: &'static str, body: &mut Body) -> Result<Vec<u8>> {
        let mut reader = body.as_reader();
        let mut pace = Pace::new(self.low_speed_limit, self.low_speed_time);
        let mut out = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(out),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_error(url, e)),
            };
            if (out.len() + n) as u64 > MAX_DOCUMENT {
                return Err(Error::TooLarge {
                    url: url.into(),
                    what,
                    limit: MAX_DOCUMENT,
                });
            }
            out.extend_from_slice(&buf[..n]);
            pace.tick(n as u64)
                .map_err(|(bytes, secs)| Error::TooSlow {
                    url: url.into(),
                    bytes,
                    secs,
                    limit: self.low_speed_limit,
                })?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_headers(h: &[(&str, &str)]) -> Response<Body> {
        let mut b = Response::builder().status(503);
        for (k, v) in h {
            b = b.header(*k, *v);
        }
        b.body(Body::builder().data("")).unwrap()
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let wait = |h: &[(&str, &str)]| retry_after(&with_headers(h));
        assert_eq!(
            wait(&[("Retry-After", " 7 ")]),
            Some(Duration::from_secs(7))
        );
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        // Counted from the response's Date, in each of the three date forms.
        for later in [
            "Sun, 06 Nov 1994 08:51:37 GMT",
            "Sunday, 06-Nov-94 08:51:37 GMT",
            "Sun Nov  6 08:51:37 1994",
        ] {
            let got = wait(&[("Date", date), ("Retry-After", later)]);
            assert_eq!(got, Some(Duration::from_secs(120)), "{later}");
        }
        // A date already past: no wait. Without a Date, from our clock (long past here too).
        assert_eq!(
            wait(&[
                ("Date", date),
                ("Retry-After", "Sun, 06 Nov 1994 08:00:00 GMT")
            ]),
            Some(Duration::ZERO)
        );
        assert_eq!(wait(&[("Retry-After", date)]), Some(Duration::ZERO));
        let soon = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(90));
        let got = wait(&[("Retry-After", &soon)]).unwrap();
        assert!(
            got > Duration::from_secs(85) && got <= Duration::from_secs(90),
            "{got:?}"
        );
        // Neither form: ignored (the backoff applies).
        for bad in ["soon", "-1", "1.5", ""] {
            assert_eq!(wait(&[("Retry-After", bad)]), None, "{bad:?}");
        }
    }

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
