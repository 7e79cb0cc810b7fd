//! Who serves what: one record per supervised mount in /run/bfcfs/mounts/SUPERVISOR_PID.json,
//! written (atomically) by the supervisor whenever its server changes, read by `bfcfs mounts`,
//! `bfcfs containers` and `bfcfs restart`. Records describe running processes, so nothing is
//! fsynced (/run is usually a tmpfs); a record whose supervisor is gone is stale and removed by
//! the next reader.
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the records are (`BFCFS_RUN_DIR` overrides, for tests that must not see other mounts).
pub fn dir() -> PathBuf {
    std::env::var_os("BFCFS_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/bfcfs"))
        .join("mounts")
}

/// One supervised mount.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    /// What is mounted, as the user named it (image reference or `.bfc` file).
    pub source: String,
    pub mountpoint: PathBuf,
    /// The container whose upper dir takes the writes, if any.
    pub container: Option<String>,
    pub supervisor_pid: u32,
    /// The process serving requests now (0 while none does).
    pub server_pid: u32,
    /// Servers started after the first (crashes and handovers).
    pub restarts: u64,
    /// When the mount was made and when its current server started (seconds since the epoch).
    pub mounted_at: u64,
    pub server_started_at: u64,
}

fn path_of(pid: u32) -> PathBuf {
    dir().join(format!("{pid}.json"))
}

/// The handle journal the servers of supervisor `pid` keep (`fs::handles`).
pub fn journal_of(pid: u32) -> PathBuf {
    dir().join(format!("{pid}.handles"))
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Record {
    /// Writes (replaces) this record.
    pub fn save(&self) -> io::Result<()> {
        let d = dir();
        std::fs::create_dir_all(&d)?;
        let mut f = crate::atomic_file::AtomicFile::in_dir(&d, ".record")?;
        std::io::Write::write_all(f.file(), &serde_json::to_vec(self)?)?;
        f.commit_unsynced(&path_of(self.supervisor_pid))
    }

    /// Removes this record and the mount's handle journal (the mount is gone).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(path_of(self.supervisor_pid));
        let _ = std::fs::remove_file(journal_of(self.supervisor_pid));
    }

    /// Seconds since the mount was made.
    pub fn uptime(&self) -> u64 {
        now().saturating_sub(self.mounted_at)
    }
}

/// Whether `pid` is a live supervisor (a zombie has an empty command line; a reused pid runs
/// something else).
fn alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == b"__supervise"))
}

/// Every supervised mount whose supervisor is alive, by mount point; stale records are removed.
pub fn list() -> Vec<Record> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir()) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Ok(text) = std::fs::read(&p) else {
            continue;
        };
        match serde_json::from_slice::<Record>(&text) {
            Ok(r) if alive(r.supervisor_pid) => out.push(r),
            Ok(r) => {
                let _ = std::fs::remove_file(&p);
                let _ = std::fs::remove_file(journal_of(r.supervisor_pid));
            }
            Err(e) => log::warn!("{}: {e}", p.display()),
        }
    }
    out.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
    out
}

/// The record of the mount at `mountpoint`, if a supervisor holds it.
pub fn at(mountpoint: &Path) -> Option<Record> {
    let want = super::mountinfo::absolute(mountpoint);
    list().into_iter().find(|r| r.mountpoint == want)
}
