//! Publishing a file atomically: it is written under a temporary name, then fsynced, renamed to
//! its final name, and the directory is fsynced, so the final name only ever shows a complete
//! file. Dropped without `commit`, the temporary file is removed; a killed process leaves only a
//! temporary name, which no reader mistakes for the file.
//!
//! Every layer that writes files (bfc outputs, the store's blobs and refs, container state) uses
//! this one helper; it imports nothing from the crate.
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// A file being written that appears under its final name only at `commit`.
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    mode: Option<u32>,
}

impl AtomicFile {
    /// A temporary file `.NAME.pPID.XXXXXX.tmp` in the directory of `dest` (the same file
    /// system, so the rename is atomic). The pid lets a later process tell a temp file of a
    /// process that is gone (see [`temp_owner`]).
    pub fn beside(dest: &Path) -> io::Result<AtomicFile> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}.p{}.", std::process::id()))
            .suffix(".tmp")
            .tempfile_in(dir)?;
        Ok(AtomicFile { tmp, mode: None })
    }

    /// A temporary file `PREFIX.pPID.XXXXXX` in `dir`, for when the final name is known only at
    /// the end (a blob's digest). `dir` must be on the file system of the destination.
    pub fn in_dir(dir: &Path, prefix: &str) -> io::Result<AtomicFile> {
        let tmp = tempfile::Builder::new()
            .prefix(&temp_prefix(prefix))
            .tempfile_in(dir)?;
        Ok(AtomicFile { tmp, mode: None })
    }

    /// Permission bits the file gets at `commit` (without this it keeps the temporary file's
    /// 0600).
    pub fn with_mode(mut self, mode: u32) -> AtomicFile {
        self.mode = Some(mode);
        self
    }

    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// The temporary file's path, for messages.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Sets the mode, fsyncs the file, renames it to `dest` and fsyncs `dest`'s directory.
    pub fn commit(self, dest: &Path) -> io::Result<()> {
        if let Some(mode) = self.mode {
            use std::os::unix::fs::PermissionsExt;
            self.tmp
                .as_file()
                .set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        self.tmp.as_file().sync_all()?;
        self.tmp.persist(dest).map_err(|e| e.error)?;
        match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => sync_dir(p),
            _ => sync_dir(Path::new(".")),
        }
    }
}

impl AtomicFile {
    /// Renames it to `dest` without any fsync: for files that describe the running system (a
    /// mount's record, its open files), which need not survive a power loss (what they describe
    /// does not) but must be seen by other processes old or new, whole.
    pub fn commit_unsynced(self, dest: &Path) -> io::Result<()> {
        self.tmp.persist(dest).map(drop).map_err(|e| e.error)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tmp.as_file_mut().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tmp.as_file_mut().flush()
    }
}

/// `PREFIX.pPID.`: the start of a temporary name owned by this process.
pub fn temp_prefix(prefix: &str) -> String {
    format!("{prefix}.p{}.", std::process::id())
}

/// The pid recorded in a temporary name made by [`temp_prefix`] or [`AtomicFile::beside`]: the
/// first `.`-separated component `p<digits>`.
pub fn temp_owner(name: &str) -> Option<u32> {
    name.split('.')
        .find_map(|c| {
            c.strip_prefix('p')
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .and_then(|d| d.parse().ok())
}

/// fsyncs a directory so that a rename or removal inside it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_carry_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let a = AtomicFile::beside(&dir.path().join("refs.json")).unwrap();
        let b = AtomicFile::in_dir(dir.path(), "blob").unwrap();
        for f in [&a, &b] {
            let name = f.path().file_name().unwrap().to_str().unwrap().to_string();
            assert_eq!(temp_owner(&name), Some(me), "{name}");
        }
        assert_eq!(temp_owner(".x.bfc.p12.p9.tmp"), Some(12));
        assert_eq!(temp_owner("refs.json"), None);
        assert_eq!(temp_owner("blob.px1.abc"), None);
    }

    #[test]
    fn appears_only_on_commit_with_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bfc");
        let mut f = AtomicFile::beside(&dest).unwrap().with_mode(0o644);
        f.write_all(b"complete").unwrap();
        assert!(!dest.exists());
        f.commit(&dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"complete");
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn dropped_without_commit_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = AtomicFile::in_dir(dir.path(), "blob-").unwrap();
        f.write_all(b"half").unwrap();
        drop(f);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
