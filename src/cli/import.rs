//! `bfcfs import` (a directory → a one-layer image) and `bfcfs tag`.
use std::path::{Path, PathBuf};

use super::UsageError;
use crate::image::{self, Change};
use crate::store::Store;

/// Make a one-layer image from a directory (a rootfs, a build output)
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  bfcfs import ./rootfs app:v1
  bfcfs import --change 'CMD [\"/bin/app\", \"--serve\"]' --change 'ENV MODE=prod' \\
               --change 'WORKDIR /srv' --change 'USER app' ./out localhost/app:v2
  bfcfs run --rm app:v1

Owners, modes, mtimes, symlinks, hardlinks, device nodes and fifos are kept (run as root to
read every file); sockets are skipped. The same tree gives the same layer digest.")]
pub struct ImportArgs {
    /// A Dockerfile instruction for the config: CMD, ENTRYPOINT (JSON array or shell form),
    /// ENV K=V, LABEL K=V, WORKDIR DIR, USER USER (repeatable, applied in order)
    #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
    /// Print only the manifest digest
    #[arg(short, long)]
    pub quiet: bool,
    /// The directory whose contents become the image's root
    pub dir: PathBuf,
    /// Name of the new image: NAME[:TAG] (tag default: latest)
    pub reference: String,
}

/// Give an image in the store another name
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  bfcfs tag app:v1 app:stable
  bfcfs tag 3f2a9c localhost:5000/team/app:v1    # by digest prefix")]
pub struct TagArgs {
    /// The image: NAME[:TAG], NAME@DIGEST or a digest prefix
    pub image: String,
    /// The new name: NAME[:TAG] (tag default: latest); an existing tag moves to this image
    pub reference: String,
}

fn store(root: Option<&Path>) -> anyhow::Result<Store> {
    Ok(Store::open(&Store::default_root(root)?)?)
}

pub fn import(root: Option<&Path>, a: ImportArgs) -> anyhow::Result<i32> {
    let changes = a
        .changes
        .iter()
        .map(|c| {
            c.parse::<Change>()
                .map_err(|why| UsageError(format!("--change {c:?}: {why}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let store = store(root)?;
    let done = image::import(&store, &a.dir, &a.reference, &changes)?;
    if a.quiet {
        println!("{}", done.manifest_digest);
    } else {
        println!("{} {}", done.name, done.manifest_digest);
    }
    Ok(0)
}

pub fn tag(root: Option<&Path>, a: TagArgs) -> anyhow::Result<i32> {
    let name = image::tag(&store(root)?, &a.image, &a.reference)?;
    println!("{name}");
    Ok(0)
}
