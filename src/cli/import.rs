//! `bfcfs import` (a directory → a one-layer image), `bfcfs commit` (a container's changes → a
//! new image) and `bfcfs tag`.
use std::path::{Path, PathBuf};

use super::UsageError;
use crate::container;
use crate::image::{self, Change, CommitOptions};
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

/// Make a new image from a container's changes (its upper dir becomes a new top layer)
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  bfcfs run --name work app:v1 sh -c 'echo built > /srv/out'
  bfcfs commit -m 'add /srv/out' work app:v2
  bfcfs commit --change 'CMD [\"/srv/run\"]' --change 'ENV MODE=prod' work localhost/app:v3

Files the container removed stay removed in the new image (OCI whiteouts), and a directory it
replaced hides what the image had there. The container must not be mounted (`bfcfs umount`
first); it stays as it is.")]
pub struct CommitArgs {
    /// The history entry's comment
    #[arg(short = 'm', long = "message", value_name = "MESSAGE")]
    pub message: Option<String>,
    /// The image's author, in the config and the history entry
    #[arg(short = 'a', long = "author", value_name = "AUTHOR")]
    pub author: Option<String>,
    /// A Dockerfile instruction for the config: CMD, ENTRYPOINT (JSON array or shell form),
    /// ENV K=V, LABEL K=V, WORKDIR DIR, USER USER (repeatable, applied in order)
    #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
    /// Print only the manifest digest
    #[arg(short, long)]
    pub quiet: bool,
    /// The container (`bfcfs containers` lists them)
    pub container: String,
    /// Name of the new image: NAME[:TAG] (tag default: latest)
    pub reference: String,
}

fn store(root: Option<&Path>) -> anyhow::Result<Store> {
    Ok(Store::open(&Store::default_root(root)?)?)
}

fn parse_changes(changes: &[String]) -> Result<Vec<Change>, UsageError> {
    changes
        .iter()
        .map(|c| {
            c.parse::<Change>()
                .map_err(|why| UsageError(format!("--change {c:?}: {why}")))
        })
        .collect()
}

pub fn import(root: Option<&Path>, a: ImportArgs) -> anyhow::Result<i32> {
    let changes = parse_changes(&a.changes)?;
    let store = store(root)?;
    super::interrupt::clean_up_on_interrupt(Some(&store), None);
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

pub fn commit(root: Option<&Path>, a: CommitArgs) -> anyhow::Result<i32> {
    let changes = parse_changes(&a.changes)?;
    let store = store(root)?;
    super::interrupt::clean_up_on_interrupt(Some(&store), None);
    // Held: no server writes to the upper dir while it is read.
    let held = container::hold(&store, &a.container)?;
    let c = &held.container;
    let opts = CommitOptions {
        message: a.message,
        author: a.author,
        changes,
        container: c.state.name.clone(),
    };
    let done = image::commit(&store, &c.upper(), &c.state.image, &a.reference, &opts)?;
    drop(held);
    if a.quiet {
        println!("{}", done.manifest_digest);
    } else {
        println!("{} {}", done.name, done.manifest_digest);
    }
    Ok(0)
}
