//! `bfcfs mount` and `bfcfs umount`; `mount_image` also serves `bfcfs bundle`.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use oci_spec::image::ImageConfiguration;

use crate::bfc::{self, Container};
use crate::container;
use crate::fs::attr::Owner;
use crate::fs::BfcFs;
use crate::image;
use crate::mount::{self, Forked, MountOptions};
use crate::overlay::Union;
use crate::store::Store;
use crate::upper::UpperDir;

/// Mount an image or a BFC file (read-only, or read-write with an upper dir; returns once the
/// mount answers)
#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// Stay in the foreground and log to stderr
    #[arg(short, long)]
    pub foreground: bool,
    /// Mount options: allow_other, suid, dev, exec, noexec, uid=N, gid=N, cache_size=SIZE, threads=N
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
    /// An image in the store (name[:tag], digest), or a .bfc file (a tree or a single-file image)
    pub image: String,
    /// An existing directory
    pub mountpoint: PathBuf,
}

/// Where the writes of a mount go.
#[derive(Debug, Clone)]
pub enum UpperChoice {
    /// Read-only union.
    None,
    Dir {
        upper: PathBuf,
        work: PathBuf,
    },
    /// A container in the store (None: a fresh one).
    Container(Option<String>),
    /// Neither asked for: a fresh container for an image, read-only for a plain `.bfc` tree
    /// (which is what `mount FILE.bfc` always was).
    Default,
}

/// Everything one mount needs, checked.
#[derive(Debug)]
pub struct Plan {
    pub image: String,
    pub mountpoint: PathBuf,
    pub options: MountOptions,
    pub foreground: bool,
    pub upper: UpperChoice,
    pub read_only: bool,
    pub key: super::ReadKeyArgs,
    pub subdir: Option<String>,
}

/// What a mount made: the container it uses, and the image's config.
#[derive(Debug)]
pub struct Mounted {
    pub container: Option<String>,
    pub created: bool,
    pub config: Option<ImageConfiguration>,
}

pub fn run_mount(root: Option<&Path>, args: MountArgs, verbose: u8) -> anyhow::Result<i32> {
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
        image: args.image,
        mountpoint: args.mountpoint,
        options: MountOptions::parse(&args.options)?,
        foreground: args.foreground,
        upper,
        read_only: args.ro,
        key: args.key,
        subdir: args.subdir,
    };
    let m = mount_image(root, plan, verbose)?;
    if let (Some(name), true) = (m.container, m.created) {
        println!("{name}");
    }
    Ok(0)
}

/// The image's layers: a `.bfc` file path, else a store reference.
fn open_image(root: Option<&Path>, plan: &Plan) -> anyhow::Result<image::Opened> {
    let path = Path::new(&plan.image);
    let cache = usize::try_from(plan.options.cache_size).unwrap_or(usize::MAX);
    if plan.image.ends_with(".bfc") || path.is_file() {
        let file =
            std::path::absolute(path).with_context(|| format!("resolving {}", plan.image))?;
        let mut container = Container::open(&file)?;
        if container.is_encrypted() {
            let key = super::keys::key_for_encrypted(&plan.key, &file)?;
            container.set_key(&key)?;
        }
        container.set_cache_bytes(cache);
        let mut opened = image::file_layers(Arc::new(container), &file)?;
        if let Some(sub) = &plan.subdir {
            let sub = sub.trim_matches('/');
            if !sub.is_empty() {
                bfc::check_path(sub.as_bytes()).map_err(|why| anyhow!("--subdir {sub}: {why}"))?;
            }
            if opened.layers.len() != 1 {
                bail!("--subdir works on plain .bfc trees, not on images");
            }
            opened.layers[0].root = sub.as_bytes().to_vec();
        }
        return Ok(opened);
    }
    if plan.subdir.is_some() {
        bail!("--subdir works on plain .bfc trees, not on images");
    }
    let store = Store::open(&Store::default_root(root)?)?;
    Ok(image::open_layers(&store, &plan.image, cache)?)
}

/// Mounts `plan` (forking a server unless `foreground`) and returns once the mount answers.
pub fn mount_image(root: Option<&Path>, plan: Plan, verbose: u8) -> anyhow::Result<Mounted> {
    let mut opts = plan.options.clone();
    let mountpoint = plan
        .mountpoint
        .canonicalize()
        .with_context(|| format!("mount point {}", plan.mountpoint.display()))?;
    if !mountpoint.is_dir() {
        bail!("mount point {} is not a directory", mountpoint.display());
    }
    let opened = open_image(root, &plan)?;
    let choice = match &plan.upper {
        UpperChoice::Default if opened.config.is_none() => UpperChoice::None,
        UpperChoice::Default => UpperChoice::Container(None),
        c => c.clone(),
    };
    let (upper, container, created) = match &choice {
        UpperChoice::None | UpperChoice::Default => (None, None, false),
        UpperChoice::Dir { upper, work } => (Some((upper.clone(), work.clone())), None, false),
        UpperChoice::Container(name) => {
            let store = Store::open(&Store::default_root(root)?)?;
            let (c, created) =
                container::open_or_create(&store, name.as_deref(), &opened.id, &plan.image)?;
            if let Some(at) = c.mounted_at() {
                bail!(
                    "container {} is already mounted on {}",
                    c.state.name,
                    at.display()
                );
            }
            (
                Some((c.upper(), c.work())),
                Some((c.state.name.clone(), c.dir.clone())),
                created,
            )
        }
    };
    let (uid, gid) = (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    let owner = Owner {
        uid: opts.uid.unwrap_or(uid),
        gid: opts.gid.unwrap_or(gid),
    };
    let mut union = Union::new(opened.layers, opened.spec)?;
    // The mount's source names what it serves: the container dir, the upper dir or the image.
    let source = match (&container, &upper) {
        (Some((_, dir)), _) => dir.clone(),
        (None, Some((u, _))) => std::path::absolute(u)?,
        (None, None) => PathBuf::from(&opened.id),
    };
    if let Some((u, w)) = &upper {
        let dir = UpperDir::open(u, w)
            .with_context(|| format!("opening upper dir {} (work {})", u.display(), w.display()))?;
        dir.clean_work()
            .with_context(|| format!("cleaning work dir {}", w.display()))?;
        union = union.with_upper(dir, (owner.uid, owner.gid));
        opts.writable = !plan.read_only;
    }
    let fs = BfcFs::new(union, owner);
    let what = format!("{} on {}", plan.image, mountpoint.display());
    let done = Mounted {
        container: container.map(|c| c.0),
        created,
        config: opened.config,
    };
    if plan.foreground {
        mount::log::init_stderr_log(verbose);
        mount::serve(fs, &source, &mountpoint, &opts, || {
            log::info!("mounted {what}")
        })
        .with_context(|| format!("mounting {what}"))?;
        return Ok(done);
    }
    match mount::fork_server()? {
        Forked::Parent(pipe) => {
            mount::wait_ready(pipe).map_err(|why| anyhow!(why))?;
            Ok(done)
        }
        Forked::Child(mut readiness) => {
            mount::log::init_syslog(verbose);
            let r = mount::serve(fs, &source, &mountpoint, &opts, || readiness.ready());
            if let Err(e) = &r {
                log::error!("mounting {what}: {e}");
                readiness.failed(&format!("mounting {what}: {e}"));
            }
            std::process::exit(i32::from(r.is_err()));
        }
    }
}

/// Unmount a bfcfs mount (also one whose server died)
#[derive(clap::Args, Debug)]
pub struct UmountArgs {
    /// Detach now, finish when the mount is no longer busy
    #[arg(short = 'l', long)]
    pub lazy: bool,
    pub mountpoint: PathBuf,
}

pub fn run_umount(args: UmountArgs) -> anyhow::Result<i32> {
    mount::unmount(&args.mountpoint, args.lazy)?;
    Ok(0)
}
