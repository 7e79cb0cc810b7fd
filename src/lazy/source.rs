//! Where the missing bytes of a lazy layer come from: range GETs of a registry blob (through the
//! registry client: its credentials, fresh tokens on 401, redirects re-resolved when they stop
//! working) or of a plain HTTP(S) URL. Transient failures are retried with backoff, each
//! logged with the layer and the offset; the last one is the request's error.
use crate::bfc::RangeSource;
use crate::error_chain::chain;
use crate::oci::registry::range::{read_range_response, ByteRange, RangeReply};
use crate::oci::registry::Registry;
use crate::oci::{self, Error as OciError};
use oci_spec::image::Digest;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// Retries of one range request.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub retries: u32,
    pub backoff: Duration,
}

impl Retry {
    pub fn from(o: &oci::registry::Options) -> Retry {
        Retry {
            retries: o.retries,
            backoff: o.backoff,
        }
    }

    /// Runs `f` until it succeeds, fails for good, or the retries are spent; `what` names the
    /// layer and the bytes in the log.
    pub fn run<T>(
        &self,
        what: &str,
        mut f: impl FnMut() -> oci::Result<T>,
    ) -> std::result::Result<T, String> {
        let mut delay = self.backoff;
        let mut attempt = 0;
        loop {
            match f() {
                Ok(v) => return Ok(v),
                Err(e) if transient(&e) && attempt < self.retries => {
                    log::warn!("{what}: {}; retrying in {delay:?}", chain(&e));
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
                Err(e) => return Err(chain(&e)),
            }
        }
    }
}

/// Failures worth another try: the network, 5xx, 408/429, stalls.
fn transient(e: &OciError) -> bool {
    match e {
        OciError::Http { .. }
        | OciError::Busy { .. }
        | OciError::TooSlow { .. }
        | OciError::Stalled { .. } => true,
        OciError::Status { status, .. } => *status >= 500 || matches!(status, 408 | 429),
        _ => false,
    }
}

/// What to do with a file once every byte is local (verify it, move it into place).
pub type Complete = Box<dyn Fn(&Path) -> std::result::Result<(), String> + Send + Sync>;

/// A layer blob in a registry.
pub struct RegistrySource {
    pub(super) registry: Registry,
    pub(super) digest: Digest,
    /// `registry/repository`, for messages.
    pub(super) image: String,
    pub(super) via: Mutex<Option<String>>,
    pub(super) retry: Retry,
    pub(super) complete: Complete,
}

impl RegistrySource {
    /// One range of the blob, retried.
    pub fn range(&self, range: ByteRange, cap: u64) -> std::result::Result<RangeReply, String> {
        let what = format!("{}: {range:?}", self.name());
        self.retry.run(&what, || {
            self.registry
                .blob_range(&self.digest, range, &self.via, cap)
        })
    }
}

impl RangeSource for RegistrySource {
    fn name(&self) -> String {
        format!("layer {} of {}", self.digest, self.image)
    }

    fn get(&self, offset: u64, len: u64) -> std::result::Result<Vec<u8>, String> {
        self.range(ByteRange::Span { offset, len }, len)
            .map(|r| r.bytes)
    }

    fn complete(&self, file: &Path) -> std::result::Result<(), String> {
        (self.complete)(file)
    }
}

/// A file behind a plain HTTP(S) URL that answers range requests.
pub struct UrlSource {
    pub(super) agent: ureq::Agent,
    pub(super) url: String,
    pub(super) retry: Retry,
    pub(super) complete: Complete,
}

impl UrlSource {
    pub fn new(url: &str, opts: &oci::registry::Options, complete: Complete) -> UrlSource {
        let agent = ureq::Agent::config_builder()
            .max_redirects(5)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(opts.low_speed_time))
            .timeout_per_read(Some(opts.low_speed_time))
            .user_agent(concat!("bfcfs/", env!("CARGO_PKG_VERSION")))
            .accept_encoding("identity")
            .build()
            .into();
        UrlSource {
            agent,
            url: url.to_string(),
            retry: Retry::from(opts),
            complete,
        }
    }

    /// One range of the file, retried.
    pub fn range(&self, range: ByteRange, cap: u64) -> std::result::Result<RangeReply, String> {
        let what = format!("{}: {range:?}", self.url);
        self.retry.run(&what, || {
            let url = &self.url;
            let resp = self
                .agent
                .get(url)
                .header("Range", range.header())
                .call()
                .map_err(|source| OciError::Http {
                    url: url.clone(),
                    source,
                })?;
            let status = resp.status().as_u16();
            if status != 200 && status != 206 {
                return Err(OciError::Status {
                    url: url.clone(),
                    status,
                    detail: String::new(),
                });
            }
            read_range_response(url, status, resp, range, cap)
        })
    }
}

impl RangeSource for UrlSource {
    fn name(&self) -> String {
        self.url.clone()
    }

    fn get(&self, offset: u64, len: u64) -> std::result::Result<Vec<u8>, String> {
        self.range(ByteRange::Span { offset, len }, len)
            .map(|r| r.bytes)
    }

    fn complete(&self, file: &Path) -> std::result::Result<(), String> {
        (self.complete)(file)
    }
}
