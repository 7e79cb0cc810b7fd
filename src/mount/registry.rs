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
    /// The supervisor's start time (`/proc/PID/stat`, clock ticks since boot): with the pid,
    /// who it is. 0 in records of older versions.
    #[serde(default)]
    pub supervisor_start: u64,
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

/// Whether the record's supervisor is alive: the process with its pid started when it did and
/// is not a zombie. Not its command line: the supervisor records the mount before it execs
/// `bfcfs __supervise`, and a reader in between must not take the record for stale. Records of
/// older versions (no start time) fall back to the command line.
fn alive(r: &Record) -> bool {
    let pid = r.supervisor_pid;
    if r.supervisor_start == 0 {
        return std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == b"__supervise"));
    }
    proc_start(pid).is_some_and(|(state, start)| state != b'Z' && start == r.supervisor_start)
}

/// State and start time (clock ticks since boot) of process `pid`, from `/proc/PID/stat`.
fn proc_start(pid: u32) -> Option<(u8, u64)> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields follow its last ')'.
    let rest = &stat[stat.iter().rposition(|&b| b == b')')? + 1..];
    let mut fields = rest.split(|&b| b == b' ').filter(|f| !f.is_empty());
    let state = *fields.next()?.first()?;
    // Field 22 (starttime); `state` was field 3.
    let start = std::str::from_utf8(fields.nth(18)?).ok()?.parse().ok()?;
    Some((state, start))
}

/// This process's start time, for `Record::supervisor_start`.
pub fn own_start() -> u64 {
    proc_start(std::process::id()).map_or(0, |(_, start)| start)
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
            Ok(r) if alive(&r) => out.push(r),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: u32, start: u64) -> Record {
        Record {
            source: "x.bfc".into(),
            mountpoint: PathBuf::from("/mnt"),
            container: None,
            supervisor_pid: pid,
            supervisor_start: start,
            server_pid: 0,
            restarts: 0,
            mounted_at: 0,
            server_started_at: 0,
        }
    }

    /// A supervisor that recorded its mount but has not exec'd `bfcfs __supervise` yet (this
    /// test process: its command line is the test binary's) is alive; the same pid with another
    /// start time (a reused pid) is not; an older record without a start time goes by the
    /// command line.
    #[test]
    fn a_supervisor_is_known_by_pid_and_start_time_not_by_its_command_line() {
        let me = std::process::id();
        let start = own_start();
        assert_ne!(start, 0, "start time read from /proc/self/stat");
        assert!(alive(&record(me, start)));
        assert!(!alive(&record(me, start + 1)));
        assert!(
            !alive(&record(me, 0)),
            "no __supervise in a test's command line"
        );
        assert!(!alive(&record(u32::MAX - 1, start)));
    }

    #[test]
    fn records_of_older_versions_still_parse() {
        let old = r#"{"source":"x.bfc","mountpoint":"/mnt","container":null,"supervisor_pid":7,
            "server_pid":8,"restarts":0,"mounted_at":1,"server_started_at":1}"#;
        let r: Record = serde_json::from_str(old).unwrap();
        assert_eq!((r.supervisor_pid, r.supervisor_start), (7, 0));
    }
}
