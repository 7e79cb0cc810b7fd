//! `bfcfs run`: mount an image in a container (as `bundle` does, into a temporary bundle dir),
//! run it with `runc run` in the foreground with this process's stdin, stdout and stderr, then
//! unmount; exits with the container's exit status.
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use super::UsageError;
use crate::bundle::{Bind, Overrides};
use crate::container::{self, Plan, UpperChoice};
use crate::mount::MountOptions;
use crate::store::Store;

/// Run a command in a container made from an image, with runc
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  bfcfs run --rm app:v1                       # the image's Entrypoint + Cmd
  bfcfs run --rm -e DEBUG=1 -w /srv app:v1 -- sh -c 'ls; exit 3'
  bfcfs run --name web --volume /srv/data:/data:ro app:v1
  bfcfs run --rm -i debian:12 bash             # a shell (a terminal when stdin is one)

The exit status is the container's (128+N when a signal N ended it). Without --rm the container
stays in the store with what the command wrote: `bfcfs containers` lists it, `bfcfs run --name
NAME` runs in it again, `bfcfs rm-container NAME` removes it.")]
pub struct RunArgs {
    /// Remove the container when the command exits
    #[arg(long)]
    pub rm: bool,
    /// Run in this container (created if new, reused with what it holds if it exists)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Set an environment variable (repeatable; replaces the image's value)
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory in the container
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User in the container: NAME, UID, NAME:GROUP or UID:GID (names from the image's /etc/passwd)
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// Run CMD instead of the image's Entrypoint (the image's Cmd is dropped too)
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    /// Bind-mount a host path into the container, read-only with :ro (repeatable; no short
    /// -v: that is the global --verbose)
    #[arg(long = "volume", value_name = "SRC:DST[:ro]")]
    pub volumes: Vec<String>,
    /// Accepted for podman's spelling; stdin is always passed through
    #[arg(short = 'i', long = "interactive")]
    pub interactive: bool,
    /// OCI runtime to run the bundle with
    #[arg(long, value_name = "PATH", default_value = "runc")]
    pub runtime: PathBuf,
    /// Extra mount options for the rootfs (suid,dev,allow_other are always on)
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// An image in the store (NAME[:TAG], a digest or a digest prefix), or a .bfc image file
    pub image: String,
    /// Command and arguments instead of the image's Cmd (after `--` if they start with '-')
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

/// `SRC:DST[:ro|:rw]` → a bind mount with an absolute host path.
fn parse_volume(v: &str) -> anyhow::Result<Bind> {
    let bad = |why: &str| UsageError(format!("--volume {v}: {why}"));
    let mut parts = v.split(':');
    let (Some(src), Some(dst)) = (parts.next(), parts.next()) else {
        return Err(bad("want SRC:DST[:ro]").into());
    };
    let read_only = match parts.next() {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(o) => return Err(bad(&format!("unknown option {o:?} (ro or rw)")).into()),
    };
    if parts.next().is_some() {
        return Err(bad("want SRC:DST[:ro]").into());
    }
    if !dst.starts_with('/') {
        return Err(bad("the container path must be absolute").into());
    }
    let source = Path::new(src)
        .canonicalize()
        .with_context(|| format!("--volume {v}: host path {src}"))?;
    Ok(Bind {
        source,
        destination: dst.to_string(),
        read_only,
    })
}

fn overrides(a: &RunArgs) -> anyhow::Result<Overrides> {
    for e in &a.env {
        if !e.contains('=') || e.starts_with('=') {
            return Err(UsageError(format!("-e {e}: want KEY=VALUE")).into());
        }
    }
    Ok(Overrides {
        entrypoint: a.entrypoint.as_ref().map(|e| vec![e.clone()]),
        cmd: a.command.clone(),
        env: a.env.clone(),
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        terminal: std::io::stdin().is_terminal(),
        binds: a
            .volumes
            .iter()
            .map(|v| parse_volume(v))
            .collect::<anyhow::Result<_>>()?,
    })
}

/// Ignores the signals a terminal sends to the whole foreground process group while the runtime
/// runs: the runtime passes them on to the container, and this process must live on to unmount.
fn ignore_terminal_signals() {
    for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: SIG_IGN installs no handler code; signal(2) only changes this process's
        // disposition (the runtime, already started, keeps its own).
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
}

/// The exit code of the runtime: its own code, or 128+N when signal N ended it.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

pub fn run(root: Option<&Path>, a: RunArgs, verbose: u8) -> anyhow::Result<i32> {
    let overrides = overrides(&a)?;
    let mut o = a.options.clone();
    o.push("suid,dev,allow_other".into());
    let options = MountOptions::parse(&o)?;
    let store = Store::open(&Store::default_root(root)?)?;
    // Not under the store's tmp/: `prune` empties that, and this holds a mounted rootfs.
    let tmp = tempfile::Builder::new()
        .prefix("bfcfs-run-")
        .tempdir()
        .context("creating a temporary bundle directory")?;
    let bundle_dir = tmp.path().to_path_buf();
    let key = |file: &Path| super::keys::key_for_encrypted(&Default::default(), file);
    let plan = Plan {
        root,
        image: a.image.clone(),
        mountpoint: bundle_dir.join("rootfs"),
        options,
        foreground: false,
        upper: UpperChoice::Container(a.name.clone()),
        read_only: false,
        key: &key,
        subdir: None,
        verbose,
    };
    let made = crate::bundle::make(&bundle_dir, plan, &overrides)?;
    let id = format!("bfcfs-{}-{}", made.name, std::process::id());
    let status = Command::new(&a.runtime)
        .arg("run")
        .arg("--bundle")
        .arg(&bundle_dir)
        .arg(&id)
        .spawn()
        .map(|mut child| {
            ignore_terminal_signals();
            child.wait()
        });
    let rootfs = bundle_dir.join("rootfs");
    let unmounted = container::unmount(&rootfs, false).or_else(|e| {
        eprintln!("bfcfs: {e}; detaching it");
        container::unmount(&rootfs, true)
    });
    match unmounted {
        Ok(()) => drop(tmp),
        Err(e) => {
            // Never delete through a mount that is still there.
            let kept = tmp.keep();
            eprintln!("bfcfs: {e}; {} is left in place", kept.display());
        }
    }
    let status = match status {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => {
            Err(anyhow::Error::new(e).context(format!("waiting for {}", a.runtime.display())))
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "starting {} (is runc installed? `--runtime PATH` names another)",
            a.runtime.display()
        ))),
    };
    if a.rm || (status.is_err() && made.created) {
        let lock = store.lock_exclusive()?;
        if let Err(e) = container::remove(&store, &made.name) {
            eprintln!("bfcfs: removing container {}: {e}", made.name);
        }
        drop(lock);
    } else if made.created && a.name.is_none() {
        eprintln!(
            "bfcfs: container {0} keeps what the command wrote (`bfcfs rm-container {0}` removes it)",
            made.name
        );
    }
    Ok(exit_code(status?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_want_an_absolute_container_path_and_ro_or_rw() {
        let b = parse_volume("/tmp:/data:ro").unwrap();
        assert!(b.read_only && b.destination == "/data" && b.source.is_absolute());
        assert!(!parse_volume("/tmp:/data").unwrap().read_only);
        for bad in ["/tmp", "/tmp:data", "/tmp:/data:rx", "/tmp:/d:ro:x"] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
        assert!(parse_volume("/no/such/dir:/d").is_err());
    }
}
