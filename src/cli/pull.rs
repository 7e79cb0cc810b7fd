//! `bfcfs pull`: fetch an image into the store (or into one BFC file with `-o`).
use super::login::RegistryArgs;
use super::progress::PullProgress;
use super::UsageError;
use crate::bfc::{self, Compression, WriterOptions};
use crate::image::{self, PullOptions};
use crate::oci::{PlatformSpec, Source};
use crate::store::Store;
use anyhow::Context;
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum LazyModeArg {
    Require,
    Prefer,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum LayerCompression {
    None,
    Zstd,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  bfcfs pull debian:12
  bfcfs pull --platform linux/arm64 ghcr.io/org/app:v1
  bfcfs pull 127.0.0.1:5000/team/app@sha256:3f2a...          # plain HTTP: loopback is allowed
  bfcfs pull --insecure-registry reg.lan:5000 reg.lan:5000/app:v1
  bfcfs pull oci:./layout:v1          # also oci-archive:FILE[:TAG], docker-archive:FILE
  bfcfs pull -c zstd -o app.bfc app:v1                      # the whole image in one file
  bfcfs pull --lazy reg.lan:5000/app:v1     # manifest, config and layer indexes only
  echo \"$TOKEN\" | bfcfs pull --creds alice --password-stdin reg.example/app:v1
  bfcfs login -u alice reg.example && bfcfs pull reg.example/app:v1   # stored credentials
  bfcfs pull --authfile ./auth.json --tls-verify=false reg.lan:5000/app:v1")]
pub struct PullArgs {
    /// Platform to pick from a multi-arch image (default: this host)
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// No progress output
    #[arg(short, long)]
    pub quiet: bool,
    /// Compression of the layer BFC files
    #[arg(short = 'c', long = "compress", value_enum, default_value = "none")]
    pub compress: LayerCompression,
    /// Encrypt the layer BFC files with a raw 32-byte key file
    #[arg(long)]
    pub keyfile: Option<PathBuf>,
    /// Write the whole image into this one BFC file instead of the store
    #[arg(short = 'o', long = "output", value_name = "IMAGE.bfc")]
    pub output: Option<PathBuf>,
    /// Fetch only the manifest, the config and each BFC layer's index; content is fetched when
    /// it is read (needs an image pushed with --format bfc)
    #[arg(long, conflicts_with = "output")]
    pub lazy: bool,
    /// With --lazy: what to do with layers that are not BFC files (prefer: pull them in full)
    #[arg(
        long = "lazy-mode",
        value_enum,
        default_value = "prefer",
        requires = "lazy"
    )]
    pub lazy_mode: LazyModeArg,
    /// Layers fetched at once (1-4)
    #[arg(short = 'j', long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=4))]
    pub jobs: u8,
    /// docker://NAME[:TAG|@DIGEST] (the prefix is optional), oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE
    pub source: String,
}

pub fn run(root: Option<&Path>, a: PullArgs) -> anyhow::Result<i32> {
    let source: Source = a.source.parse().map_err(|e| UsageError(format!("{e}")))?;
    let platform = match &a.platform {
        Some(p) => p.parse().map_err(|e| UsageError(format!("{e}")))?,
        None => PlatformSpec::host(),
    };
    let key = match &a.keyfile {
        Some(k) => Some(
            bfc::Key::from_keyfile(k)
                .with_context(|| format!("reading keyfile {}", k.display()))?,
        ),
        None => None,
    };
    let opts = PullOptions {
        platform,
        registry: a.registry.options()?,
        writer: WriterOptions {
            compression: match a.compress {
                LayerCompression::None => Compression::None,
                LayerCompression::Zstd => Compression::Zstd,
            },
            key,
            ..Default::default()
        },
        output: a.output.clone(),
        jobs: usize::from(a.jobs),
        platform_explicit: a.platform.is_some(),
    };
    let store = Store::open(&Store::default_root(root)?)?;
    super::interrupt::clean_up_on_interrupt(Some(&store), a.output.as_deref());
    let progress = PullProgress::new(a.quiet);
    let pulled = if a.lazy {
        let mode = match a.lazy_mode {
            LazyModeArg::Require => image::LazyMode::Require,
            LazyModeArg::Prefer => image::LazyMode::Prefer,
        };
        image::pull_lazy(&store, &source, &opts, mode, &progress)
    } else {
        image::pull(&store, &source, &opts, &progress)
    }
    .with_context(|| format!("pulling {}", a.source))?;
    for d in &pulled.fell_back {
        eprintln!("bfcfs: layer {d} is not a BFC layer: it was pulled in full, not lazily");
    }
    if !a.quiet {
        match &a.output {
            Some(out) => println!(
                "{} -> {} ({})",
                pulled.name,
                out.display(),
                pulled.manifest_digest
            ),
            None => println!(
                "{} {} ({} of {} layers fetched)",
                pulled.name, pulled.manifest_digest, pulled.layers_fetched, pulled.layers_total
            ),
        }
    }
    Ok(0)
}
