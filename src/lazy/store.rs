//! Lazy layers in the store:
//!
//! ```text
//! ROOT/lazy/<key>/layer.bfc    sparse, the remote file's size; holds what has been fetched
//! ROOT/lazy/<key>/present      record of the byte ranges in layer.bfc (bfc/partial.rs)
//! ROOT/lazy/<key>/origin.json  where the rest comes from (no credentials)
//! ```
//! `<key>` is the layer's diff_id hex for registry layers, `url-<sha256 of the URL>` for URLs.
//! A directory is built under a temp name and renamed into place, so `lazy/<key>` always has
//! its head (file header, index, footer) and its record. Once every byte is local and the file
//! has the blob's digest, layer.bfc is renamed to `layers/<diff_id>.bfc` (exactly the file a full
//! pull leaves) and the directory is removed.
use super::source::{Complete, RegistrySource, Retry};
use super::{io_err, Error, LazyOptions, Result};
use crate::atomic_file::{sync_dir, temp_prefix};
use crate::bfc::{self, partial, Container};
use crate::oci::registry::Registry;
use crate::oci::ImageRef;
use crate::store::{sha256_hex, Store};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Where a lazy layer's missing bytes come from.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    /// `registry/repository` the blob is pulled from (registry layers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Blob digest (registry layers): the complete file must have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The layer's diff_id (registry layers): where the complete file goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<String>,
    /// A plain HTTP(S) URL (`mount URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Size of the remote file.
    pub size: u64,
    /// Hosts that may be spoken to over plain HTTP (as the pull was told).
    #[serde(default)]
    pub insecure: Vec<String>,
}

/// The bytes a lazy layer starts with: the file header, and everything from the index on.
pub struct Head {
    pub header: Vec<u8>,
    pub tail_offset: u64,
    pub tail: Vec<u8>,
}

fn lazy_dir(store: &Store) -> PathBuf {
    store.root().join("lazy")
}

/// The directory of lazy layer `key` (`<diff_id hex>` or `url-<hex>`).
pub(super) fn dir_of(store: &Store, key: &str) -> PathBuf {
    lazy_dir(store).join(key)
}

/// Makes lazy layer `key` from its head: a sparse file of `origin.size` bytes holding `head`,
/// its record, and `origin.json`. A layer that is already there is kept.
pub fn create_layer(store: &Store, key: &str, origin: &Origin, head: &Head) -> Result<PathBuf> {
    let top = lazy_dir(store);
    std::fs::create_dir_all(&top).map_err(io_err(&top))?;
    let dest = top.join(key);
    if dest.join("present").exists() {
        return Ok(dest);
    }
    let tmp = top.join(format!(".{}.tmp", temp_prefix(key)));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    let build = || -> Result<()> {
        let file = tmp.join("layer.bfc");
        let f = std::fs::File::create(&file).map_err(io_err(&file))?;
        f.set_len(origin.size).map_err(io_err(&file))?;
        f.write_all_at(&head.header, 0).map_err(io_err(&file))?;
        f.write_all_at(&head.tail, head.tail_offset)
            .map_err(io_err(&file))?;
        f.sync_all().map_err(io_err(&file))?;
        let rec = tmp.join("present");
        partial::create_record(
            &rec,
            &[
                (0, head.header.len() as u64),
                (head.tail_offset, head.tail_offset + head.tail.len() as u64),
            ],
        )
        .map_err(io_err(&rec))?;
        let o = tmp.join("origin.json");
        let mut of = std::fs::File::create(&o).map_err(io_err(&o))?;
        let json = serde_json::to_vec_pretty(origin).map_err(|e| Error::Bad {
            what: o.display().to_string(),
            why: e.to_string(),
        })?;
        of.write_all(&json)
            .and_then(|_| of.sync_all())
            .map_err(io_err(&o))?;
        sync_dir(&tmp).map_err(io_err(&tmp))?;
        Ok(())
    };
    if let Err(e) = build() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, &dest) {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another pull made it first.
        if dest.join("present").exists() {
            return Ok(dest);
        }
        return Err(io_err(&dest)(e));
    }
    sync_dir(&top).map_err(io_err(&top))?;
    Ok(dest)
}

pub(super) fn read_origin(dir: &Path) -> Result<Origin> {
    let p = dir.join("origin.json");
    let bytes = std::fs::read(&p).map_err(io_err(&p))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Bad {
        what: p.display().to_string(),
        why: e.to_string(),
    })
}

/// How much of lazy layer `diff_id` is local: (bytes present, size); `None` when it is not a
/// lazy layer.
pub fn layer_progress(store: &Store, diff_id: &str) -> Option<(u64, u64)> {
    let dir = dir_of(store, sha256_hex(diff_id).ok()?);
    let size = std::fs::metadata(dir.join("layer.bfc")).ok()?.len();
    let have = partial::present_bytes(&dir.join("present")).ok()?;
    Some((have.min(size), size))
}

/// sha256 of a file, as `sha256:<hex>`.
pub(super) fn file_digest(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(crate::digest::sha256_finish(h));
        }
        h.update(&buf[..n]);
    }
}

/// Checks a complete lazy layer against its blob digest and moves it to `layers/`.
fn publish(store: &Store, dir: &Path, digest: &str, diff_id: &str, file: &Path) -> Result<()> {
    let found = file_digest(file).map_err(io_err(file))?;
    if found != digest {
        return Err(Error::Bad {
            what: file.display().to_string(),
            why: format!("complete, but its digest is {found}, not the blob's {digest}"),
        });
    }
    let dest = store.layer_path(diff_id)?;
    let _lock = store.lock_layer(diff_id)?;
    if !dest.exists() {
        std::fs::rename(file, &dest).map_err(io_err(&dest))?;
        sync_dir(&store.layers_dir()).map_err(io_err(&store.layers_dir()))?;
    }
    std::fs::remove_dir_all(dir).map_err(io_err(dir))?;
    sync_dir(&lazy_dir(store)).map_err(io_err(&lazy_dir(store)))?;
    Ok(())
}

/// Opens lazy layer `diff_id` for a mount (`None` when the store has no lazy layer of that
/// name), with a decoded-chunk cache of `cache_bytes`.
pub fn open_layer(
    store: &Store,
    diff_id: &str,
    cache_bytes: usize,
    opts: &LazyOptions,
) -> Result<Option<Arc<Container>>> {
    let hex = sha256_hex(diff_id)?.to_string();
    let dir = dir_of(store, &hex);
    if !dir.join("present").exists() {
        return Ok(None);
    }
    let origin = read_origin(&dir)?;
    let bad = |why: &str| Error::Bad {
        what: dir.join("origin.json").display().to_string(),
        why: why.to_string(),
    };
    let (Some(image), Some(digest)) = (&origin.image, &origin.digest) else {
        return Err(bad("names no registry image and blob"));
    };
    let image_ref: ImageRef = image.parse().map_err(|e| bad(&format!("{e}")))?;
    let mut ropts = opts.registry.clone();
    ropts.insecure.extend(origin.insecure.iter().cloned());
    let registry = Registry::connect(&image_ref, &ropts)?;
    let blob: oci_spec::image::Digest = digest.parse().map_err(|e| bad(&format!("{e}")))?;
    let complete: Complete = {
        let (store, dir, digest, diff_id) = (
            store.clone(),
            dir.clone(),
            digest.clone(),
            diff_id.to_string(),
        );
        Box::new(move |file: &Path| {
            publish(&store, &dir, &digest, &diff_id, file)
                .map_err(|e| crate::error_chain::chain(&e))
        })
    };
    let source = RegistrySource {
        registry,
        digest: blob,
        image: image.clone(),
        via: Mutex::new(None),
        retry: Retry::from(&ropts),
        complete,
    };
    let mut c = Container::open_partial(
        &dir.join("layer.bfc"),
        &dir.join("present"),
        Arc::new(source),
        opts.partial(),
    )?;
    c.set_cache_bytes(cache_bytes);
    Ok(Some(c.share()))
}

/// Reads the head of a BFC file of `size` bytes through `range` (one suffix request of
/// `tail_guess` bytes, then what the index needs beyond it, then the file header), so a mount
/// needs nothing else. `index_at`: where the index starts, when known (one request).
pub fn read_head(
    size: u64,
    index_at: Option<u64>,
    tail_guess: u64,
    range: &dyn Fn(u64, u64) -> std::result::Result<Vec<u8>, String>,
    what: &str,
) -> Result<Head> {
    let bad = |why: String| Error::Bad {
        what: what.to_string(),
        why,
    };
    let footer = bfc::layout::FOOTER_SIZE as u64;
    let header = bfc::layout::HEADER_SIZE as u64;
    if size < header + footer {
        return Err(bad(format!("{size} bytes is too small for a BFC file")));
    }
    let (tail_offset, tail) = match index_at {
        Some(at) if at >= header && at < size => (at, range(at, size - at).map_err(bad)?),
        _ => {
            let guess = tail_guess.clamp(footer, size - header);
            let mut off = size - guess;
            let mut tail = range(off, guess).map_err(bad)?;
            let foot = &tail[tail.len() - footer as usize..];
            let mut c = bfc::cursor::Cursor::new(Path::new(what), foot, size - footer);
            let f = bfc::layout::Footer::decode(&mut c)?;
            if f.index_offset < header || f.index_offset >= size - footer {
                return Err(bad(format!(
                    "footer puts the index at {}, outside the file",
                    f.index_offset
                )));
            }
            if f.index_offset < off {
                let mut more = range(f.index_offset, off - f.index_offset).map_err(bad)?;
                more.extend_from_slice(&tail);
                tail = more;
            } else {
                // Content bytes before the index are not kept: they were not checked.
                tail.drain(..(f.index_offset - off) as usize);
            }
            off = f.index_offset;
            (off, tail)
        }
    };
    let head = range(0, header.min(tail_offset)).map_err(bad)?;
    Ok(Head {
        header: head,
        tail_offset,
        tail,
    })
}

/// Annotations of a BFC layer descriptor (docs/FORMAT.md).
pub const ANNOTATION_DIFF_ID: &str = "io.bfcfs.bfc.diff-id";
pub const ANNOTATION_INDEX_OFFSET: &str = "io.bfcfs.bfc.index.offset";
pub const ANNOTATION_INDEX_LENGTH: &str = "io.bfcfs.bfc.index.length";
pub const ANNOTATION_INDEX_SHA256: &str = "io.bfcfs.bfc.index.sha256";

/// Fetches the head of BFC layer blob `desc` from `registry`: with the index annotations, the
/// index range in one request (checked against its sha256) and the file header; without them,
/// a suffix request finds the index.
pub fn registry_head(
    registry: &Registry,
    desc: &oci_spec::image::Descriptor,
    image: &str,
    retry: Retry,
) -> Result<Head> {
    use crate::oci::registry::range::ByteRange;
    let size = desc.size();
    let digest = desc.digest().clone();
    let what = format!("layer {digest} of {image}");
    let via = Mutex::new(None);
    let range = |offset: u64, len: u64| -> std::result::Result<Vec<u8>, String> {
        retry
            .run(&format!("{what}: bytes {offset}+{len}"), || {
                registry.blob_range(&digest, ByteRange::Span { offset, len }, &via, len)
            })
            .map(|r| r.bytes)
    };
    let ann = desc.annotations().as_ref();
    let get = |k: &str| ann.and_then(|a| a.get(k)).map(String::as_str);
    let bad = |why: String| Error::Bad {
        what: what.clone(),
        why,
    };
    let index_at = match (get(ANNOTATION_INDEX_OFFSET), get(ANNOTATION_INDEX_LENGTH)) {
        (Some(o), Some(l)) => {
            let o: u64 = o
                .parse()
                .map_err(|_| bad(format!("annotation {ANNOTATION_INDEX_OFFSET}={o:?}")))?;
            let l: u64 = l
                .parse()
                .map_err(|_| bad(format!("annotation {ANNOTATION_INDEX_LENGTH}={l:?}")))?;
            if o.checked_add(l) != Some(size) {
                return Err(bad(format!(
                    "the index range {o}+{l} does not end at the blob's size {size}"
                )));
            }
            Some(o)
        }
        _ => None,
    };
    let head = read_head(size, index_at, 64 << 10, &range, &what)?;
    if let (Some(_), Some(want)) = (index_at, get(ANNOTATION_INDEX_SHA256)) {
        let found = crate::digest::sha256_digest(&head.tail);
        if found != want {
            return Err(bad(format!(
                "the index range has digest {found}, the annotation says {want}"
            )));
        }
    }
    Ok(head)
}

/// Checks that the partial file of a freshly made lazy layer opens (header, footer, index
/// checksum); removes it when it does not.
pub fn check_new_layer(dir: &Path) -> Result<()> {
    match Container::open(&dir.join("layer.bfc")) {
        Ok(_) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_dir_all(dir);
            Err(e.into())
        }
    }
}
