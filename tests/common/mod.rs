//! Helpers shared by the integration tests.
#![allow(dead_code)]
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// `../shared/fixtures/upstream-bfc` beside the repository.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/upstream-bfc")
}

pub fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("MANIFEST.json")).expect("MANIFEST.json");
    serde_json::from_str(&text).expect("MANIFEST.json parses")
}

pub fn sha256_hex(data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(data);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The secret a fixture container needs, from its manifest record.
pub fn fixture_key(c: &serde_json::Value) -> Option<bfcfs::bfc::Key> {
    if let Some(p) = c.get("password").and_then(|v| v.as_str()) {
        return Some(bfcfs::bfc::Key::Password(p.as_bytes().to_vec()));
    }
    if let Some(k) = c.get("keyfile").and_then(|v| v.as_str()) {
        return Some(bfcfs::bfc::Key::from_keyfile(&fixtures().join(k)).expect("keyfile"));
    }
    None
}

/// Path to the built `bfcfs` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bfcfs"))
}

/// Runs bfcfs with `args`; returns (exit code, stdout, stderr).
pub fn bfcfs(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(bin())
        .args(args)
        .output()
        .expect("run bfcfs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The names under `store/containers/`, sorted (none when the directory does not exist).
pub fn container_names(store: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store.join("containers"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

pub mod cli;
pub mod raw;
pub mod tree;

/// Waits (without sleeping) until process `pid` has exited: poll(2) on a pidfd.
pub fn wait_exit(pid: i32) {
    // SAFETY: pidfd_open takes a pid and flags; the result is a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        return; // already gone
    }
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; fd is closed after.
    unsafe {
        libc::poll(&mut p, 1, 30_000);
        libc::close(fd);
    }
}

/// (server pid, supervisor pid) of the supervised mount at `mnt`, from `bfcfs mounts --json`.
pub fn served_by(mnt: &Path) -> Option<(i32, i32)> {
    let (code, out, _) = bfcfs(&["mounts", "--json"]);
    assert_eq!(code, 0, "bfcfs mounts --json");
    let v: serde_json::Value = serde_json::from_str(&out).expect("mounts --json parses");
    let row = v
        .as_array()?
        .iter()
        .find(|r| r["mountpoint"].as_str() == mnt.to_str())?;
    Some((
        row["server_pid"].as_i64()? as i32,
        row["supervisor_pid"].as_i64()? as i32,
    ))
}
