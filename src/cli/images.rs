//! `bfcfs images`, `inspect`, `rm`, `prune`: what the store holds, and removing it.
use super::progress::print_json;
use super::style;
use crate::image::{self, ImageInfo};
use crate::store::{refs::RefEntry, Store};
use clap::Args;
use serde_json::json;
use std::path::Path;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  bfcfs images
  bfcfs images --json | jq -r '.[] | .repository + \":\" + .tag'")]
pub struct ImagesArgs {
    /// One JSON array on stdout (sizes in bytes)
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  bfcfs inspect debian:12
  bfcfs inspect 3f2a9c                    # by digest prefix
  bfcfs inspect app.bfc                   # a single-file image (pull -o)
  bfcfs inspect --json debian:12 | jq .config.config.Cmd")]
pub struct InspectArgs {
    /// One JSON object on stdout: manifest, config and layers
    #[arg(long)]
    pub json: bool,
    /// NAME[:TAG], NAME@DIGEST, a digest prefix, or a single-file IMAGE.bfc
    pub image: String,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  bfcfs rm app:v1
  bfcfs rm 3f2a9c0d                  # by digest prefix: every name of that one image
  bfcfs rm -f app:v1                 # even if containers were made from it

An image that containers were made from is refused (they could not be mounted any more)
unless -f is given; `bfcfs containers` lists them. A digest prefix that matches several
images is refused and the images are listed.")]
pub struct RmArgs {
    /// Remove even when containers were made from the image (they cannot be mounted after)
    #[arg(short, long)]
    pub force: bool,
    /// Images to untag (NAME[:TAG], NAME@DIGEST or a digest prefix)
    #[arg(required = true)]
    pub images: Vec<String>,
}

fn store(root: Option<&Path>) -> anyhow::Result<Store> {
    Ok(Store::open(&Store::default_root(root)?)?)
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

fn created(c: &Option<String>) -> String {
    style::local_time_of(c.as_deref())
}

fn summary(i: &ImageInfo) -> serde_json::Value {
    let mut v = json!({"repository": i.repository, "tag": i.tag, "digest": i.digest, "size": i.size, "created": i.created});
    if let Some((have, _)) = i.local_bytes() {
        v["local_bytes"] = json!(have);
    }
    v
}

/// ` (lazy: N% local)` for an image with lazily pulled layers.
fn lazy_note(i: &ImageInfo) -> String {
    match i.local_bytes() {
        Some((have, all)) if all > 0 => format!(
            "  (lazy: {:.0}% local, {})",
            have as f64 * 100.0 / all as f64,
            style::size(have)
        ),
        _ => String::new(),
    }
}

pub fn images(root: Option<&Path>, a: ImagesArgs) -> anyhow::Result<i32> {
    let list = image::list(&store(root)?)?;
    if a.json {
        print_json(&json!(list.iter().map(summary).collect::<Vec<_>>()))?;
        return Ok(0);
    }
    let w = list
        .iter()
        .map(|i| i.repository.len())
        .max()
        .unwrap_or(0)
        .max(10);
    println!(
        "{:w$}  {:16}  {:12}  {:>10}  CREATED",
        "REPOSITORY", "TAG", "DIGEST", "SIZE"
    );
    for i in &list {
        println!(
            "{:w$}  {:16}  {:12}  {:>10}  {}{}",
            i.repository,
            i.tag.as_deref().unwrap_or("<none>"),
            short(&i.digest),
            style::size(i.size),
            created(&i.created),
            lazy_note(i)
        );
    }
    Ok(0)
}

pub fn inspect(root: Option<&Path>, a: InspectArgs) -> anyhow::Result<i32> {
    let looks_like_file = a.image.ends_with(".bfc") && Path::new(&a.image).is_file();
    let st = if looks_like_file {
        None
    } else {
        Some(store(root)?)
    };
    let i = image::inspect(st.as_ref(), &a.image)?;
    let config = i.config.as_ref().and_then(|c| serde_json::to_value(c).ok());
    if a.json {
        let mut v = summary(&i);
        v["manifest"] = i
            .manifest
            .as_ref()
            .and_then(|m| serde_json::to_value(m).ok())
            .unwrap_or_default();
        v["config"] = config.unwrap_or_default();
        v["layers"] = serde_json::to_value(&i.layers)?;
        print_json(&v)?;
        return Ok(0);
    }
    let name = match &i.tag {
        Some(t) => format!("{}:{t}", i.repository),
        None => i.repository.clone(),
    };
    println!("Name:        {name}");
    println!("Digest:      {}", i.digest);
    if let Some(c) = &i.config {
        println!("Platform:    {}/{}", c.os(), c.architecture());
        println!("Created:     {}", created(&i.created));
        if let Some(cc) = c.config() {
            let show = |v: &Option<Vec<String>>| {
                v.as_ref()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_else(|| "-".into())
            };
            println!("Entrypoint:  {}", show(cc.entrypoint()));
            println!("Cmd:         {}", show(cc.cmd()));
            println!(
                "WorkingDir:  {}",
                cc.working_dir().as_deref().unwrap_or("-")
            );
            println!("User:        {}", cc.user().as_deref().unwrap_or("-"));
            println!("Env:");
            for e in cc.env().iter().flatten() {
                println!("  {e}");
            }
            println!("Labels:");
            let mut labels: Vec<_> = cc.labels().iter().flatten().collect();
            labels.sort();
            for (k, v) in labels {
                println!("  {k}={v}");
            }
        }
    }
    println!("Layers:");
    for l in &i.layers {
        let bfc = match (&l.bfc, l.bfc_size) {
            (Some(p), Some(s)) => format!("  {} ({})", p.display(), style::size(s)),
            _ => String::new(),
        };
        println!("  {}  {:>10}{bfc}", l.digest, style::size(l.size));
    }
    println!("Size:        {}", style::size(i.size));
    Ok(0)
}

/// The containers made from images that lose their last name when `doomed` go.
fn stranded(store: &Store, doomed: &[RefEntry]) -> anyhow::Result<Vec<(String, String)>> {
    let all = image::names(store)?;
    let gone: Vec<&RefEntry> = doomed
        .iter()
        .filter(|d| {
            !all.iter()
                .any(|e| e.digest == d.digest && !doomed.contains(e))
        })
        .collect();
    // Each container's image, read leniently: a state file this cannot parse does not block
    // rm here (the garbage collector refuses to guess about it on its own).
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(store.containers_dir()) else {
        return Ok(out);
    };
    for d in dirs.flatten() {
        let state = std::fs::read(d.path().join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        let image = state.as_ref().and_then(|v| v["image"].as_str());
        if let Some(doomed) = gone.iter().find(|g| Some(g.digest.as_str()) == image) {
            out.push((
                d.file_name().to_string_lossy().into_owned(),
                doomed.display(),
            ));
        }
    }
    out.sort();
    Ok(out)
}

pub fn rm(root: Option<&Path>, a: RmArgs) -> anyhow::Result<i32> {
    let store = store(root)?;
    let doomed = image::resolve_names(&store, &a.images)?;
    let users = stranded(&store, &doomed)?;
    if !users.is_empty() && !a.force {
        let list: Vec<String> = users
            .iter()
            .map(|(c, i)| format!("{c} (from {i})"))
            .collect();
        let names: Vec<&str> = users.iter().map(|(c, _)| c.as_str()).collect();
        anyhow::bail!(
            "containers use the image: {}; remove them first (`bfcfs rm-container {}`) or pass -f",
            list.join(", "),
            names.join(" ")
        );
    }
    let r = image::remove(&store, &a.images)?;
    for u in &r.untagged {
        println!("Untagged: {u}");
    }
    println!(
        "Freed {} ({} blobs, {} layers)",
        style::size(r.report.bytes),
        r.report.blobs,
        r.report.layers
    );
    Ok(0)
}

pub fn prune(root: Option<&Path>) -> anyhow::Result<i32> {
    let r = image::prune(&store(root)?)?;
    println!(
        "Freed {} ({} blobs, {} layers, {} temp files)",
        style::size(r.bytes),
        r.blobs,
        r.layers,
        r.temp_files
    );
    Ok(0)
}
