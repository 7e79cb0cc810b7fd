//! Byte ranges of a blob, for lazy pulls: `Range: bytes=A-B` (or a suffix, `bytes=-N`) through
//! the registry's auth and redirects. A blob served from elsewhere (a redirect to object
//! storage) is asked there directly next time; when that URL stops working (401, 403, 404, 410:
//! a signed URL expired) the redirect is resolved again through the registry.
use super::{check_status, Registry};
use crate::oci::{Error, Result};
use oci_spec::image::Digest;
use std::io::Read;
use std::sync::Mutex;
use ureq::http::Response;
use ureq::Body;

/// Which bytes to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `len` bytes at `offset`.
    Span { offset: u64, len: u64 },
    /// The last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    /// The `Range` header value.
    pub fn header(&self) -> String {
        match *self {
            ByteRange::Span { offset, len } => {
                format!("bytes={offset}-{}", offset + len.max(1) - 1)
            }
            ByteRange::Suffix(n) => format!("bytes=-{n}"),
        }
    }
}

/// What a range request brought: the bytes, where they start, and the whole size.
#[derive(Debug)]
pub struct RangeReply {
    pub start: u64,
    pub bytes: Vec<u8>,
    pub total: u64,
}

/// Parses `Content-Range: bytes A-B/TOTAL`.
pub fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    let (a, b, t) = (a.parse().ok()?, b.parse().ok()?, total.parse().ok()?);
    (a <= b && b < t).then_some((a, b, t))
}

/// Reads range reply `resp` (status `status`) to `url` as [`read_range_reply`] does, with its
/// `Content-Range` header.
pub fn read_range_response(
    url: &str,
    status: u16,
    resp: Response<Body>,
    range: ByteRange,
    cap: u64,
) -> Result<RangeReply> {
    let cr = resp
        .headers()
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = resp.into_body().into_reader();
    read_range_reply(url, status, cr.as_deref(), &mut body, range, cap)
}

/// Reads the body of a range reply: a 206 must say which bytes it holds and be that long; a
/// 200 (the server ignored the Range header) is the whole file, from which the range is cut.
/// `cap` bounds what is read.
pub fn read_range_reply(
    url: &str,
    status: u16,
    content_range: Option<&str>,
    body: &mut dyn Read,
    range: ByteRange,
    cap: u64,
) -> Result<RangeReply> {
    let bad = |detail: String| Error::Status {
        url: url.to_string(),
        status,
        detail,
    };
    let io = |e: std::io::Error| Error::Http {
        url: url.to_string(),
        source: ureq::Error::Io(e),
    };
    if status == 206 {
        let cr = content_range.unwrap_or("");
        let (a, b, total) =
            parse_content_range(cr).ok_or_else(|| bad(format!("bad Content-Range {cr:?}")))?;
        if let ByteRange::Span { offset, len } = range {
            if a != offset || b + 1 != (offset + len).min(total) {
                return Err(bad(format!(
                    "asked for bytes {offset}+{len}, got Content-Range {cr:?}"
                )));
            }
        }
        let want = b + 1 - a;
        if want > cap {
            return Err(bad(format!(
                "range of {want} bytes exceeds the cap of {cap}"
            )));
        }
        let mut bytes = Vec::with_capacity(want as usize);
        body.take(want + 1).read_to_end(&mut bytes).map_err(io)?;
        if bytes.len() as u64 != want {
            return Err(bad(format!(
                "body of {} bytes for a range of {want}",
                bytes.len()
            )));
        }
        return Ok(RangeReply {
            start: a,
            bytes,
            total,
        });
    }
    log::warn!("{url}: the server ignored the Range header; reading the whole file");
    let mut all = Vec::new();
    body.take(cap + 1).read_to_end(&mut all).map_err(io)?;
    if all.len() as u64 > cap {
        return Err(bad(format!(
            "whole file sent for a range request, over the cap of {cap} bytes"
        )));
    }
    let total = all.len() as u64;
    let (start, end) = match range {
        ByteRange::Span { offset, len } => (offset.min(total), (offset + len).min(total)),
        ByteRange::Suffix(n) => (total.saturating_sub(n), total),
    };
    Ok(RangeReply {
        start,
        bytes: all[start as usize..end as usize].to_vec(),
        total,
    })
}

impl Registry {
    /// One range request for blob `digest` (no retries: the caller decides). `via` remembers
    /// where the registry redirected the blob to.
    pub fn blob_range(
        &self,
        digest: &Digest,
        range: ByteRange,
        via: &Mutex<Option<String>>,
        cap: u64,
    ) -> Result<RangeReply> {
        let header = range.header();
        let own = self.blob_url(digest);
        let cached = via.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (final_url, mut resp) = match cached {
            Some(u) => {
                let (f, r) = self.get(&u, None, Some(&header))?;
                let st = r.status().as_u16();
                if matches!(st, 401 | 403 | 404 | 410) {
                    log::info!(
                        "{u}: HTTP {st} for blob {digest}; resolving its redirect again through {own}"
                    );
                    *via.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    self.get(&own, None, Some(&header))?
                } else {
                    (f, r)
                }
            }
            None => self.get(&own, None, Some(&header))?,
        };
        let status = check_status(&final_url, &mut resp, &[200, 206])?;
        if !self.same_origin(&final_url) {
            *via.lock().unwrap_or_else(|p| p.into_inner()) = Some(final_url.clone());
        }
        read_range_response(&final_url, status, resp, range, cap).map_err(|e| {
            match e {
                // A stalled read is reported as the registry client reports it.
                Error::Http {
                    url,
                    source: ureq::Error::Io(io),
                } => self.read_error(&url, io),
                other => other,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse_and_mismatches_are_refused() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 9, 100)));
        assert_eq!(parse_content_range("bytes 9-0/100"), None);
        assert_eq!(parse_content_range("bytes 0-100/100"), None);
        assert_eq!(
            ByteRange::Span { offset: 10, len: 5 }.header(),
            "bytes=10-14"
        );
        let span = ByteRange::Span { offset: 10, len: 5 };
        let mut body: &[u8] = b"abcde";
        let r = read_range_reply("u", 206, Some("bytes 10-14/20"), &mut body, span, 100).unwrap();
        assert_eq!((r.start, r.total, &r.bytes[..]), (10, 20, &b"abcde"[..]));
        let mut body: &[u8] = b"abcde";
        assert!(read_range_reply("u", 206, Some("bytes 11-15/20"), &mut body, span, 100).is_err());
        let mut body: &[u8] = b"abc";
        assert!(read_range_reply("u", 206, Some("bytes 10-14/20"), &mut body, span, 100).is_err());
        let mut whole: &[u8] = b"0123456789abcdefghij";
        let r = read_range_reply("u", 200, None, &mut whole, ByteRange::Suffix(4), 100).unwrap();
        assert_eq!((r.start, &r.bytes[..]), (16, &b"ghij"[..]));
    }
}
