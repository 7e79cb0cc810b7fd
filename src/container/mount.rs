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
use crate::lazy::{self, LazyOptions};
use crate::mount::{daemon, log, mountinfo, serve, Forked, MountOptions};
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
    /// This process's hold on the container (the server has its own).
    held: Option<container::Held>,
}

impl Mounted {
    /// Takes a mount that succeeded back when a later step fails: unmounts `mountpoint`
    /// (lazily, so it cannot fail on a busy mount) and removes the container if it was created
    /// for this mount.
    pub fn undo(self, mountpoint: &Path) {
        if let Err(e) = crate::mount::unmount(mountpoint, true) {
            ::log::warn!("{e}");
        }
        Undo {
            held: self.held,
            created: self.created,
            dirs: Vec::new(),
        }
        .run();
    }
}

/// How lazy layers of this mount fetch: `-o bg_rate=`, `-o read_timeout=`, and the registry
/// settings from the environment.
fn lazy_options(o: &MountOptions) -> anyhow::Result<LazyOptions> {
    let d = LazyOptions::default();
    Ok(LazyOptions {
        deadline: o
            .read_timeout
            .map_or(d.deadline, std::time::Duration::from_secs),
        bg_rate: o.bg_rate.unwrap_or(d.bg_rate),
        registry: crate::oci::registry::Options::from_env().map_err(|e| anyhow!(e))?,
    })
}

/// The image's layers: an HTTP(S) URL of a `.bfc` file, a `.bfc` file path, else a store
/// reference.
fn open_image(plan: &Plan<'_>) -> anyhow::Result<image::Opened> {
    let path = Path::new(&plan.image);
    let cache = usize::try_from(plan.options.cache_size).unwrap_or(usize::MAX);
    if lazy::is_url(&plan.image) {
        let store = Store::open(&Store::default_root(plan.root)?)?;
        let mut container = lazy::open_url(&store, &plan.image, &lazy_options(&plan.options)?)
            .with_context(|| format!("opening {}", plan.image))?;
        let local = container.file_name().to_path_buf();
        if container.is_encrypted() {
            let key = (plan.key)(&local)?;
            container.set_key(&key)?;
        }
        container.set_cache_bytes(cache);
        let mut opened = image::file_layers(container.share(), &local)?;
        opened.id = plan.image.clone();
        return Ok(opened);
    }
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
    Ok(image::open_layers(
        &store,
        &plan.image,
        cache,
        &lazy_options(&plan.options)?,
    )?)
}

/// What a mount that fails must undo: the container it created, the upper and work dirs it
/// made. It also holds the container (its lock) for as long as the mount is served.
#[derive(Default)]
struct Undo {
    held: Option<container::Held>,
    created: bool,
    dirs: Vec<PathBuf>,
}

impl Undo {
    fn run(self) {
        if let (Some(held), true) = (self.held, self.created) {
            if let Err(e) = container::discard(held) {
                ::log::warn!("removing the container of a failed mount: {e}");
            }
        }
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// The mount point, absolute, checked to be a directory that is not a mount point already.
fn check_mountpoint(asked: &Path) -> anyhow::Result<PathBuf> {
    let mountpoint = asked
        .canonicalize()
        .with_context(|| format!("mount point {}", asked.display()))?;
    if !mountpoint.is_dir() {
        bail!("mount point {} is not a directory", mountpoint.display());
    }
    if let Some(m) = mountinfo::mount_at(&mountpoint) {
        bail!(
            "{} is already a mount point ({} from {}): unmount it first or choose another directory",
            mountpoint.display(),
            m.fstype,
            m.source.to_string_lossy()
        );
    }
    Ok(mountpoint)
}

/// Mounts `plan` (forking a server unless `foreground`) and returns once the mount answers.
/// A mount that fails leaves nothing behind: no container it created, no upper dir it made.
pub fn mount_image(plan: Plan<'_>) -> anyhow::Result<Mounted> {
    let mountpoint = check_mountpoint(&plan.mountpoint)?;
    let opened = open_image(&plan)?;
    let mut undo = Undo::default();
    let r = build_and_serve(&plan, mountpoint, opened, &mut undo);
    if r.is_err() {
        undo.run();
    }
    r
}

fn build_and_serve(
    plan: &Plan<'_>,
    mountpoint: PathBuf,
    opened: image::Opened,
    undo: &mut Undo,
) -> anyhow::Result<Mounted> {
    let mut opts = plan.options.clone();
    let choice = match &plan.upper {
        UpperChoice::Default if opened.config.is_none() => UpperChoice::None,
        UpperChoice::Default => UpperChoice::Container(None),
        c => c.clone(),
    };
    let (upper, container) = match &choice {
        UpperChoice::None | UpperChoice::Default => (None, None),
        UpperChoice::Dir { upper, work } => {
            undo.dirs = [upper, work]
                .into_iter()
                .filter(|d| !d.exists())
                .cloned()
                .collect();
            (Some((upper.clone(), work.clone())), None)
        }
        UpperChoice::Container(name) => {
            let store = Store::open(&Store::default_root(plan.root)?)?;
            let (held, created) =
                container::open_or_create(&store, name.as_deref(), &opened.id, &plan.image)?;
            let c = held.container.clone();
            undo.held = Some(held);
            undo.created = created;
            (
                Some((c.upper(), c.work())),
                Some((c.state.name.clone(), c.dir.clone())),
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
    // Lazy layers fetch the rest in the background, in the process that serves the mount.
    let layer_files: Vec<Arc<Container>> =
        opened.layers.iter().map(|l| l.container.clone()).collect();
    let bg_rate = lazy_options(&opts)?.bg_rate;
    let background = move || {
        for c in &layer_files {
            c.start_background(bg_rate);
        }
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
    let fs = BfcFs::new(union, owner, opts.n_threads());
    let slot = fs.notifier_slot();
    let what = format!("{} on {}", plan.image, mountpoint.display());
    let mut done = Mounted {
        container: container.map(|c| c.0),
        created: undo.created,
        config: opened.config,
        held: None,
    };
    if plan.foreground {
        log::init_stderr_log(plan.verbose);
        background();
        serve(fs, slot, &source, &mountpoint, &opts, || {
            ::log::info!("mounted {what}")
        })
        .with_context(|| format!("mounting {what}"))?;
        done.held = undo.held.take();
        return Ok(done);
    }
    match daemon::fork_server()? {
        Forked::Parent(pipe) => {
            daemon::wait_ready(pipe).map_err(|why| anyhow!(why))?;
            done.held = undo.held.take();
            Ok(done)
        }
        Forked::Child(mut readiness) => {
            // The server keeps the container's lock (`undo.held`, inherited) until it exits.
            log::init_syslog(plan.verbose);
            background();
            let r = serve(fs, slot, &source, &mountpoint, &opts, || readiness.ready());
            if let Err(e) = &r {
                ::log::error!("mounting {what}: {e}");
                readiness.failed(&format!("mounting {what}: {e}"));
            }
            std::process::exit(i32::from(r.is_err()));
        }
    }
}
