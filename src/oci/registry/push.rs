//! The push half of the Distribution API (distribution-spec "Push"), on the same connection,
//! auth session, retry and deadline policy as pulls:
//! - `HEAD /v2/<name>/blobs/<digest>`: skip a blob the repository has;
//! - `POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<other>`: cross-repository mount (201),
//!   where the caller knows the blob is in another repository of the registry;
//! - a blob up to [`Registry::chunk_size`] bytes goes up monolithically (`POST` for a session, then
//!   one `PUT <location>?digest=…` with the bytes); a larger one in chunks (`PATCH <location>`
//!   with `Content-Range`, following each new `Location`), then `PUT <location>?digest=…`;
//! - `PUT /v2/<name>/manifests/<reference>` last, once every blob it names is there.
//!
//! Pushing needs the scope `repository:<name>:pull,push`; a mount also asks the token server for
//! `repository:<other>:pull` (the registry's challenge names both). An upload that fails starts
//! again from a new session, within the retry budget.
use super::{check_status, location_header, Error, Registry, Result};
use crate::oci::{media, ImageRef};
use oci_spec::image::Digest;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use ureq::http::{Method, Response};
use ureq::{Body, SendBody};

/// Default size up to which a blob is uploaded in one request, and the size of each `PATCH`
/// above it (`BFCFS_PUSH_CHUNK_SIZE` overrides it).
pub const DEFAULT_CHUNK_SIZE: u64 = 32 << 20;

/// What a request sends.
enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of `file` from `offset`; `progress` is told the bytes sent so far.
    File {
        file: &'a File,
        offset: u64,
        len: u64,
        progress: &'a dyn Fn(u64),
    },
}

/// Counts bytes as ureq reads them from a file range.
struct Counted<'a, R> {
    inner: R,
    sent: u64,
    base: u64,
    progress: &'a dyn Fn(u64),
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sent += n as u64;
        (self.progress)(self.base + self.sent);
        Ok(n)
    }
}

/// How a cross-repository mount went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// The registry linked the blob into this repository (HTTP 201).
    Mounted,
    /// The registry could not (no such blob there, or no access): it opened an ordinary upload
    /// session instead, which is left to expire.
    NotMounted,
}

fn percent_digest(d: &Digest) -> String {
    d.to_string().replace(':', "%3A")
}

impl Registry {
    /// Connects to the registry of `image` for pushing (scope `pull,push`).
    pub fn connect_push(image: &ImageRef, opts: &super::Options) -> Result<Registry> {
        let mut reg = Registry::connect(image, opts)?;
        reg.scope = format!("repository:{}:pull,push", reg.repository);
        reg.chunk_size = std::env::var("BFCFS_PUSH_CHUNK_SIZE")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .filter(|n: &u64| *n > 0)
            .unwrap_or(DEFAULT_CHUNK_SIZE);
        Ok(reg)
    }

    /// The repository this connection is for.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// Bytes up to which a blob goes up in one request (and the size of each chunk above).
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// An absolute URL for a `Location` header (absolute, or a path on the registry).
    fn absolute(&self, from: &str, location: &str) -> Result<String> {
        if location.starts_with("http://") || location.starts_with("https://") {
            return Ok(location.to_string());
        }
        if location.starts_with('/') {
            return Ok(format!("{}{location}", self.base));
        }
        Err(Error::Status {
            url: from.to_string(),
            status: 202,
            detail: format!("unsupported upload location {location:?}"),
        })
    }

    /// One request with any method, answering an auth challenge once; GET and HEAD follow
    /// redirects (as [`Registry::get`] does), other methods never do.
    fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        payload: &Payload<'_>,
    ) -> Result<(String, Response<Body>)> {
        let mut url = url.to_string();
        let mut answered = false;
        let mut hops = 0;
        let follows = method == Method::GET || method == Method::HEAD;
        loop {
            let own = self.same_origin(&url);
            let mut b = ureq::http::Request::builder()
                .method(method.clone())
                .uri(&url);
            for (k, v) in headers {
                b = b.header(*k, v);
            }
            if own {
                if let Some(h) = self.session.header(&self.scope) {
                    b = b.header("Authorization", h);
                }
            }
            let http_err = |source| Error::Http {
                url: url.clone(),
                source,
            };
            let bad_request = |e: ureq::http::Error| Error::Status {
                url: url.clone(),
                status: 0,
                detail: format!("building the request: {e}"),
            };
            let resp = match payload {
                Payload::Empty if follows => self
                    .agent
                    .run(b.body(()).map_err(bad_request)?)
                    .map_err(http_err),
                Payload::Empty => self
                    .agent
                    .run(
                        b.header("Content-Length", "0")
                            .body(SendBody::none())
                            .map_err(bad_request)?,
                    )
                    .map_err(http_err),
                Payload::Bytes(bytes) => self
                    .agent
                    .run(
                        b.header("Content-Length", bytes.len().to_string())
                            .body(*bytes)
                            .map_err(bad_request)?,
                    )
                    .map_err(http_err),
                Payload::File {
                    file,
                    offset,
                    len,
                    progress,
                } => {
                    let mut f = *file;
                    f.seek(SeekFrom::Start(*offset)).map_err(|e| Error::Http {
                        url: url.clone(),
                        source: ureq::Error::Io(e),
                    })?;
                    let mut counted = Counted {
                        inner: f.take(*len),
                        sent: 0,
                        base: *offset,
                        progress: *progress,
                    };
                    self.agent
                        .run(
                            b.header("Content-Length", len.to_string())
                                .body(SendBody::from_reader(&mut counted))
                                .map_err(bad_request)?,
                        )
                        .map_err(http_err)
                }
            }?;
            let status = resp.status().as_u16();
            let denied = "; pushing needs push access";
            if self.retry_after_401(&url, &resp, own, &mut answered, denied)? {
                continue;
            }
            if follows && matches!(status, 301 | 302 | 303 | 307 | 308) {
                url = self.follow_redirect(&url, &resp, &mut hops)?;
                continue;
            }
            return Ok((url, resp));
        }
    }

    /// `HEAD` of a blob: its size when the repository has it.
    pub fn blob_exists(&self, digest: &Digest) -> Result<Option<u64>> {
        let url = self.blob_url(digest);
        self.retrying(|| {
            let (final_url, mut resp) = self.send(Method::HEAD, &url, &[], &Payload::Empty)?;
            match resp.status().as_u16() {
                200 => Ok(Some(
                    resp.headers()
                        .get("content-length")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                )),
                404 => Ok(None),
                _ => check_status(&final_url, &mut resp, &[200]).map(|_| None),
            }
        })
    }

    /// Asks the registry to link blob `digest` from repository `from` (same registry).
    pub fn mount_blob(&self, digest: &Digest, from: &str) -> Result<Mount> {
        let url = format!(
            "{}/v2/{}/blobs/uploads/?mount={}&from={from}",
            self.base,
            self.repository,
            percent_digest(digest)
        );
        self.retrying(|| {
            let (final_url, mut resp) = self.send(Method::POST, &url, &[], &Payload::Empty)?;
            match check_status(&final_url, &mut resp, &[201, 202])? {
                201 => Ok(Mount::Mounted),
                _ => Ok(Mount::NotMounted),
            }
        })
    }

    /// Opens an upload session; returns its location.
    fn start_upload(&self) -> Result<String> {
        let url = format!("{}/v2/{}/blobs/uploads/", self.base, self.repository);
        let (final_url, mut resp) = self.send(Method::POST, &url, &[], &Payload::Empty)?;
        check_status(&final_url, &mut resp, &[202])?;
        self.location(&final_url, &resp)
    }

    fn location(&self, url: &str, resp: &Response<Body>) -> Result<String> {
        let loc = location_header(url, resp, "upload response without Location")?;
        self.absolute(url, loc)
    }

    /// Uploads `size` bytes of `file` as blob `digest`: in one request up to
    /// [`Registry::chunk_size`], in `PATCH` chunks of that size above. `progress` is told the
    /// bytes sent.
    pub fn upload_blob(
        &self,
        digest: &Digest,
        file: &File,
        size: u64,
        progress: &dyn Fn(u64),
    ) -> Result<()> {
        let chunk = self.chunk_size.max(1);
        self.retrying(|| {
            let mut loc = self.start_upload()?;
            let with_digest = |loc: &str| {
                let sep = if loc.contains('?') { '&' } else { '?' };
                format!("{loc}{sep}digest={}", percent_digest(digest))
            };
            let octets = ("Content-Type", "application/octet-stream".to_string());
            if size <= chunk {
                let url = with_digest(&loc);
                let body = Payload::File {
                    file,
                    offset: 0,
                    len: size,
                    progress,
                };
                let (final_url, mut resp) =
                    self.send(Method::PUT, &url, std::slice::from_ref(&octets), &body)?;
                check_status(&final_url, &mut resp, &[201])?;
                return Ok(());
            }
            let mut offset = 0;
            while offset < size {
                let len = chunk.min(size - offset);
                let range = ("Content-Range", format!("{offset}-{}", offset + len - 1));
                let body = Payload::File {
                    file,
                    offset,
                    len,
                    progress,
                };
                let (final_url, mut resp) =
                    self.send(Method::PATCH, &loc, &[octets.clone(), range], &body)?;
                check_status(&final_url, &mut resp, &[202])?;
                loc = self.location(&final_url, &resp)?;
                offset += len;
            }
            let url = with_digest(&loc);
            let (final_url, mut resp) = self.send(Method::PUT, &url, &[], &Payload::Empty)?;
            check_status(&final_url, &mut resp, &[201])?;
            Ok(())
        })
    }

    /// Uploads a small blob (a config) held in memory, unless the repository has it.
    pub fn upload_bytes(&self, digest: &Digest, bytes: &[u8]) -> Result<bool> {
        if self.blob_exists(digest)?.is_some() {
            return Ok(false);
        }
        self.retrying(|| {
            let loc = self.start_upload()?;
            let sep = if loc.contains('?') { '&' } else { '?' };
            let url = format!("{loc}{sep}digest={}", percent_digest(digest));
            let octets = ("Content-Type", "application/octet-stream".to_string());
            let (final_url, mut resp) =
                self.send(Method::PUT, &url, &[octets], &Payload::Bytes(bytes))?;
            check_status(&final_url, &mut resp, &[201])?;
            Ok(true)
        })
    }

    /// `PUT` of a manifest or index under `reference` (a tag or its digest).
    pub fn put_manifest(&self, reference: &str, media_type: &str, bytes: &[u8]) -> Result<()> {
        let url = self.manifest_url(reference);
        self.retrying(|| {
            let ct = ("Content-Type", media_type.to_string());
            let (final_url, mut resp) =
                self.send(Method::PUT, &url, &[ct], &Payload::Bytes(bytes))?;
            check_status(&final_url, &mut resp, &[201, 200])?;
            Ok(())
        })
    }

    /// The manifest or index at `reference` as served (bytes, Content-Type), or `None` when
    /// the repository has nothing there.
    pub fn manifest_at(&self, reference: &str) -> Result<Option<(Vec<u8>, Option<String>)>> {
        let url = self.manifest_url(reference);
        match self.fetch_document(&url, Some(media::ACCEPT_MANIFESTS), "manifest", None) {
            Ok((bytes, ct, _)) => Ok(Some((bytes, ct))),
            Err(Error::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
