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
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::lazy::{self, LazyOptions};
use crate::mount::{
    daemon, log, mountinfo, registry, serve, serve_attached, Attach, Forked, MountOptions,
    Supervised,
};
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

/// The image's layers: a `.bfc` file path, else a store reference; and whether a key was needed.
fn open_image(plan: &Plan<'_>) -> anyhow::Result<(image::Opened, bool)> {
    let mut encrypted = false;
    let opened = open_source(
        &plan.image,
        plan.root,
        plan.subdir.as_deref(),
        &plan.options,
        &mut |file| {
            encrypted = true;
            (plan.key)(file)
        },
    )?;
    Ok((opened, encrypted))
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

/// Starts the background fetch of lazy layers (a no-op for complete ones) and the check of
/// each layer's index checksum that opening left for later (`Container::open_deferred`). Call
/// it in the process that serves the mount: threads do not survive the daemon's fork.
fn background_fetch(
    layers: &[crate::overlay::Layer],
    opts: &MountOptions,
) -> anyhow::Result<impl FnOnce()> {
    let files: Vec<Arc<Container>> = layers.iter().map(|l| l.container.clone()).collect();
    let bg_rate = lazy_options(opts)?.bg_rate;
    Ok(move || {
        for c in &files {
            c.start_index_check();
            c.start_background(bg_rate);
        }
    })
}

/// The layers of `image_name`: an HTTP(S) URL of a `.bfc` file (fetched lazily), a `.bfc` file
/// path, else a store reference.
fn open_source(
    image_name: &str,
    root: Option<&Path>,
    subdir: Option<&str>,
    opts: &MountOptions,
    key: &mut dyn FnMut(&Path) -> anyhow::Result<Key>,
) -> anyhow::Result<image::Opened> {
    let path = Path::new(image_name);
    let cache = usize::try_from(opts.cache_size).unwrap_or(usize::MAX);
    if lazy::is_url(image_name) {
        if subdir.is_some() {
            bail!("--subdir works on local .bfc files");
        }
        let store = Store::open(&Store::default_root(root)?)?;
        let mut container = lazy::open_url(&store, image_name, &lazy_options(opts)?)
            .with_context(|| format!("opening {image_name}"))?;
        let local = container.file_name().to_path_buf();
        if container.is_encrypted() {
            let key = key(&local)?;
            container.set_key(&key)?;
        }
        container.set_cache_bytes(cache);
        let mut opened = image::file_layers(container.share(), &local)?;
        opened.id = image_name.to_string();
        return Ok(opened);
    }
    if image_name.ends_with(".bfc") || path.is_file() {
        let file = std::path::absolute(path).with_context(|| format!("resolving {image_name}"))?;
        let mut container = Container::open_deferred(&file)?;
        if container.is_encrypted() {
            let key = key(&file)?;
            container.set_key(&key)?;
        }
        container.set_cache_bytes(cache);
        let mut opened = image::file_layers(Arc::new(container), &file)?;
        if let Some(sub) = subdir {
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
    if subdir.is_some() {
        bail!("--subdir works on plain .bfc trees, not on images");
    }
    let store = Store::open(&Store::default_root(root)?)?;
    Ok(image::open_layers(
        &store,
        image_name,
        cache,
        &lazy_options(opts)?,
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
    let (opened, encrypted) = open_image(&plan)?;
    let mut undo = Undo::default();
    let r = build_and_serve(&plan, mountpoint, opened, encrypted, &mut undo);
    if r.is_err() {
        undo.run();
    }
    r
}

fn build_and_serve(
    plan: &Plan<'_>,
    mountpoint: PathBuf,
    opened: image::Opened,
    encrypted: bool,
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
    // The mount's source names what it serves: the container dir, the upper dir or the image.
    let source = match (&container, &upper) {
        (Some((_, dir)), _) => dir.clone(),
        (None, Some((u, _))) => std::path::absolute(u)?,
        (None, None) => PathBuf::from(&opened.id),
    };
    let upper = match upper {
        Some((u, w)) => {
            opts.writable = !plan.read_only;
            Some((std::path::absolute(&u)?, std::path::absolute(&w)?))
        }
        None => None,
    };
    let spec = ServeSpec {
        image: opened.id.clone(),
        root: plan.root.map(Path::to_path_buf),
        subdir: plan.subdir.clone(),
        options: opts,
        upper,
        owner: (owner.uid, owner.gid),
        mountpoint: mountpoint.clone(),
        source,
        verbose: plan.verbose,
        what: format!("{} on {}", plan.image, mountpoint.display()),
    };
    let config = opened.config;
    let background = background_fetch(&opened.layers, &spec.options)?;
    let (fs, slot) = build_fs(&spec, opened.layers, opened.spec)?;
    let mut done = Mounted {
        container: container.map(|c| c.0),
        created: undo.created,
        config,
        held: None,
    };
    let what = spec.what.clone();
    if plan.foreground {
        log::init_stderr_log(plan.verbose);
        background();
        serve(fs, slot, &spec.source, &mountpoint, &spec.options, || {
            ::log::info!("mounted {what}")
        })
        .with_context(|| format!("mounting {what}"))?;
        done.held = undo.held.take();
        return Ok(done);
    }
    // Supervised (docs/restart.md) when bfcfs can mount(2) itself and a restarted server can
    // open the image again on its own (an encrypted file's key is not kept anywhere).
    if rustix::process::geteuid().is_root() && !encrypted && supervision_wanted() {
        let record = registry::Record {
            source: plan.image.clone(),
            mountpoint: mountpoint.clone(),
            container: done.container.clone(),
            supervisor_pid: 0,
            supervisor_start: 0,
            server_pid: 0,
            restarts: 0,
            mounted_at: 0,
            server_started_at: 0,
        };
        let lock = undo.held.as_ref().map(|h| h.lock_fd().as_raw_fd());
        let verbose = plan.verbose;
        let first = spec.clone();
        let serve_first = move |attach: Attach, ready: &mut daemon::Readiness| {
            let spec = first;
            log::init_daemon_log(verbose, log_file(spec.root.as_deref()).as_deref());
            background();
            let r = spec.serve_attached(fs, slot, attach, ready);
            if let Err(e) = &r {
                ::log::error!("serving {}: {e}", spec.what);
                ready.failed(&format!("serving {}: {e}", spec.what));
            }
            i32::from(r.is_err())
        };
        start_supervisor(&spec, record, lock, serve_first)
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
            log::init_daemon_log(plan.verbose, log_file(plan.root).as_deref());
            background();
            let r = serve(fs, slot, &spec.source, &mountpoint, &spec.options, || {
                readiness.ready()
            });
            if let Err(e) = &r {
                ::log::error!("mounting {what}: {e}");
                readiness.failed(&format!("mounting {what}: {e}"));
            }
            std::process::exit(i32::from(r.is_err()));
        }
    }
}

/// The file background servers log to when the host has no syslog (`STORE/logs/server.log`).
pub fn log_file(root: Option<&Path>) -> Option<PathBuf> {
    Store::default_root(root).ok().map(|r| log::log_file_in(&r))
}

/// `BFCFS_SUPERVISE=0` mounts without a supervisor (the server holds the connection alone, as
/// before restarts were survivable): for comparisons, and for kernels older than 6.9.
fn supervision_wanted() -> bool {
    std::env::var_os("BFCFS_SUPERVISE").is_none_or(|v| v != "0")
}

/// What a supervised server needs to build the same file system again; it travels as JSON on
/// the server's command line (`bfcfs __serve --spec`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ServeSpec {
    /// The image for good: a manifest digest in the store, or a `.bfc` file's absolute path.
    pub image: String,
    pub root: Option<PathBuf>,
    pub subdir: Option<String>,
    pub options: MountOptions,
    /// Upper and work dir, absolute.
    pub upper: Option<(PathBuf, PathBuf)>,
    pub owner: (u32, u32),
    pub mountpoint: PathBuf,
    /// The mount's source (as mountinfo shows it).
    pub source: PathBuf,
    pub verbose: u8,
    /// "IMAGE on MOUNTPOINT", for messages.
    pub what: String,
}

impl ServeSpec {
    /// Serves `fs` on the FUSE connection `attach` of this mount (a supervised server's).
    fn serve_attached(
        &self,
        fs: BfcFs,
        hooks: crate::fs::Hooks,
        attach: Attach,
        ready: &mut daemon::Readiness,
    ) -> std::io::Result<()> {
        serve_attached(
            fs,
            hooks,
            &self.source,
            &self.mountpoint,
            &self.options,
            attach,
            ready,
        )
    }
}

/// The file system of `spec` over `layers`: the union, with its upper dir (its work dir
/// cleaned of what an interrupted copy-up left).
fn build_fs(
    spec: &ServeSpec,
    layers: Vec<crate::overlay::Layer>,
    whiteouts: crate::overlay::WhiteoutSpec,
) -> anyhow::Result<(BfcFs, crate::fs::Hooks)> {
    let mut union = Union::new(layers, whiteouts)?;
    if let Some((u, w)) = &spec.upper {
        let dir = UpperDir::open(u, w)
            .with_context(|| format!("opening upper dir {} (work {})", u.display(), w.display()))?;
        dir.clean_work()
            .with_context(|| format!("cleaning work dir {}", w.display()))?;
        union = union.with_upper(dir, spec.owner);
    }
    let owner = Owner {
        uid: spec.owner.0,
        gid: spec.owner.1,
    };
    let fs = BfcFs::new(union, owner, spec.options.n_threads());
    let slot = fs.hooks();
    Ok((fs, slot))
}

/// Starts the supervisor of a mount and waits until it reports that the mount answers. A
/// forked child (in its own session, inheriting `lock`, the container's lock) mounts, forks
/// the first server, which runs `serve_first` on what this process built (no exec, no second
/// open of the image), and execs `bfcfs __supervise` (`mount::supervisor::launch`). Call
/// before any thread exists.
fn start_supervisor(
    spec: &ServeSpec,
    record: registry::Record,
    lock: Option<RawFd>,
    serve_first: impl FnOnce(Attach, &mut daemon::Readiness) -> i32,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the bfcfs binary")?;
    let sup = Supervised {
        record,
        fs_source: spec.source.clone(),
        options: spec.options.clone(),
        exe,
        server_args: vec![
            "__serve".into(),
            "--spec".into(),
            serde_json::to_string(spec)?.into(),
        ],
        keep_fd: lock,
    };
    match daemon::fork_server()? {
        Forked::Parent(pipe) => daemon::wait_ready(pipe).map_err(|why| anyhow!(why)),
        Forked::Child(mut ready) => {
            // The supervisor (exec'd by launch) finds its log file here, as `__serve` finds it
            // in its spec.
            if let Some(f) = log_file(spec.root.as_deref()) {
                std::env::set_var(log::LOG_FILE_ENV, f);
            }
            let e = crate::mount::supervisor::launch(sup, &mut ready, serve_first);
            ready.failed(&format!("starting the supervisor: {e}"));
            std::process::exit(1);
        }
    }
}

/// What `bfcfs __supervise` is given by the process that forked the first server.
pub struct SuperviseArgs<'a> {
    pub spec_json: &'a str,
    pub fuse_fd: RawFd,
    pub init_hex: &'a str,
    pub first_pid: u32,
    pub first_ready_fd: RawFd,
}

/// `bfcfs __supervise`: the supervisor process of one mount (see `mount::supervisor`). The
/// mount answers already (`bfcfs mount` has returned): errors go to the log.
pub fn run_supervisor(a: SuperviseArgs<'_>) -> anyhow::Result<i32> {
    log::init_daemon_log(0, None);
    let r = (|| {
        let sup: Supervised = serde_json::from_str(a.spec_json).context("reading --spec")?;
        let first = crate::mount::supervisor::First {
            dev: inherited(a.fuse_fd)?,
            init: crate::mount::supervisor::unhex(a.init_hex)?,
            pid: a.first_pid,
            ready: inherited(a.first_ready_fd)?.into(),
        };
        crate::mount::supervisor::supervise(sup, first).map_err(anyhow::Error::from)
    })();
    match r {
        Ok(()) => Ok(0),
        Err(e) => {
            ::log::error!("supervisor: {e:#}");
            Ok(1)
        }
    }
}

/// A descriptor the parent process passed on (it must be open), now owned here (and closed on exec).
fn inherited(fd: RawFd) -> anyhow::Result<OwnedFd> {
    let flags = rustix::io::fcntl_getfd(
        // SAFETY: only a flag query on a descriptor number; an unopened one fails with EBADF.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
    )
    .with_context(|| format!("descriptor {fd} passed by the parent"))?;
    // SAFETY: the descriptor is open (checked above) and was passed to this process alone by
    // its parent (the supervisor, or the mount command), which keeps no use of it here.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    rustix::io::fcntl_setfd(&owned, flags | rustix::io::FdFlags::CLOEXEC)?;
    Ok(owned)
}

/// What `bfcfs __serve` is given by its supervisor.
pub struct ServeArgs<'a> {
    pub spec_json: &'a str,
    pub fuse_fd: RawFd,
    pub ready_fd: RawFd,
    pub init_hex: &'a str,
    pub granted_hex: Option<&'a str>,
}

/// `bfcfs __serve`: a server of a supervised mount. Opens the image again (it must be the same
/// image: a store digest or a file path), builds the union and serves the connection passed in.
pub fn run_server(a: ServeArgs<'_>) -> anyhow::Result<i32> {
    let mut ready = daemon::Readiness::from_file(inherited(a.ready_fd)?.into());
    let r = (|| {
        let spec: ServeSpec = serde_json::from_str(a.spec_json).context("reading --spec")?;
        log::init_daemon_log(spec.verbose, log_file(spec.root.as_deref()).as_deref());
        let dev = inherited(a.fuse_fd)?;
        let st = rustix::fs::fstat(&dev)?;
        if st.st_rdev != rustix::fs::makedev(10, 229) {
            bail!("descriptor {} is not /dev/fuse", a.fuse_fd);
        }
        let init = crate::mount::supervisor::unhex(a.init_hex)?;
        let granted = a
            .granted_hex
            .map(crate::mount::supervisor::unhex)
            .transpose()?;
        let opened = open_source(
            &spec.image,
            spec.root.as_deref(),
            spec.subdir.as_deref(),
            &spec.options,
            &mut |f| {
                bail!(
                    "{} is encrypted: a supervised server has no key",
                    f.display()
                )
            },
        )?;
        let background = background_fetch(&opened.layers, &spec.options)?;
        let (fs, slot) = build_fs(&spec, opened.layers, opened.spec)?;
        background();
        let attach = Attach { dev, init, granted };
        spec.serve_attached(fs, slot, attach, &mut ready)
            .with_context(|| format!("serving {}", spec.what))
    })();
    match r {
        Ok(()) => Ok(0),
        Err(e) => {
            ::log::error!("{e:#}");
            ready.failed(&format!("{e:#}"));
            Ok(1)
        }
    }
}
