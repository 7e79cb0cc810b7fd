//! One mount of an image, as `bfcfs mount` and `bfcfs bundle` ask for it: open the image's layers
//! (a `.bfc` file or an image in the store), choose where writes go (none, an upper dir, a
//! container in the store), build the union and serve it, in the foreground or in a forked server
//! that reports through the readiness pipe.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use oci_spec::image::ImageConfiguration;

use crate::bfc::{self, Container, Key};
use crate::container;
use crate::fs::attr::Owner;
use crate::fs::BfcFs;
use crate::image;
use crate::mount::{daemon, log, serve, Forked, MountOptions};
use crate::overlay::Union;
use crate::store::Store;
use crate::upper::UpperDir;

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

/// Gives the key of an encrypted `.bfc` file (asked only when the file is encrypted).
pub type KeyFor<'a> = &'a dyn Fn(&Path) -> anyhow::Result<Key>;

/// Everything one mount needs, checked.
pub struct Plan<'a> {
    /// The store root given on the command line, if any.
    pub root: Option<&'a Path>,
    pub image: String,
    pub mountpoint: PathBuf,
    pub options: MountOptions,
    pub foreground: bool,
    pub upper: UpperChoice,
    pub read_only: bool,
    pub key: KeyFor<'a>,
    pub subdir: Option<String>,
    /// Log level of the server (the count of `-v`).
    pub verbose: u8,
}

/// What a mount made: the container it uses, and the image's config.
#[derive(Debug)]
pub struct Mounted {
    pub container: Option<String>,
    pub created: bool,
    pub config: Option<ImageConfiguration>,
}

/// The image's layers: a `.bfc` file path, else a store reference.
fn open_image(plan: &Plan<'_>) -> anyhow::Result<image::Opened> {
    let path = Path::new(&plan.image);
    let cache = usize::try_from(plan.options.cache_size).unwrap_or(usize::MAX);
    if plan.image.ends_with(".bfc") || path.is_file() {
        let file =
            std::path::absolute(path).with_context(|| format!("resolving {}", plan.image))?;
        let mut container = Container::open(&file)?;
        if container.is_encrypted() {
            let key = (plan.key)(&file)?;
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
    let store = Store::open(&Store::default_root(plan.root)?)?;
    Ok(image::open_layers(&store, &plan.image, cache)?)
}

/// Mounts `plan` (forking a server unless `foreground`) and returns once the mount answers.
pub fn mount_image(plan: Plan<'_>) -> anyhow::Result<Mounted> {
    let mut opts = plan.options.clone();
    let mountpoint = plan
        .mountpoint
        .canonicalize()
        .with_context(|| format!("mount point {}", plan.mountpoint.display()))?;
    if !mountpoint.is_dir() {
        bail!("mount point {} is not a directory", mountpoint.display());
    }
    let opened = open_image(&plan)?;
    let choice = match &plan.upper {
        UpperChoice::Default if opened.config.is_none() => UpperChoice::None,
        UpperChoice::Default => UpperChoice::Container(None),
        c => c.clone(),
    };
    let (upper, container, created) = match &choice {
        UpperChoice::None | UpperChoice::Default => (None, None, false),
        UpperChoice::Dir { upper, work } => (Some((upper.clone(), work.clone())), None, false),
        UpperChoice::Container(name) => {
            let store = Store::open(&Store::default_root(plan.root)?)?;
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
    let owner = Owner {
        uid: opts
            .uid
            .unwrap_or_else(|| rustix::process::getuid().as_raw()),
        gid: opts
            .gid
            .unwrap_or_else(|| rustix::process::getgid().as_raw()),
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
        log::init_stderr_log(plan.verbose);
        serve(fs, &source, &mountpoint, &opts, || {
            ::log::info!("mounted {what}")
        })
        .with_context(|| format!("mounting {what}"))?;
        return Ok(done);
    }
    match daemon::fork_server()? {
        Forked::Parent(pipe) => {
            daemon::wait_ready(pipe).map_err(|why| anyhow!(why))?;
            Ok(done)
        }
        Forked::Child(mut readiness) => {
            log::init_syslog(plan.verbose);
            let r = serve(fs, &source, &mountpoint, &opts, || readiness.ready());
            if let Err(e) = &r {
                ::log::error!("mounting {what}: {e}");
                readiness.failed(&format!("mounting {what}: {e}"));
            }
            std::process::exit(i32::from(r.is_err()));
        }
    }
}
