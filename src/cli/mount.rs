//! `bfcfs mount` and `bfcfs umount`: arguments to a `mount::Plan`, and the output.
use std::path::{Path, PathBuf};

use crate::container::{self, Plan, UpperChoice};
use crate::mount::MountOptions;

/// Mount an image or a BFC file (read-only, or read-write with an upper dir; returns once the
/// mount answers)
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  bfcfs mount backup.bfc /mnt/b                     # a .bfc tree, read-only
  bfcfs mount --ro debian:12 /mnt/deb               # an image in the store, read-only
  bfcfs mount --container dev debian:12 /mnt/dev    # writable; writes kept in container dev
  bfcfs mount --upper /srv/up debian:12 /mnt/up     # writable; writes in /srv/up (overlayfs format)
  bfcfs mount -f -o allow_other,cache_size=256M app.bfc /mnt/app   # in the foreground
  bfcfs mount https://example.org/trees/docs.bfc /mnt/docs   # fetched as it is read
  bfcfs umount /mnt/dev")]
pub struct MountArgs {
    /// Stay in the foreground and log to stderr
    #[arg(short, long)]
    pub foreground: bool,
    /// Mount options: allow_other, suid, dev, exec, noexec, uid=N, gid=N, cache_size=SIZE, threads=N, readers=N
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    #[command(flatten)]
    pub key: super::ReadKeyArgs,
    /// Mount this directory of a plain .bfc file as the root
    #[arg(long, value_name = "PATH")]
    pub subdir: Option<String>,
    /// Writable upper directory (kernel overlayfs format) on top of the image
    #[arg(long, value_name = "DIR", conflicts_with = "container")]
    pub upper: Option<PathBuf>,
    /// Work directory for --upper, on the same file system (default: DIR.work next to it)
    #[arg(long, value_name = "DIR", requires = "upper")]
    pub work: Option<PathBuf>,
    /// Keep the upper dir in the store as container NAME (created if new)
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    /// Read-only: no upper dir is created; with --upper/--container, show it without writing
    #[arg(long)]
    pub ro: bool,
    /// Lazily pulled layers and URLs: fetch the rest in the background at most this many
    /// bytes/s (e.g. 4M; 0: off); same as -o bg_rate=
    #[arg(long = "bg-rate", value_name = "RATE")]
    pub bg_rate: Option<String>,
    /// An image in the store (name[:tag], digest), a .bfc file (a tree or a single-file image),
    /// or the http(s):// URL of a .bfc file on a server that answers range requests
    pub image: String,
    /// An existing directory
    pub mountpoint: PathBuf,
}

pub fn run_mount(root: Option<&Path>, args: MountArgs, verbose: u8) -> anyhow::Result<i32> {
    let key_args = args.key.clone();
    let key = move |file: &Path| super::keys::key_for_encrypted(&key_args, file);
    let upper = match (&args.upper, &args.container) {
        (Some(u), _) => {
            let work = match &args.work {
                Some(w) => w.clone(),
                None => {
                    let mut w = u.clone().into_os_string();
                    w.push(".work");
                    PathBuf::from(w)
                }
            };
            UpperChoice::Dir {
                upper: u.clone(),
                work,
            }
        }
        (None, Some(c)) => UpperChoice::Container(Some(c.clone())),
        (None, None) if args.ro => UpperChoice::None,
        (None, None) => UpperChoice::Default,
    };
    let plan = Plan {
        root,
        image: args.image,
        mountpoint: args.mountpoint,
        options: MountOptions::parse(&with_bg_rate(&args.options, &args.bg_rate))?,
        foreground: args.foreground,
        upper,
        read_only: args.ro,
        key: &key,
        subdir: args.subdir,
        verbose,
    };
    let m = container::mount_image(plan)?;
    if let (Some(name), true) = (m.container, m.created) {
        println!("{name}");
    }
    Ok(0)
}

/// `-o` options with `--bg-rate RATE` added as `bg_rate=RATE`.
pub fn with_bg_rate(options: &[String], rate: &Option<String>) -> Vec<String> {
    let mut o = options.to_vec();
    if let Some(r) = rate {
        o.push(format!("bg_rate={r}"));
    }
    o
}

/// Unmount a bfcfs mount (also one whose server died)
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  bfcfs umount /mnt/b
  bfcfs umount --lazy /mnt/b     # busy: detach now, finish when the last user lets go")]
pub struct UmountArgs {
    /// Detach now, finish when the mount is no longer busy
    #[arg(short = 'l', long)]
    pub lazy: bool,
    /// Where the image or file is mounted
    pub mountpoint: PathBuf,
}

pub fn run_umount(args: UmountArgs) -> anyhow::Result<i32> {
    container::unmount(&args.mountpoint, args.lazy)?;
    Ok(0)
}
