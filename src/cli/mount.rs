//! `bfcfs mount` and `bfcfs umount`.
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};

use crate::bfc::{self, Container};
use crate::fs::attr::Owner;
use crate::fs::mount::{self, Forked, MountOptions};
use crate::fs::BfcFs;
use crate::overlay::{Layer, Union, WhiteoutSpec};

/// Mount a BFC file read-only (returns once the mount answers)
#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// Stay in the foreground and log to stderr
    #[arg(short, long)]
    pub foreground: bool,
    /// Mount options: ro, allow_other, suid, dev, exec, noexec, uid=N, gid=N, cache_size=SIZE, threads=N
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    #[command(flatten)]
    pub key: super::ReadKeyArgs,
    /// Mount this directory of the container as the root
    #[arg(long, value_name = "PATH")]
    pub subdir: Option<String>,
    /// The .bfc file
    pub file: PathBuf,
    /// An existing directory
    pub mountpoint: PathBuf,
}

/// Unmount a bfcfs mount (also one whose server died)
#[derive(clap::Args, Debug)]
pub struct UmountArgs {
    /// Detach now, finish when the mount is no longer busy
    #[arg(short = 'l', long)]
    pub lazy: bool,
    pub mountpoint: PathBuf,
}

pub fn run_mount(args: MountArgs, verbose: u8) -> anyhow::Result<i32> {
    let opts = MountOptions::parse(&args.options)?;
    let file = std::path::absolute(&args.file)
        .with_context(|| format!("resolving {}", args.file.display()))?;
    let mountpoint = args
        .mountpoint
        .canonicalize()
        .with_context(|| format!("mount point {}", args.mountpoint.display()))?;
    if !mountpoint.is_dir() {
        bail!("mount point {} is not a directory", mountpoint.display());
    }
    let mut container = Container::open(&file)?;
    if container.is_encrypted() {
        let key = super::keys::key_for_encrypted(&args.key, &file)?;
        container.set_key(&key)?;
    }
    container.set_cache_bytes(usize::try_from(opts.cache_size).unwrap_or(usize::MAX));
    let mut layer = Layer::new(Arc::new(container));
    if let Some(sub) = &args.subdir {
        let sub = sub.trim_matches('/');
        if !sub.is_empty() {
            bfc::check_path(sub.as_bytes()).map_err(|why| anyhow!("--subdir {sub}: {why}"))?;
        }
        layer.root = sub.as_bytes().to_vec();
    }
    let union = Union::new(vec![layer], WhiteoutSpec::Typed)?;
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let owner = Owner {
        uid: opts.uid.unwrap_or(uid),
        gid: opts.gid.unwrap_or(gid),
    };
    let fs = BfcFs::new(union, owner);
    let config = opts.fuser_config(&file);
    if args.foreground {
        init_stderr_log(verbose);
        mount::serve(fs, &mountpoint, &config, || {
            log::info!("{} mounted on {}", file.display(), mountpoint.display())
        })
        .with_context(|| format!("mounting {} on {}", file.display(), mountpoint.display()))?;
        return Ok(0);
    }
    match mount::fork_server()? {
        Forked::Parent(pipe) => {
            mount::wait_ready(pipe).map_err(|why| anyhow!(why))?;
            Ok(0)
        }
        Forked::Child(mut readiness) => {
            mount::init_syslog(verbose);
            let r = mount::serve(fs, &mountpoint, &config, || readiness.ready());
            if let Err(e) = &r {
                log::error!(
                    "mounting {} on {}: {e}",
                    file.display(),
                    mountpoint.display()
                );
                readiness.failed(&format!(
                    "mounting {} on {}: {e}",
                    file.display(),
                    mountpoint.display()
                ));
            }
            std::process::exit(i32::from(r.is_err()));
        }
    }
}

pub fn run_umount(args: UmountArgs) -> anyhow::Result<i32> {
    mount::unmount(&args.mountpoint, args.lazy)?;
    Ok(0)
}

fn init_stderr_log(verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let env = env_logger::Env::default().default_filter_or(level);
    let _ = env_logger::Builder::from_env(env).try_init();
}
