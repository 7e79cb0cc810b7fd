//! What is mounted where: `/proc/self/mountinfo` (proc(5)), one parser for every question the
//! commands ask of it (is this a FUSE mount, where is this container mounted).
//!
//! A line reads `36 35 98:0 /root /mnt/point rw,noatime master:1 - ext4 /dev/sda1 rw`: mount id,
//! parent id, device, root, mount point, options, optional fields, `-`, type, source, super
//! options. Paths escape space, tab, newline and backslash as `\ooo` octal.
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

/// One mounted file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the file system's device (one per FUSE connection).
    pub dev: String,
    pub mount_point: PathBuf,
    /// `fuse`, `fuse.bfcfs`, `ext4`, ...
    pub fstype: String,
    /// What the mount was made from (bfcfs: the container dir, upper dir or image).
    pub source: OsString,
}

impl Mount {
    pub fn is_fuse(&self) -> bool {
        self.fstype == "fuse" || self.fstype.starts_with("fuse.")
    }
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &[u8]) -> Vec<Mount> {
    text.split(|&b| b == b'\n').filter_map(parse_line).collect()
}

fn parse_line(line: &[u8]) -> Option<Mount> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let sep = fields.iter().position(|f| *f == b"-")?;
    let (dev, point) = (fields.get(2)?, fields.get(4)?);
    let (fstype, source) = (fields.get(sep + 1)?, fields.get(sep + 2)?);
    Some(Mount {
        dev: String::from_utf8_lossy(dev).into_owned(),
        mount_point: PathBuf::from(OsString::from_vec(unescape(point))),
        fstype: String::from_utf8_lossy(&unescape(fstype)).into_owned(),
        source: OsString::from_vec(unescape(source)),
    })
}

/// The mounts of this process's mount namespace (none if /proc cannot be read).
pub fn mounts() -> Vec<Mount> {
    std::fs::read("/proc/self/mountinfo")
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// The FUSE mount at `mnt` (an absolute path): the top one if several are stacked there.
pub fn fuse_mount_at(mnt: &Path) -> Option<Mount> {
    mounts()
        .into_iter()
        .rfind(|m| m.is_fuse() && m.mount_point == mnt)
}

/// Whether a FUSE file system is mounted at `mnt` (an absolute path).
pub fn is_fuse_mount(mnt: &Path) -> bool {
    fuse_mount_at(mnt).is_some()
}

/// The mount at `mnt` (an absolute path), whatever its type.
pub fn mount_at(mnt: &Path) -> Option<Mount> {
    mounts().into_iter().rfind(|m| m.mount_point == mnt)
}

/// The mount point of the first mount whose source is `source`.
pub fn mounted_at(source: &OsStr) -> Option<PathBuf> {
    mounts()
        .into_iter()
        .find(|m| m.source == source)
        .map(|m| m.mount_point)
}

/// A mount in another mount namespace, seen through one of its processes.
#[derive(Debug, Clone)]
pub struct Foreign {
    pub pid: u32,
    /// The process's name (`/proc/PID/comm`), to say who holds the mount.
    pub comm: String,
    pub mount: Mount,
}

impl std::fmt::Display for Foreign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} in the mount namespace of process {} ({})",
            self.mount.mount_point.display(),
            self.pid,
            self.comm
        )
    }
}

/// The mounts that `keep` selects in every mount namespace but this process's own, one process
/// read per namespace. Namespaces this process may not look into are skipped.
pub fn in_other_namespaces(keep: impl Fn(&Mount) -> bool) -> Vec<Foreign> {
    let ns = |pid: &OsStr| std::fs::read_link(Path::new("/proc").join(pid).join("ns/mnt")).ok();
    let own = ns(OsStr::new("self"));
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in procs.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Some(this) = ns(&name) else { continue };
        if Some(&this) == own.as_ref() || !seen.insert(this) {
            continue;
        }
        let Ok(text) = std::fs::read(e.path().join("mountinfo")) else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        for mount in parse(&text).into_iter().filter(|m| keep(m)) {
            out.push(Foreign {
                pid,
                comm: comm.trim_end().to_string(),
                mount,
            });
        }
    }
    out
}

/// The mounts of `m`'s file system in other mount namespaces that keep it alive at another
/// path: umount2 ends a mount in this namespace only, and a container's root (runc bind-mounts
/// the rootfs in a new namespace and makes it `/`) keeps the file system, and its server, alive.
/// Copies at the same path are not counted, as umount(8) does not count them: a namespace cloned
/// from this one holds them (for a moment, while runc sets up any container), and those that
/// receive this mount's propagation go with it.
pub fn kept_elsewhere(m: &Mount) -> Vec<Foreign> {
    in_other_namespaces(|o| o.dev == m.dev && o.mount_point != m.mount_point)
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if let Some(v) = s
            .get(i + 1..i + 4)
            .filter(|d| s[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Makes `p` absolute without touching the filesystem: a dead FUSE mount fails every stat, so
/// canonicalize cannot be used.
pub fn absolute(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(p)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_unescape_and_absolute() {
        assert_eq!(unescape(br"/mnt/a\040b"), b"/mnt/a b");
        assert_eq!(absolute(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    }

    #[test]
    fn lines_with_and_without_optional_fields() {
        let text = b"22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
            90 29 0:52 / /tmp/a\\040b rw,nosuid shared:5 master:1 - fuse.bfcfs /var/lib/c\\040d rw\n\
            garbage\n";
        let m = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].dev, "0:52");
        assert_eq!(m[1].mount_point, PathBuf::from("/tmp/a b"));
        assert_eq!(m[1].source, OsString::from("/var/lib/c d"));
        assert!(m[1].is_fuse() && !m[0].is_fuse());
    }
}
