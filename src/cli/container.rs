//! `bfcfs bundle`, `bfcfs containers`, `bfcfs rm-container`.
use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::container::{self, Plan, UpperChoice};
use crate::mount::MountOptions;
use crate::store::Store;

/// Mount an image as BUNDLE_DIR/rootfs (read-write, in a container) and write BUNDLE_DIR/config.json for runc
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  bfcfs bundle debian:12 /run/b1 && runc run -b /run/b1 b1     # a fresh container (name printed)
  bfcfs bundle --container dev debian:12 /run/dev             # container dev, kept writes
  bfcfs umount /run/dev/rootfs                                # when runc is done
`bfcfs run` does all of this in one step.")]
pub struct BundleArgs {
    /// Use (or create) this container; default: a fresh one, whose name is printed
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    /// Extra mount options (suid,dev,allow_other are always on)
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// Lazily pulled layers: fetch the rest in the background at most this many bytes/s
    /// (e.g. 4M; 0: off); same as -o bg_rate=
    #[arg(long = "bg-rate", value_name = "RATE")]
    pub bg_rate: Option<String>,
    /// An image in the store, or a .bfc image file
    pub image: String,
    /// Created if missing
    pub bundle_dir: PathBuf,
}

/// List containers
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  bfcfs containers
  bfcfs containers --json | jq -r '.[] | select(.mounted_at == null) | .name'")]
pub struct ContainersArgs {
    /// One JSON array on stdout
    #[arg(long)]
    pub json: bool,
}

/// Remove containers and their upper dirs (refuses one that is mounted unless -f)
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  bfcfs rm-container web
  bfcfs rm-container -f c-1a2b3c4d c-5e6f7a8b   # unmount them first if mounted here

A container that is mounted in another mount namespace (a running runc container) or whose
detached mount is still in use is never removed, -f or not.")]
pub struct RmContainerArgs {
    /// Unmount a container mounted in this mount namespace first
    #[arg(short, long)]
    pub force: bool,
    /// Names of the containers (`bfcfs containers` lists them)
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

/// Commands on containers
#[derive(clap::Subcommand, Debug)]
pub enum ContainerCommand {
    /// Remove every container that is not mounted (nor otherwise in use)
    #[command(after_help = "Example:
  bfcfs container prune")]
    Prune,
}

fn store(root: Option<&Path>) -> anyhow::Result<Store> {
    Ok(Store::open(&Store::default_root(root)?)?)
}

pub fn bundle(root: Option<&Path>, args: BundleArgs, verbose: u8) -> anyhow::Result<i32> {
    let mut o = super::mount::with_bg_rate(&args.options, &args.bg_rate);
    o.push("suid,dev,allow_other".into());
    let key = |file: &Path| super::keys::key_for_encrypted(&Default::default(), file);
    let plan = Plan {
        root,
        image: args.image.clone(),
        mountpoint: args.bundle_dir.join("rootfs"),
        options: MountOptions::parse(&o)?,
        foreground: false,
        upper: UpperChoice::Container(args.container.clone()),
        read_only: false,
        key: &key,
        subdir: None,
        verbose,
    };
    let made = crate::bundle::make(&args.bundle_dir, plan, &Default::default())?;
    println!("{}", made.name);
    Ok(0)
}

pub fn containers(root: Option<&Path>, args: ContainersArgs) -> anyhow::Result<i32> {
    let store = store(root)?;
    let list = container::list(&store)?;
    if args.json {
        let served = crate::mount::registry::list();
        let v: Vec<serde_json::Value> = list
            .iter()
            .map(|c| {
                let at = c.mounted_at();
                // Who serves the mount (a supervised one; see `bfcfs mounts`).
                let r = served.iter().find(|r| Some(&r.mountpoint) == at.as_ref());
                serde_json::json!({
                    "name": c.state.name,
                    "image": c.state.image,
                    "reference": c.state.reference,
                    "created": super::style::json_time(
                        i64::try_from(c.state.created).unwrap_or(i64::MAX)
                    ),
                    "upper": c.upper(),
                    "mounted_at": at,
                    "server_pid": r.map(|r| r.server_pid),
                    "supervisor_pid": r.map(|r| r.supervisor_pid),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!(
        "{:<20} {:<40} {:<26} MOUNTED ON",
        "NAME", "IMAGE", "CREATED"
    );
    for c in list {
        let at = c
            .mounted_at()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "-".into());
        let created = super::style::local_time(i64::try_from(c.state.created).unwrap_or(i64::MAX));
        println!(
            "{:<20} {:<40} {created:<26} {at}",
            c.state.name, c.state.reference
        );
    }
    Ok(0)
}

/// Removes one container, unmounting it first if `force` and it is mounted here.
fn remove_one(store: &Store, name: &str, force: bool) -> anyhow::Result<()> {
    if force {
        if let Some(at) = container::open(store, name)?.mounted_at() {
            container::unmount(&at, false)?;
        }
    }
    container::remove(store, name)?;
    Ok(())
}

pub fn rm_container(root: Option<&Path>, args: RmContainerArgs) -> anyhow::Result<i32> {
    let store = store(root)?;
    let lock = store.lock_exclusive()?;
    let mut failed = Vec::new();
    for name in &args.names {
        match remove_one(&store, name, args.force) {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("bfcfs: {e:#}");
                failed.push(name.as_str());
            }
        }
    }
    drop(lock);
    match failed.as_slice() {
        [] => Ok(0),
        [one] if args.names.len() == 1 => bail!("container {one} was not removed"),
        _ => bail!("not removed: {}", failed.join(", ")),
    }
}

pub fn container_command(root: Option<&Path>, cmd: ContainerCommand) -> anyhow::Result<i32> {
    match cmd {
        ContainerCommand::Prune => prune(root),
    }
}

fn prune(root: Option<&Path>) -> anyhow::Result<i32> {
    let store = store(root)?;
    let lock = store.lock_exclusive()?;
    let (mut removed, mut kept) = (0, 0);
    for c in container::list(&store)? {
        let name = c.state.name;
        match container::hold(&store, &name) {
            Ok(held) => {
                container::discard(held)?;
                println!("{name}");
                removed += 1;
            }
            Err(container::Error::Mounted { .. } | container::Error::InUse { .. }) => kept += 1,
            Err(container::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    drop(lock);
    eprintln!("Removed {removed} containers; {kept} in use kept");
    Ok(0)
}
