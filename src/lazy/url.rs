//! `bfcfs mount https://HOST/PATH/file.bfc DIR`: a BFC file behind any HTTP(S) server that
//! answers range requests. One suffix request gives the size, the footer and (usually) the whole
//! index; the file header is a second request. The partial file is kept in the store
//! (`lazy/url-<sha256 of the URL>/`), so a later mount of the same URL fetches nothing twice —
//! as long as the server's file still ends with the same bytes (size, index and footer), which
//! is checked on every mount.
use super::source::UrlSource;
use super::store::{create_layer, dir_of, read_head, read_origin, Origin};
use super::{LazyOptions, Result};
use crate::bfc::Container;
use crate::oci::registry::range::ByteRange;
use crate::store::Store;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Bytes asked for first from the end of the file.
const TAIL_GUESS: u64 = 64 << 10;

/// True when `s` is an `http://` or `https://` URL.
pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Opens the BFC file at `url` lazily (not shared yet: set a key or the cache size, then
/// [`Container::share`]).
pub fn open_url(store: &Store, url: &str, opts: &LazyOptions) -> Result<Container> {
    let key = format!(
        "url-{}",
        crate::digest::sha256_digest(url.as_bytes()).trim_start_matches("sha256:")
    );
    let dir = dir_of(store, &key);
    let probe = UrlSource::new(url, &opts.registry, Box::new(|_| Ok(())));
    let first = probe
        .range(ByteRange::Suffix(TAIL_GUESS), 1 << 30)
        .map_err(|why| super::Error::Bad {
            what: url.to_string(),
            why,
        })?;
    let size = first.total;
    if dir.join("present").exists() && !still_same(&dir, size, first.start, &first.bytes) {
        log::info!("{url} changed since it was cached; fetching it again");
        std::fs::remove_dir_all(&dir).map_err(super::io_err(&dir))?;
    }
    if !dir.join("present").exists() {
        let range = |off: u64, len: u64| -> std::result::Result<Vec<u8>, String> {
            let end = off + len;
            if off >= first.start && end <= first.start + first.bytes.len() as u64 {
                let a = (off - first.start) as usize;
                return Ok(first.bytes[a..a + len as usize].to_vec());
            }
            probe
                .range(ByteRange::Span { offset: off, len }, len)
                .map(|r| r.bytes)
        };
        let head = read_head(size, None, TAIL_GUESS, &range, url)?;
        let origin = Origin {
            image: None,
            digest: None,
            diff_id: None,
            url: Some(url.to_string()),
            size,
            insecure: Vec::new(),
        };
        create_layer(store, &key, &origin, &head)?;
    }
    let u = url.to_string();
    let source = UrlSource::new(
        url,
        &opts.registry,
        Box::new(move |_| {
            log::info!("{u}: every byte is local now");
            Ok(())
        }),
    );
    Ok(Container::open_partial(
        &dir.join("layer.bfc"),
        &dir.join("present"),
        Arc::new(source),
        opts.partial(),
    )?)
}

/// Whether the cached partial file in `dir` is `size` bytes and holds `tail` at `at` (the
/// server's current tail, which covers the index and footer, or whatever of them it does).
fn still_same(dir: &std::path::Path, size: u64, at: u64, tail: &[u8]) -> bool {
    let Ok(origin) = read_origin(dir) else {
        return false;
    };
    let Ok(f) = std::fs::File::open(dir.join("layer.bfc")) else {
        return false;
    };
    let footer = crate::bfc::layout::FOOTER_SIZE;
    if origin.size != size || tail.len() < footer {
        return false;
    }
    // Only the index and footer are sure to be local: compare from the index on.
    let foot = &tail[tail.len() - footer..];
    let mut c = crate::bfc::cursor::Cursor::new(dir, foot, size - footer as u64);
    let Ok(f_) = crate::bfc::layout::Footer::decode(&mut c) else {
        return false;
    };
    let from = f_.index_offset.max(at);
    let Some(skip) = from.checked_sub(at).and_then(|s| usize::try_from(s).ok()) else {
        return false;
    };
    let Some(theirs) = tail.get(skip..) else {
        return false;
    };
    let mut mine = vec![0u8; theirs.len()];
    f.read_exact_at(&mut mine, from).is_ok() && mine == theirs
}
