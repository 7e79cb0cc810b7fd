//! Garbage collection: delete blobs and layers that nothing live references, and leftovers in
//! `tmp/` and `layers/` from killed pulls. The caller computes what is live (from the reference
//! index and the containers, see `image.rs`) and holds the store's exclusive lock, so no pull is
//! running and every temp file is garbage.
use super::{io_err, sync_dir, Lock, Result, Store};
use std::collections::HashSet;
use std::fs;
use std::path::Path;

/// What a collection removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub blobs: u64,
    pub layers: u64,
    pub temp_files: u64,
    pub bytes: u64,
}

fn size_of(path: &Path) -> u64 {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::read_dir(path)
            .map(|rd| rd.flatten().map(|e| size_of(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

fn remove(path: &Path, report: &mut Report) -> Result<()> {
    let bytes = size_of(path);
    let r = if fs::symlink_metadata(path)
        .map(|m| m.is_dir())
        .unwrap_or(false)
    {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match r {
        Ok(()) => {
            report.bytes += bytes;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

impl Store {
    /// Removes every blob not in `live_blobs` and every layer not in `live_layers` (both sets hold
    /// bare hex digests), plus everything in `tmp/`. `_lock` proves the exclusive lock is held.
    pub fn collect_garbage(
        &self,
        _lock: &Lock,
        live_blobs: &HashSet<String>,
        live_layers: &HashSet<String>,
    ) -> Result<Report> {
        let mut report = Report::default();
        let blobs = self.blobs_dir();
        for e in fs::read_dir(&blobs).map_err(io_err(&blobs))? {
            let e = e.map_err(io_err(&blobs))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !live_blobs.contains(&name) {
                remove(&e.path(), &mut report)?;
                report.blobs += 1;
            }
        }
        sync_dir(&blobs)?;
        let layers = self.layers_dir();
        for e in fs::read_dir(&layers).map_err(io_err(&layers))? {
            let e = e.map_err(io_err(&layers))?;
            let name = e.file_name().to_string_lossy().into_owned();
            match name.strip_suffix(".bfc") {
                Some(hex) if live_layers.contains(hex) => {}
                Some(_) if super::sha256_hex(&name[..name.len() - 4]).is_ok() => {
                    remove(&e.path(), &mut report)?;
                    report.layers += 1;
                }
                _ => {
                    remove(&e.path(), &mut report)?;
                    report.temp_files += 1;
                }
            }
        }
        sync_dir(&layers)?;
        let tmp = self.tmp_dir();
        for e in fs::read_dir(&tmp).map_err(io_err(&tmp))? {
            let e = e.map_err(io_err(&tmp))?;
            remove(&e.path(), &mut report)?;
            report.temp_files += 1;
        }
        Ok(report)
    }
}
