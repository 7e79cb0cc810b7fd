//! `mount.bfcfs`: the mount(8) helper, so `mount -t fuse.bfcfs image.bfc /mnt -o allow_other` and
//! /etc/fstab lines work. Cargo builds it as `mount-bfcfs` (a crate name cannot hold a dot); install
//! it as /sbin/mount.bfcfs (for `-t bfcfs`) and /sbin/mount.fuse.bfcfs (for `-t fuse.bfcfs`: mount(8)
//! looks for `mount.fuse.bfcfs` before falling back to `mount.fuse`), next to or with `bfcfs` on PATH.
//!
//! mount(8) runs `mount.bfcfs SRC DIR [-sfnvrw] [-N NS] [-o OPTIONS] [-t TYPE]`. This turns that into
//! `bfcfs mount [-o OPTIONS] [-K F] [--password-file F] [--subdir P] SRC DIR` and execs it; `bfcfs
//! mount` returns only once the mount answers, so mount(8) returns when the mount is ready.
//! Options mount(8) or fstab add that mean nothing to bfcfs (`rw`, `defaults`, `noauto`, `user`,
//! `nofail`, `_netdev`, `x-*`, ...) are dropped; `keyfile=`, `password_file=` and `subdir=` become
//! the matching `bfcfs mount` flags.
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{exit, Command};

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-o") => options.extend(it.next().map(|o| o.to_string_lossy().into_owned())),
            Some("-t" | "-N") => {
                it.next();
            }
            Some(s) if s.starts_with('-') && s.len() > 1 => {} // -s -f -n -v -r -w -i: nothing to do
            _ => positional.push(a),
        }
    }
    let [source, target] = positional.as_slice() else {
        eprintln!("usage: mount.bfcfs FILE.bfc MOUNTPOINT [-o OPTIONS]");
        exit(1);
    };
    let mut cmd = Command::new(bfcfs_binary());
    cmd.arg("mount");
    let mut pass = Vec::new();
    for opt in options.iter().flat_map(|o| o.split(',')) {
        match opt.split_once('=') {
            Some(("keyfile", f)) => {
                cmd.arg("-K").arg(f);
            }
            Some(("password_file", f)) => {
                cmd.arg("--password-file").arg(f);
            }
            Some(("subdir", p)) => {
                cmd.arg("--subdir").arg(p);
            }
            _ if ignored(opt) => {}
            _ => pass.push(opt),
        }
    }
    if !pass.is_empty() {
        cmd.arg("-o").arg(pass.join(","));
    }
    cmd.arg(source).arg(target);
    let err = cmd.exec();
    eprintln!("mount.bfcfs: running {:?}: {err}", cmd.get_program());
    exit(1);
}

/// Options that mount(8) and fstab use for themselves.
fn ignored(opt: &str) -> bool {
    matches!(
        opt,
        "" | "rw"
            | "defaults"
            | "auto"
            | "noauto"
            | "user"
            | "nouser"
            | "users"
            | "owner"
            | "group"
            | "nofail"
            | "_netdev"
            | "sync"
            | "async"
            | "loop"
    ) || opt.starts_with("x-")
        || opt.starts_with("comment=")
}

/// `bfcfs` next to this program's real location (so a symlink in /sbin finds it), else from PATH.
fn bfcfs_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("bfcfs")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("bfcfs"))
}
