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

/// A temp dir holding a bfcfs store (`DIR/store`), and bfcfs runs against that store.
pub struct StoreDir {
    _tmp: tempfile::TempDir,
    /// The temp dir.
    pub root: PathBuf,
    /// `ROOT/store`, as `--root` takes it.
    pub store: String,
}

impl StoreDir {
    pub fn new() -> StoreDir {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let store = root.join("store").display().to_string();
        StoreDir {
            _tmp: tmp,
            root,
            store,
        }
    }

    /// `ROOT/rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Runs `bfcfs --root STORE args...`: (code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let mut all = vec!["--root", &self.store];
        all.extend_from_slice(args);
        bfcfs(&all)
    }

    /// Expects exit 0; returns stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "bfcfs {args:?} failed: {err}");
        out
    }

    /// Expects a clean failure (exit 1 or 2); returns stderr.
    #[track_caller]
    pub fn fails(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert!(
            code == 1 || code == 2,
            "bfcfs {args:?} should fail cleanly, got {code}\nstdout: {out}\nstderr: {err}"
        );
        err
    }

    /// Expects exit `want` exactly; returns stderr.
    #[track_caller]
    pub fn fails_with(&self, want: i32, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(
            code, want,
            "bfcfs {args:?} should fail\nstdout: {out}\nstderr: {err}"
        );
        err
    }
}

/// Runs a tool to its end and asserts that it succeeded (its stderr in the message).
#[track_caller]
pub fn tool_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Copies `docker://REFERENCE` (plain HTTP) with skopeo into the OCI layout `WORK/lay` and
/// unpacks it with umoci into `WORK/bundle`; returns the unpacked rootfs.
pub fn unpack_with_umoci(reference: &str, work: &Path) -> PathBuf {
    let lay = format!("{}:t", work.join("lay").display());
    tool_ok(
        std::process::Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("oci:{lay}")),
    );
    let bundle = work.join("bundle");
    tool_ok(
        std::process::Command::new("umoci")
            .args(["unpack", "--image", &lay])
            .arg(&bundle),
    );
    bundle.join("rootfs")
}

/// The processes that have `path` open (a mount's server holds its file or directory).
pub fn holders(path: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).ok().as_deref() == Some(path))
        {
            out.push(pid);
        }
    }
    out
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
pub mod runc;
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

/// The content of entry `i` of `c`.
pub fn read_entry(c: &bfcfs::bfc::Container, i: usize) -> Vec<u8> {
    let mut v = Vec::new();
    std::io::Read::read_to_end(&mut c.open_reader(i).unwrap(), &mut v).unwrap();
    v
}

/// The content of the entry at `path` in `c`.
pub fn read_path(c: &bfcfs::bfc::Container, path: &str) -> Vec<u8> {
    let i = c
        .find(path.as_bytes())
        .unwrap_or_else(|| panic!("{path} missing"));
    read_entry(c, i)
}
