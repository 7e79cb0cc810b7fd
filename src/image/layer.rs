//! Converting one layer: its blob, fetched into the store, becomes a BFC file in one streaming
//! pass, checked against the config's diff_id; the BFC file then replaces the blob.
use super::fetch::fetch_blob;
use super::pull::Progress;
use super::Result;
use crate::atomic_file::AtomicFile;
use crate::bfc::{self, Writer, WriterOptions};
use crate::convert::{self, sanitize::Limits};
use crate::oci::Fetch;
use crate::store::{self, Store};
use oci_spec::image::Descriptor;
use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::path::Path;

/// Fetches and converts one layer unless its BFC file exists. Returns whether it did work.
pub(super) fn pull_layer(
    store: &Store,
    fetcher: &dyn Fetch,
    desc: &Descriptor,
    diff_id: &str,
    wopts: &WriterOptions,
    progress: &dyn Progress,
) -> Result<bool> {
    let digest = desc.digest().to_string();
    let dest = store.layer_path(diff_id)?;
    if dest.exists() {
        progress.finish(&digest, "already present");
        return Ok(false);
    }
    let _lock = store.lock_layer(diff_id)?;
    if dest.exists() {
        progress.finish(&digest, "pulled by another process");
        return Ok(false);
    }
    let blob = fetch_blob(store, fetcher, desc, progress)?;
    convert_with_split(store, &dest, wopts, &blob, desc, diff_id)?;
    // The BFC file replaces the blob; a crash before this line leaves garbage for prune.
    let _ = std::fs::remove_file(&blob);
    progress.finish(&digest, "pulled");
    Ok(true)
}

/// Converts the stored blob `blob` of layer `desc` into the layer file `dest`, and records its
/// tar-split side file (`Store::layer_split_path`), which is published first: a layer file
/// always has its side file, unless it was made before side files existed.
pub(super) fn convert_with_split(
    store: &Store,
    dest: &Path,
    wopts: &WriterOptions,
    blob: &Path,
    desc: &Descriptor,
    diff_id: &str,
) -> Result<()> {
    let split_dest = store.layer_split_path(diff_id)?;
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| store::Error::Io { path: p, source }
    };
    let mut split = AtomicFile::beside(&split_dest)
        .map_err(io(&split_dest))?
        .with_mode(0o644);
    write_bfc_file(dest, wopts, move |w| {
        convert_blob(w, blob, desc, diff_id, b"", Some(split.file()))?;
        // Before the layer file: the same diff_id always has the same tar, so a side file
        // left without its layer file (a crash in between) still fits the next one.
        split.commit(&split_dest).map_err(io(&split_dest))?;
        Ok(())
    })
}

/// Converts the stored blob `blob` of layer `desc` into `w` under `prefix` and checks that the
/// uncompressed stream has digest `diff_id`; with `split`, records the tar-split there too.
pub(super) fn convert_blob<W: Write + Seek>(
    w: &mut Writer<W>,
    blob: &Path,
    desc: &Descriptor,
    diff_id: &str,
    prefix: &[u8],
    split: Option<&mut File>,
) -> Result<()> {
    let digest = desc.digest().to_string();
    let f = File::open(blob).map_err(|source| store::Error::Io {
        path: blob.to_path_buf(),
        source,
    })?;
    let limits = Limits::for_blob(desc.size());
    let stats = match split {
        Some(out) => {
            let mut out = BufWriter::new(out);
            let stats = convert::convert_layer_split(f, w, prefix, &digest, limits, &mut out)?;
            out.flush().map_err(|source| store::Error::Io {
                path: blob.to_path_buf(),
                source,
            })?;
            stats
        }
        None => convert::convert_layer(f, w, prefix, &digest, limits)?,
    };
    convert::check_diff_id(&digest, &stats, diff_id)?;
    Ok(())
}

/// Writes the BFC file `dest` atomically: `fill` adds the entries, then the index and footer are
/// written and the file is fsynced and renamed into place (mode 0644, an ordinary file).
pub(super) fn write_bfc_file(
    dest: &Path,
    opts: &WriterOptions,
    fill: impl FnOnce(&mut Writer<BufWriter<&mut File>>) -> Result<()>,
) -> Result<()> {
    let io = |source| bfc::Error::Io {
        file: dest.to_path_buf(),
        source,
    };
    let mut out = AtomicFile::beside(dest).map_err(io)?.with_mode(0o644);
    {
        let mut w = Writer::new(
            BufWriter::with_capacity(1 << 20, out.file()),
            opts.clone(),
            dest,
        )?;
        fill(&mut w)?;
        w.finish()?.flush().map_err(io)?;
    }
    out.commit(dest).map_err(io)?;
    Ok(())
}
