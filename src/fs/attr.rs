//! Node metadata → `fuser::FileAttr`, and what the kernel is told about caching it.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use crate::bfc::Kind;
use crate::overlay::Attr;

/// Entry and attribute timeout, for every node. Lower layers are immutable files, so a cached
/// name or attribute of theirs can never go stale: the kernel keeps them (almost) forever and
/// skips the round trips (`ls -lR`, `find` and path walks then run from the dcache). Upper
/// entries change only through this mount (changing an upper dir behind a mount's back is
/// unsupported, as with overlayfs), and the kernel updates or drops what each create, unlink,
/// rename, link, setattr and write touches, so they keep the long timeout too: a warm walk of a
/// writable union costs what one of the read-only image costs.
pub const TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// The TTL for a node's attributes and entry.
pub fn ttl(_a: &FileAttr) -> Duration {
    TTL
}

/// The attributes of a negative entry: node id 0 tells the kernel "no such name", and it keeps
/// that answer for the entry timeout (a negative dentry) instead of asking again on every
/// lookup of the name (`stat` of a missing file, a `PATH` or include-path search). Names appear
/// only through this mount (a create, mknod, mkdir, symlink, link or rename, each of which turns
/// the kernel's negative dentry into the new entry), so the long timeout is as safe as for
/// positive entries. An ENOENT error instead would leave a dentry valid for no time at all.
pub fn negative() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

/// Owner shown for entries that record none (`-o uid=,gid=`, else the user who mounted).
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

pub fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
    }
}

fn time(ns: i64) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        UNIX_EPOCH.checked_add(d).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(d).unwrap_or(UNIX_EPOCH)
    }
}

/// The kernel decodes `fuse_attr.rdev` with `new_decode_dev`, so encode major/minor that way.
fn kernel_rdev(rdev: u64) -> u32 {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

pub fn file_attr(a: &Attr, owner: Owner) -> FileAttr {
    let mtime = time(a.mtime_ns);
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: time(a.atime_ns),
        mtime,
        ctime: time(a.ctime_ns),
        crtime: mtime,
        kind: file_type(a.kind),
        perm: (a.perm & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid.unwrap_or(owner.uid),
        gid: a.gid.unwrap_or(owner.gid),
        rdev: kernel_rdev(a.rdev),
        blksize: 4096,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdev_round_trips_through_the_kernel_encoding() {
        let dev = libc::makedev(259, 70000);
        let enc = kernel_rdev(dev);
        // new_decode_dev
        let major = (enc & 0xfff00) >> 8;
        let minor = (enc & 0xff) | ((enc >> 12) & 0xfff00);
        assert_eq!((major, minor), (259, 70000));
    }

    #[test]
    fn times_before_the_epoch() {
        assert_eq!(
            time(-1_500_000_000),
            UNIX_EPOCH - Duration::from_millis(1500)
        );
    }
}
