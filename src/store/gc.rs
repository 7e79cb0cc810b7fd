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

/// Whether process `pid` still exists (this process always does).
fn alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
}

/// Whether `name` in the store root or a container directory is a temp file (`.NAME.….tmp`).
fn hidden_temp(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// The layer a name in `layers/` belongs to: `<hex>.bfc` (true) or its side file
/// `<hex>.tar-split` (false); `None` for anything else (a temp file).
fn layer_file_hex(name: &str) -> Option<(&str, bool)> {
    let (hex, bfc) = match name.strip_suffix(".bfc") {
        Some(h) => (h, true),
        None => (name.strip_suffix(".tar-split")?, false),
    };
    super::sha256_hex(hex).ok().map(|h| (h, bfc))
}

impl Store {
    /// Removes temp files whose writer is gone: `tmp/*`, `layers/` names that are not
    /// `<hex>.bfc`, `.….tmp` files in the root (the refs index) and in container directories.
    /// A name without a pid (an older version's) or with a live pid is kept unless `all` (the
    /// caller holds the exclusive lock, so no pull runs). Best effort: a file that cannot be
    /// removed is logged and left. Returns the number removed. `_lock` proves a lock is held.
    pub fn sweep_temp_files(&self, _lock: &Lock, all: bool) -> u64 {
        self.sweep(&|name: &str| match crate::atomic_file::temp_owner(name) {
            Some(pid) => !alive(pid),
            None => all,
        })
    }

    /// Removes the temp files of this process (it was interrupted and is about to exit). No
    /// lock is needed: nobody else writes or removes a live process's temp files.
    pub fn remove_own_temp_files(&self) -> u64 {
        let me = std::process::id();
        self.sweep(&|name: &str| crate::atomic_file::temp_owner(name) == Some(me))
    }

    /// Removes the temp files (in `tmp/`, `layers/`, the root and container directories) whose
    /// names `doomed` accepts.
    fn sweep(&self, doomed: &dyn Fn(&str) -> bool) -> u64 {
        let mut removed = 0;
        let mut sweep = |dir: &Path, is_temp: &dyn Fn(&str) -> bool| {
            let Ok(rd) = fs::read_dir(dir) else { return };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !is_temp(&name) || !doomed(&name) {
                    continue;
                }
                let mut r = Report::default();
                match remove(&e.path(), &mut r) {
                    Ok(()) => removed += 1,
                    Err(err) => log::warn!(
                        "leaving temp file {}: {}",
                        e.path().display(),
                        crate::error_chain::chain(&err)
                    ),
                }
            }
        };
        sweep(&self.tmp_dir(), &|_| true);
        sweep(&self.layers_dir(), &|n| layer_file_hex(n).is_none());
        sweep(&self.root, &hidden_temp);
        if let Ok(rd) = fs::read_dir(self.containers_dir()) {
            for d in rd.flatten() {
                sweep(&d.path(), &hidden_temp);
            }
        }
        removed
    }

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
            match layer_file_hex(&name) {
                Some((hex, _)) if live_layers.contains(hex) => {}
                Some((_, bfc)) => {
                    remove(&e.path(), &mut report)?;
                    report.layers += u64::from(bfc);
                }
                None => {
                    remove(&e.path(), &mut report)?;
                    report.temp_files += 1;
                }
            }
        }
        sync_dir(&layers)?;
        // Lazily pulled layers (lazy/<diff_id hex>/) go with their layer; URL caches
        // (lazy/url-…) stay; half-made ones (lazy/.….tmp) of dead processes go.
        if let Ok(rd) = fs::read_dir(self.root.join("lazy")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let doomed = match super::sha256_hex(&name) {
                    Ok(hex) => !live_layers.contains(hex),
                    Err(_) => crate::atomic_file::temp_owner(name.trim_start_matches('.'))
                        .is_some_and(|pid| !alive(pid)),
                };
                if doomed {
                    remove(&e.path(), &mut report)?;
                    report.layers += 1;
                }
            }
        }
        let tmp = self.tmp_dir();
        for e in fs::read_dir(&tmp).map_err(io_err(&tmp))? {
            let e = e.map_err(io_err(&tmp))?;
            remove(&e.path(), &mut report)?;
            report.temp_files += 1;
        }
        // Temp files of the refs index and of container state: those of live processes stay
        // (a mount may be writing its state), the rest go.
        report.temp_files += self.sweep_temp_files(_lock, false);
        Ok(report)
    }
}
