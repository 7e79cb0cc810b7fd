//! The handle journal of a supervised mount: what the kernel holds open, so that a server that
//! takes the connection over (docs/restart.md) knows each inode's passthrough backing id and its
//! cached-mode opens. One line per change, each appended with a single write(2) (O_APPEND), so a
//! killed server leaves whole lines; a takeover reads it and replaces it (atomically) with the
//! live state, and so does a server whose journal has grown to several times that state.
//!
//! ```text
//! p FH INO ID    handle FH of inode INO passes through to backing id ID
//! c FH INO       handle FH of inode INO is in cached mode (FH 0: a lower file read-only, as
//!                servers before the `l` line gave out)
//! l FH INO       handle FH of inode INO is a lower file read-only (cached mode)
//! r FH INO       handle FH of inode INO is released
//! ```
//! It describes the kernel's state, which a reboot ends, so nothing is fsynced (/run is usually a
//! tmpfs): a killed server only needs its lines written, the replacement only needs the rename.
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::atomic_file::AtomicFile;

/// One change of the kernel's open files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Passthrough { fh: u64, ino: u64, id: u32 },
    Cached { fh: u64, ino: u64 },
    Lower { fh: u64, ino: u64 },
    Released { fh: u64, ino: u64 },
}

impl Entry {
    fn line(&self) -> String {
        match *self {
            Entry::Passthrough { fh, ino, id } => format!("p {fh} {ino} {id}\n"),
            Entry::Cached { fh, ino } => format!("c {fh} {ino}\n"),
            Entry::Lower { fh, ino } => format!("l {fh} {ino}\n"),
            Entry::Released { fh, ino } => format!("r {fh} {ino}\n"),
        }
    }

    fn parse(line: &str) -> Option<Entry> {
        let mut w = line.split(' ');
        let kind = w.next()?;
        let fh = w.next()?.parse().ok()?;
        let ino = w.next()?.parse().ok()?;
        let e = match kind {
            "p" => Entry::Passthrough {
                fh,
                ino,
                id: w.next()?.parse().ok()?,
            },
            "c" => Entry::Cached { fh, ino },
            "l" => Entry::Lower { fh, ino },
            "r" => Entry::Released { fh, ino },
            _ => return None,
        };
        w.next().is_none().then_some(e)
    }
}

/// The journal file, open for appending.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Lines appended since the file was last written whole.
    appended: usize,
    /// An append failed (logged once).
    failed: bool,
}

/// Lines a journal may reach before it is rewritten, at least (then: 4 × the live state).
const REWRITE_AT: usize = 4096;

fn open_append(path: &Path) -> io::Result<File> {
    File::options().append(true).create(true).open(path)
}

impl Journal {
    /// The entries in the journal at `path` (none when it does not exist). A line that does not
    /// parse is skipped with a warning (naming the file and line).
    pub fn read(path: &Path) -> io::Result<Vec<Entry>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            match Entry::parse(line) {
                Some(e) => out.push(e),
                None => log::warn!(
                    "{}:{}: not a journal line: {line:.60}",
                    path.display(),
                    n + 1
                ),
            }
        }
        Ok(out)
    }

    /// Replaces the journal at `path` with `live` (atomically) and opens it for appending.
    pub fn create(path: &Path, live: &[Entry]) -> io::Result<Journal> {
        write_whole(path, live)?;
        Ok(Journal {
            path: path.to_path_buf(),
            file: open_append(path)?,
            appended: 0,
            failed: false,
        })
    }

    /// Appends `e` (one write). A failure is logged once; the journal then misses entries, so
    /// a later takeover may not know every open file (docs/restart.md).
    pub fn append(&mut self, e: Entry) {
        self.appended += 1;
        if let Err(err) = self.file.write_all(e.line().as_bytes()) {
            if !self.failed {
                log::error!("appending to {}: {err}", self.path.display());
                self.failed = true;
            }
        }
    }

    /// Whether the file has grown enough over `live` entries to be rewritten.
    pub fn wants_rewrite(&self, live: usize) -> bool {
        self.appended >= REWRITE_AT.max(4 * live)
    }

    /// Replaces the file with `live` (atomically); appends continue in the new file.
    pub fn rewrite(&mut self, live: &[Entry]) {
        match write_whole(&self.path, live).and_then(|()| open_append(&self.path)) {
            Ok(f) => {
                self.file = f;
                self.appended = 0;
            }
            Err(e) => log::warn!("rewriting {}: {e}", self.path.display()),
        }
    }
}

fn write_whole(path: &Path, live: &[Entry]) -> io::Result<()> {
    let mut f = AtomicFile::beside(path)?;
    let mut text = String::new();
    for e in live {
        text.push_str(&e.line());
    }
    f.file().write_all(text.as_bytes())?;
    f.commit_unsynced(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_junk_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let first = Entry::Passthrough {
            fh: 1 << 60,
            ino: 7,
            id: 3,
        };
        let mut j = Journal::create(&path, &[first]).unwrap();
        j.append(Entry::Cached { fh: 0, ino: 9 });
        j.append(Entry::Lower { fh: 8, ino: 9 });
        j.append(Entry::Released {
            fh: 1 << 60,
            ino: 7,
        });
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"p 1 2\nx 1 2\np 1 2 3 4\nc 5 6\n")
            .unwrap();
        assert_eq!(
            Journal::read(&path).unwrap(),
            [
                first,
                Entry::Cached { fh: 0, ino: 9 },
                Entry::Lower { fh: 8, ino: 9 },
                Entry::Released {
                    fh: 1 << 60,
                    ino: 7
                },
                Entry::Cached { fh: 5, ino: 6 },
            ]
        );
        j.rewrite(&[Entry::Cached { fh: 5, ino: 6 }]);
        j.append(Entry::Released { fh: 5, ino: 6 });
        assert_eq!(
            Journal::read(&path).unwrap(),
            [
                Entry::Cached { fh: 5, ino: 6 },
                Entry::Released { fh: 5, ino: 6 }
            ]
        );
        assert!(Journal::read(&dir.path().join("none")).unwrap().is_empty());
    }
}
