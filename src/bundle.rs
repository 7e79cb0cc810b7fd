//! An OCI runtime bundle for an image: `config.json` is the runtime-spec default (what `runc
//! spec` writes) filled from the image config — Entrypoint + Cmd, Env, WorkingDir, and User as
//! uid:gid resolved through the image's own /etc/passwd and /etc/group — and what `run`
//! overrides ([`Overrides`]: command, environment, working dir, user, terminal, bind mounts).
use anyhow::Context;
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{MountBuilder, ProcessBuilder, RootBuilder, Spec, UserBuilder};
use std::path::{Path, PathBuf};

use crate::container::{self, Plan};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("image has neither Entrypoint nor Cmd: nothing to run")]
    NoCommand,
    #[error("user {user:?}: {why}")]
    User { user: String, why: String },
    #[error("building the runtime spec: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
    #[error("{path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Reads `rel` (e.g. `etc/passwd`) inside `rootfs` with symlinks resolved as if `rootfs` were
/// `/`, so an image's `/etc/passwd -> /host/secret` cannot reach outside its root. Missing: None.
fn read_in_root(rootfs: &Path, rel: &str) -> Result<Option<String>> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    let io = |e: std::io::Error| Error::Io {
        path: format!("{}/{rel}", rootfs.display()),
        source: e,
    };
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io(e.into()))?;
    let fd = match openat2(
        &root,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(io(e.into())),
    };
    let mut s = String::new();
    use std::io::Read;
    std::fs::File::from(fd)
        .take(4 << 20)
        .read_to_string(&mut s)
        .map_err(io)?;
    Ok(Some(s))
}

/// `name:x:uid:gid:...` lines of a passwd or group file: (name, id, gid-or-members).
fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
}

/// Resolves an image `User` (`""`, `uid`, `uid:gid`, `name`, `name:group`, `uid:group`, ...)
/// into (uid, gid, additional gids).
pub fn resolve_user(user: &str, rootfs: &Path) -> Result<(u32, u32, Vec<u32>)> {
    if user.is_empty() {
        return Ok((0, 0, vec![]));
    }
    let bad = |why: String| Error::User {
        user: user.to_string(),
        why,
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_in_root(rootfs, "etc/passwd")?.unwrap_or_default();
    let group = read_in_root(rootfs, "etc/group")?.unwrap_or_default();
    let (uid, name, primary) = match u.parse::<u32>() {
        Ok(uid) => {
            let rec = records(&passwd)
                .find(|r| r.get(2).and_then(|x| x.parse::<u32>().ok()) == Some(uid));
            let primary = rec
                .as_ref()
                .and_then(|r| r.get(3))
                .and_then(|x| x.parse().ok());
            (
                uid,
                rec.and_then(|r| r.first().map(|s| s.to_string())),
                primary,
            )
        }
        Err(_) => {
            let r = records(&passwd)
                .find(|r| r.first() == Some(&u))
                .ok_or_else(|| bad(format!("no user {u} in the image's /etc/passwd")))?;
            let uid = r
                .get(2)
                .and_then(|x| x.parse().ok())
                .ok_or_else(|| bad("malformed passwd line".into()))?;
            let gid = r.get(3).and_then(|x| x.parse().ok());
            (uid, Some(u.to_string()), gid)
        }
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => records(&group)
                .find(|r| r.first() == Some(&g))
                .and_then(|r| r.get(2).and_then(|x| x.parse().ok()))
                .ok_or_else(|| bad(format!("no group {g} in the image's /etc/group")))?,
        },
        None => primary.unwrap_or(0),
    };
    let mut extra = Vec::new();
    if let (Some(name), None) = (&name, g) {
        for r in records(&group) {
            let members = r.get(3).copied().unwrap_or("");
            if members.split(',').any(|m| m == name) {
                if let Some(id) = r.get(2).and_then(|x| x.parse::<u32>().ok()) {
                    if id != gid && !extra.contains(&id) {
                        extra.push(id);
                    }
                }
            }
        }
    }
    Ok((uid, gid, extra))
}

/// The runtime spec for running `config`'s default command on `rootfs` (a path relative to the
/// bundle, normally "rootfs", written as `root.path`).
pub fn runtime_spec(config: &ImageConfiguration, rootfs: &Path, hostname: &str) -> Result<Spec> {
    let c = config.config().clone().unwrap_or_default();
    let mut args: Vec<String> = c.entrypoint().clone().unwrap_or_default();
    args.extend(c.cmd().clone().unwrap_or_default());
    if args.is_empty() {
        return Err(Error::NoCommand);
    }
    let mut env: Vec<String> = c.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    let cwd = c
        .working_dir()
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    let (uid, gid, extra) = resolve_user(c.user().as_deref().unwrap_or(""), rootfs)?;
    let mut user = UserBuilder::default().uid(uid).gid(gid);
    if !extra.is_empty() {
        user = user.additional_gids(extra);
    }
    let base = Spec::default();
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user.build()?)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(
            base.process()
                .as_ref()
                .and_then(|p| p.capabilities().clone())
                .unwrap_or_default(),
        )
        .rlimits(
            base.process()
                .as_ref()
                .and_then(|p| p.rlimits().clone())
                .unwrap_or_default(),
        )
        .no_new_privileges(true)
        .build()?;
    let mut spec = base;
    spec.set_process(Some(process));
    spec.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(false)
            .build()?,
    ));
    spec.set_hostname(Some(hostname.to_string()));
    Ok(spec)
}

/// A host path bind-mounted into the container (`run -v SRC:DST[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Absolute path on the host.
    pub source: PathBuf,
    /// Absolute path in the container.
    pub destination: String,
    pub read_only: bool,
}

/// What `run` changes in the image's config (docker's rules: `--entrypoint` also drops the
/// image's Cmd; a command given replaces the image's Cmd) and in the runtime spec.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's Cmd when not empty.
    pub cmd: Vec<String>,
    /// `K=V`, replacing the image's value of K.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// The process gets a terminal (runc allocates a pty).
    pub terminal: bool,
    pub binds: Vec<Bind>,
}

impl Overrides {
    /// `config` with the overridden Entrypoint, Cmd, Env, WorkingDir and User.
    pub fn apply(&self, config: &ImageConfiguration) -> ImageConfiguration {
        let mut config = config.clone();
        let mut c = config.config().clone().unwrap_or_default();
        if let Some(e) = &self.entrypoint {
            c.set_entrypoint(Some(e.clone()));
            c.set_cmd(None);
        }
        if !self.cmd.is_empty() {
            c.set_cmd(Some(self.cmd.clone()));
        }
        let mut env = c.env().clone().unwrap_or_default();
        for kv in &self.env {
            let key = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
            env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
            env.push(kv.clone());
        }
        c.set_env(Some(env));
        if let Some(w) = &self.workdir {
            c.set_working_dir(Some(w.clone()));
        }
        if let Some(u) = &self.user {
            c.set_user(Some(u.clone()));
        }
        config.set_config(Some(c));
        config
    }

    /// Sets the terminal flag and adds the bind mounts to `spec`.
    fn apply_to_spec(&self, spec: &mut Spec) -> Result<()> {
        if let Some(p) = spec.process_mut() {
            p.set_terminal(Some(self.terminal));
        }
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        for b in &self.binds {
            let mode = if b.read_only { "ro" } else { "rw" };
            mounts.push(
                MountBuilder::default()
                    .destination(&b.destination)
                    .typ("bind")
                    .source(&b.source)
                    .options(vec!["rbind".to_string(), "rprivate".into(), mode.into()])
                    .build()?,
            );
        }
        spec.set_mounts(Some(mounts));
        Ok(())
    }
}

/// What [`make`] made.
#[derive(Debug, Clone)]
pub struct Made {
    /// The container's name.
    pub name: String,
    /// Whether the container was created for this bundle.
    pub created: bool,
}

/// Mounts an image at `BUNDLE_DIR/rootfs` (in the container `plan` names, or a fresh one) and
/// writes `BUNDLE_DIR/config.json` (the image's config with `overrides`). A bundle that fails leaves
/// nothing behind: no mount, no container made for it, no directory it created, no config.json.
/// A `BUNDLE_DIR/rootfs` that is already a mount point is refused, and left as it was.
pub fn make(bundle_dir: &Path, mut plan: Plan<'_>, overrides: &Overrides) -> anyhow::Result<Made> {
    let rootfs = bundle_dir.join("rootfs");
    let made: Vec<PathBuf> = [bundle_dir, &rootfs]
        .into_iter()
        .filter(|d| !d.exists())
        .map(Path::to_path_buf)
        .collect();
    plan.mountpoint = rootfs.clone();
    let r = std::fs::create_dir_all(&rootfs)
        .with_context(|| format!("creating {}", rootfs.display()))
        .and_then(|()| container::mount_image(plan))
        .and_then(|m| {
            let name = m.container.clone().unwrap_or_default();
            let config = overrides.apply(&m.config.clone().unwrap_or_default());
            let p = bundle_dir.join("config.json");
            let written = runtime_spec(&config, &rootfs, &name)
                .and_then(|mut spec| overrides.apply_to_spec(&mut spec).map(|()| spec))
                .context("building config.json")
                .and_then(|spec| {
                    spec.save(&p)
                        .with_context(|| format!("writing {}", p.display()))
                });
            match written {
                Ok(()) => Ok(Made {
                    name,
                    created: m.created,
                }),
                Err(e) => {
                    let _ = std::fs::remove_file(&p);
                    m.undo(&rootfs);
                    Err(e)
                }
            }
        });
    if r.is_err() {
        for d in made.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
    r
}
