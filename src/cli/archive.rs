//! `create`, `list`, `extract`, `verify`, `info`: the archive commands, compatible in spirit and
//! letters with the upstream `bfc` tool.
use super::keys;
use super::progress::{bytes_bar, print_json};
use super::{style, ReadKeyArgs, UsageError};
use crate::archive::{create as ac, extract as ax};
use crate::bfc::{self, error::show, Compression, Container, Kind, WriterOptions};
use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum CompressArg {
    None,
    Zstd,
    Auto,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  bfcfs create backup.bfc ./project                  # plain
  bfcfs create -c zstd -l 9 docs.bfc /usr/share/doc  # compressed
  bfcfs create --password-file pw.txt secret.bfc ./private
  (cd /srv && bfcfs create -f -c auto /tmp/site.bfc www)   # entries named www/...")]
pub struct CreateArgs {
    /// Compression: none, zstd, or auto (zstd only where it pays)
    #[arg(short = 'c', long = "compress", value_enum, default_value = "none")]
    pub compress: CompressArg,
    /// zstd level (1-22)
    #[arg(short = 'l', long = "level", default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub level: i32,
    /// Store files smaller than this raw (default 64 for zstd, 4096 for auto)
    #[arg(short = 't', long = "threshold")]
    pub threshold: Option<u64>,
    /// Block size recorded in the header
    #[arg(short = 'b', long = "block-size", default_value_t = 4096)]
    pub block_size: u32,
    /// Overwrite OUT if it exists
    #[arg(short = 'f', long = "force")]
    pub force: bool,
    /// Encrypt with this password (visible in the process list: prefer --password-file)
    #[arg(short = 'e', long = "encrypt", conflicts_with_all = ["password_file", "keyfile"])]
    pub password: Option<String>,
    /// Encrypt with the password on the first line of this file ("-" for stdin)
    #[arg(long = "password-file", conflicts_with = "keyfile")]
    pub password_file: Option<PathBuf>,
    /// Encrypt with a raw 32-byte key file
    #[arg(short = 'k', long = "keyfile")]
    pub keyfile: Option<PathBuf>,
    /// Output container
    pub out: PathBuf,
    /// Files and directories to add (stored by the path given, like upstream bfc)
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  bfcfs list backup.bfc
  bfcfs list -l backup.bfc project/src        # only below project/src
  bfcfs list --json backup.bfc | jq -r '.[].path'")]
pub struct ListArgs {
    /// Long listing: type and mode, owner, size, mtime, path
    #[arg(short = 'l', long = "long")]
    pub long: bool,
    /// One JSON array of entries on stdout
    #[arg(long)]
    pub json: bool,
    /// The .bfc file
    pub file: PathBuf,
    /// Only entries at or below this path
    pub prefix: Option<String>,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  bfcfs extract backup.bfc                     # into the current directory
  bfcfs extract -C /tmp/out backup.bfc project/README.md project/src
  bfcfs extract -f --password-file pw.txt -C restore secret.bfc")]
pub struct ExtractArgs {
    /// Directory to extract into (default: current directory)
    #[arg(short = 'C', long = "directory", default_value = ".")]
    pub dir: PathBuf,
    /// Replace existing files
    #[arg(short = 'f', long = "force")]
    pub force: bool,
    #[command(flatten)]
    pub key: ReadKeyArgs,
    /// The .bfc file
    pub file: PathBuf,
    /// Only these paths (and what is below them)
    pub paths: Vec<String>,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  bfcfs verify backup.bfc          # structure: header, index, footer, CRCs of the index
  bfcfs verify --deep backup.bfc   # and every byte of content
Exit status: 0 when sound, 1 when damaged (the error names the entry and offset).")]
pub struct VerifyArgs {
    /// Decode every entry and check every checksum (and AEAD tag, given the key)
    #[arg(long)]
    pub deep: bool,
    #[command(flatten)]
    pub key: ReadKeyArgs,
    /// The .bfc file
    pub file: PathBuf,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  bfcfs info backup.bfc
  bfcfs info backup.bfc project/README.md      # one entry: kind, mode, owner, size, chunks
  bfcfs info --json backup.bfc")]
pub struct InfoArgs {
    /// One JSON object on stdout
    #[arg(long)]
    pub json: bool,
    /// The .bfc file
    pub file: PathBuf,
    /// Show this entry's details instead of the container summary
    pub path: Option<String>,
}

fn open(file: &Path) -> anyhow::Result<Container> {
    Ok(Container::open(file)?)
}

/// Opens a container and, when it is encrypted, sets the key (required when `need_key`).
fn open_with_key(file: &Path, k: &ReadKeyArgs, need_key: bool) -> anyhow::Result<Container> {
    let mut c = open(file)?;
    if c.is_encrypted() {
        let key = if need_key {
            Some(keys::key_for_encrypted(k, file)?)
        } else {
            keys::read_key(k)?
        };
        if let Some(key) = key {
            c.set_key(&key)?;
        }
    }
    Ok(c)
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub fn create(a: CreateArgs) -> anyhow::Result<i32> {
    if a.out.exists() && !a.force {
        return Err(UsageError(format!("{} exists (use -f to overwrite)", a.out.display())).into());
    }
    let key = if let Some(p) = &a.password {
        Some(bfc::Key::Password(p.as_bytes().to_vec()))
    } else if let Some(f) = &a.password_file {
        Some(bfc::Key::Password(keys::password_from_file(f)?))
    } else if let Some(k) = &a.keyfile {
        Some(
            bfc::Key::from_keyfile(k)
                .with_context(|| format!("reading keyfile {}", k.display()))?,
        )
    } else {
        None
    };
    let (compression, default_t) = match a.compress {
        CompressArg::None => (Compression::None, 0),
        CompressArg::Zstd => (Compression::Zstd, 64),
        CompressArg::Auto => (Compression::Auto, 4096),
    };
    let opts = WriterOptions {
        compression,
        level: a.level,
        min_size: a.threshold.unwrap_or(default_t),
        block_size: a.block_size,
        key,
        ..Default::default()
    };
    for p in &a.paths {
        std::fs::symlink_metadata(p).with_context(|| format!("{}", p.display()))?;
    }
    let total: u64 = a.paths.iter().map(|p| du(p)).sum();
    let bar = bytes_bar(total, "create");
    super::interrupt::clean_up_on_interrupt(None, Some(&a.out));
    let (mut w, af, skip) = ac::start(&a.out, opts)?;
    let copts = ac::CreateOptions {
        record_owner: is_root(),
        skip: Some(skip),
    };
    let inputs: Vec<&Path> = a.paths.iter().map(|p| p.as_path()).collect();
    let inc = |n: u64| bar.inc(n);
    let stats = ac::add_paths(&mut w, &inputs, &copts, &inc)?;
    w.finish()?;
    af.commit(&a.out)
        .map_err(|e| crate::archive::Error::io(&a.out, e))?;
    bar.finish_and_clear();
    for s in &stats.skipped {
        eprintln!("bfcfs: skipped {s}");
    }
    eprintln!(
        "created {}: {} entries, {} of content",
        a.out.display(),
        stats.entries,
        style::size(stats.bytes)
    );
    Ok(0)
}

/// Total size of regular files below `p` (for the progress bar only; errors count as 0).
fn du(p: &Path) -> u64 {
    let Ok(md) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if md.is_file() {
        return md.len();
    }
    if !md.is_dir() {
        return 0;
    }
    std::fs::read_dir(p)
        .map(|rd| rd.flatten().map(|d| du(&d.path())).sum())
        .unwrap_or(0)
}

fn mode_string(e: &bfc::Entry) -> String {
    let t = match e.kind {
        Kind::File => '-',
        Kind::Dir => 'd',
        Kind::Symlink => 'l',
        Kind::CharDev => 'c',
        Kind::BlockDev => 'b',
        Kind::Fifo => 'p',
        Kind::Socket => 's',
    };
    let m = e.perm();
    let mut s = String::with_capacity(10);
    s.push(t);
    for (shift, special, lower, upper) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bits = (m >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        s.push(match (m & special != 0, x) {
            (true, true) => lower,
            (true, false) => upper,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// Local time, labelled with its UTC offset, for nanoseconds since the epoch.
fn fmt_time(ns: i64) -> String {
    style::local_time(ns.div_euclid(1_000_000_000))
}

fn under(path: &[u8], prefix: Option<&str>) -> bool {
    match prefix {
        None => true,
        Some(p) => {
            let p = p.trim_end_matches('/').as_bytes();
            p.is_empty() || path == p || (path.starts_with(p) && path.get(p.len()) == Some(&b'/'))
        }
    }
}

fn entry_json(c: &Container, i: usize) -> bfc::Result<serde_json::Value> {
    let e = c.entry(i)?;
    let mut v = json!({
        "path": show(&e.path),
        "type": e.kind.name(),
        "mode": e.perm(),
        "size": e.size,
        "mtime_ns": e.mtime_ns,
    });
    if let (Some(u), Some(g)) = (e.uid, e.gid) {
        v["uid"] = json!(u);
        v["gid"] = json!(g);
    }
    if e.kind == Kind::Symlink {
        if let Ok(t) = c.symlink_target(i) {
            v["target"] = json!(show(t));
        }
    }
    if matches!(e.kind, Kind::CharDev | Kind::BlockDev) {
        v["rdev"] = json!([libc::major(e.rdev), libc::minor(e.rdev)]);
    }
    if e.nlink > 1 {
        v["nlink"] = json!(e.nlink);
    }
    if e.whiteout != bfc::Whiteout::None {
        v["whiteout"] = json!(format!("{:?}", e.whiteout).to_lowercase());
    }
    if !e.xattrs.is_empty() {
        v["xattrs"] = e
            .xattrs
            .iter()
            .map(|(n, val)| (show(n), json!(show(val))))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    v["compression"] = json!(if e.comp == 1 { "zstd" } else { "none" });
    v["encrypted"] = json!(e.enc != 0);
    Ok(v)
}

pub fn list(a: ListArgs) -> anyhow::Result<i32> {
    let c = open(&a.file)?;
    let sel: Vec<usize> = (0..c.len())
        .filter(|&i| under(c.path(i), a.prefix.as_deref()))
        .collect();
    if a.json {
        let all = sel
            .iter()
            .map(|&i| entry_json(&c, i))
            .collect::<bfc::Result<Vec<_>>>()?;
        print_json(&all.into())?;
        return Ok(0);
    }
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for i in sel {
        let e = &c.entry(i)?;
        let r = if a.long {
            let owner = match (e.uid, e.gid) {
                (Some(u), Some(g)) => format!("{u}/{g}"),
                _ => "-/-".into(),
            };
            let size = if matches!(e.kind, Kind::CharDev | Kind::BlockDev) {
                format!("{},{}", libc::major(e.rdev), libc::minor(e.rdev))
            } else {
                e.size.to_string()
            };
            let target = if e.kind == Kind::Symlink {
                c.symlink_target(i)
                    .map(|t| format!(" -> {}", show(t)))
                    .unwrap_or_else(|err| format!(" -> <{err}>"))
            } else {
                String::new()
            };
            writeln!(
                out,
                "{} {:>9} {:>12} {} {}{}",
                mode_string(e),
                owner,
                size,
                fmt_time(e.mtime_ns),
                show(&e.path),
                target
            )
        } else {
            writeln!(out, "{}", show(&e.path))
        };
        if let Err(err) = r {
            if err.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(0);
            }
            return Err(err.into());
        }
    }
    match out.flush() {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(err.into()),
        _ => Ok(0),
    }
}

pub fn extract(a: ExtractArgs) -> anyhow::Result<i32> {
    let c = open_with_key(&a.file, &a.key, false)?;
    if c.is_encrypted() && !c.key_is_set() {
        keys::key_for_encrypted(&a.key, &a.file)?;
    }
    let only: Vec<Vec<u8>> = a
        .paths
        .iter()
        .map(|p| p.trim_end_matches('/').as_bytes().to_vec())
        .collect();
    for o in &only {
        if !(0..c.len()).any(|i| under(c.path(i), std::str::from_utf8(o).ok())) {
            return Err(UsageError(format!(
                "{}: no entry {} in the container",
                a.file.display(),
                show(o)
            ))
            .into());
        }
    }
    let total = file_bytes(&c);
    let bar = bytes_bar(total, "extract");
    let opts = ax::ExtractOptions {
        force: a.force,
        restore_owner: is_root(),
        only,
    };
    let inc = |n: u64| bar.inc(n);
    let stats = ax::extract(&c, &a.dir, &opts, &inc)?;
    bar.finish_and_clear();
    if !stats.failed.is_empty() {
        return Err(crate::archive::Error::Partial {
            failed: stats.failed.len(),
            total: stats.failed.len() + stats.entries as usize,
        }
        .into());
    }
    eprintln!(
        "extracted {} entries, {} into {}",
        stats.entries,
        style::size(stats.bytes),
        a.dir.display()
    );
    Ok(0)
}

/// Bytes of regular-file content (the progress bar's total).
fn file_bytes(c: &Container) -> u64 {
    (0..c.len())
        .filter(|&i| c.kind(i) == Kind::File)
        .map(|i| c.size(i))
        .sum()
}

pub fn verify(a: VerifyArgs) -> anyhow::Result<i32> {
    let c = open_with_key(&a.file, &a.key, a.deep)?;
    let total = file_bytes(&c);
    let bar = bytes_bar(if a.deep { total } else { 0 }, "verify");
    let mut bad = 0usize;
    for i in 0..c.len() {
        // Both decode and check the entry itself first.
        let r = if a.deep {
            c.verify_entry(i)
        } else {
            c.check_object(i)
        };
        bar.inc(c.size(i));
        if let Err(err) = r {
            bar.suspend(|| eprintln!("bfcfs: {}", crate::error_chain::chain(&err)));
            bad += 1;
        }
    }
    bar.finish_and_clear();
    if let Err(err) = c.check_subdirs() {
        eprintln!("bfcfs: {}", crate::error_chain::chain(&err));
        bad += 1;
    }
    if bad > 0 {
        eprintln!("{}: {bad} of {} entries FAILED", a.file.display(), c.len());
        return Ok(1);
    }
    println!(
        "{}: OK ({} entries, {})",
        a.file.display(),
        c.len(),
        if a.deep {
            "all content checked"
        } else {
            "structure checked; --deep checks content"
        }
    );
    Ok(0)
}

/// Prints a JSON object as JSON, or as `key: value` lines with keys right-aligned to `width`.
fn print_fields(v: &serde_json::Value, json: bool, width: usize) -> anyhow::Result<()> {
    if json {
        return print_json(v);
    }
    if let Some(m) = v.as_object() {
        for (k, val) in m {
            let shown = val
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| val.to_string());
            println!("{k:>width$}: {shown}");
        }
    }
    Ok(())
}

pub fn info(a: InfoArgs) -> anyhow::Result<i32> {
    let c = open(&a.file)?;
    if let Some(p) = &a.path {
        let i = c
            .find(p.trim_matches('/').as_bytes())
            .ok_or_else(|| UsageError(format!("{}: no entry {p}", a.file.display())))?;
        let e = c.entry(i)?;
        let mut v = entry_json(&c, i)?;
        v["object_offset"] = json!(e.obj_offset);
        v["object_size"] = json!(e.obj_size);
        v["crc32c"] = json!(format!("{:#010x}", e.crc));
        v["chunked"] = json!(e.is_chunked());
        if !a.json {
            // The same fields in the one text style: octal mode, human sizes, local time.
            v["mode"] = json!(format!("{} ({})", style::mode(e.perm()), mode_string(&e)));
            v["size"] = json!(style::size(e.size));
            v["object_size"] = json!(style::size(e.obj_size));
            if let Some(m) = v.as_object_mut() {
                m.remove("mtime_ns");
            }
            v["mtime"] = json!(style::local_time(e.mtime_ns.div_euclid(1_000_000_000)));
        }
        print_fields(&v, a.json, 14)?;
        return Ok(0);
    }
    let mut counts = std::collections::BTreeMap::<&str, u64>::new();
    let mut orig = 0u64;
    for e in c.entries() {
        let e = e?;
        *counts.entry(e.kind.name()).or_default() += 1;
        if e.kind == Kind::File
            && e.link_group
                .is_none_or(|g| c.path(g as usize) == e.path.as_slice())
        {
            orig += e.size;
        }
    }
    let (io, is) = c.index_range();
    let v = json!({
        "file": a.file.display().to_string(),
        "size": c.file_size(),
        "entries": c.len(),
        "kinds": counts,
        "content_bytes": orig,
        "block_size": c.block_size(),
        "features": format!("{:#x}", c.features()),
        "encrypted": c.is_encrypted(),
        "bfcfs_extension": c.has_extension(),
        "index_offset": io,
        "index_size": is,
        "image_blobs": c.image_blob_names().collect::<Vec<_>>(),
    });
    let mut v = v;
    if !a.json {
        v["size"] = json!(style::size(c.file_size()));
        v["content_bytes"] = json!(style::size(orig));
        v["kinds"] = json!(counts
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", "));
        let blobs: Vec<_> = c.image_blob_names().collect();
        v["image_blobs"] = json!(if blobs.is_empty() {
            "-".to_string()
        } else {
            blobs.join(", ")
        });
    }
    print_fields(&v, a.json, 16)?;
    Ok(0)
}
