//! `bfcfs bundle`, `bfcfs containers`, `bfcfs rm-container`.
use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::container::{self, Plan, UpperChoice};
use crate::mount::MountOptions;
use crate::store::Store;

/// Mount an image as BUNDLE_DIR/rootfs (read-write, in a container) and write BUNDLE_DIR/config.json for runc
#[derive(clap::Args, Debug)]
pub struct BundleArgs {
    /// Use (or create) this container; default: a fresh one, whose name is printed
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
    /// Extra mount options (suid,dev,allow_other are always on)
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// An image in the store, or a .bfc image file
    pub image: String,
    /// Created if missing
    pub bundle_dir: PathBuf,
}

/// List containers
#[derive(clap::Args, Debug)]
pub struct ContainersArgs {
    /// One JSON array on stdout
    #[arg(long)]
    pub json: bool,
}

/// Remove a container and its upper dir (refuses while it is mounted: unmount it first)
#[derive(clap::Args, Debug)]
pub struct RmContainerArgs {
    pub name: String,
}

fn store(root: Option<&Path>) -> anyhow::Result<Store> {
    Ok(Store::open(&Store::default_root(root)?)?)
}

pub fn bundle(root: Option<&Path>, args: BundleArgs, verbose: u8) -> anyhow::Result<i32> {
    let mut o = args.options.clone();
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
    let name = crate::bundle::make(&args.bundle_dir, plan)?;
    println!("{name}");
    Ok(0)
}

pub fn containers(root: Option<&Path>, args: ContainersArgs) -> anyhow::Result<i32> {
    let store = store(root)?;
    let list = container::list(&store)?;
    if args.json {
        let v: Vec<serde_json::Value> = list
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.state.name,
                    "image": c.state.image,
                    "reference": c.state.reference,
                    "created": c.state.created,
                    "upper": c.upper(),
                    "mounted_at": c.mounted_at(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!("{:<20} {:<40} MOUNTED ON", "NAME", "IMAGE");
    for c in list {
        let at = c
            .mounted_at()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "-".into());
        println!("{:<20} {:<40} {at}", c.state.name, c.state.reference);
    }
    Ok(0)
}

pub fn rm_container(root: Option<&Path>, args: RmContainerArgs) -> anyhow::Result<i32> {
    let store = store(root)?;
    let lock = store.lock_exclusive()?;
    let r = container::remove(&store, &args.name);
    drop(lock);
    if let Err(e) = r {
        bail!(e);
    }
    Ok(0)
}
