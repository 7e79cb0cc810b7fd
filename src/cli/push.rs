//! `bfcfs push`, `bfcfs save`, `bfcfs load`: images out of the store and back in.
use super::login::RegistryArgs;
use super::progress::PullProgress;
use super::UsageError;
use crate::image::{self, Destination, PullOptions, PushFormat, PushOptions, SaveFormat};
use crate::oci::registry::Options;
use crate::store::Store;
use anyhow::Context;
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatArg {
    /// An ordinary OCI image (tar layers)
    Oci,
    /// Layers as BFC files, plus the ordinary image, under one index at the tag
    Bfc,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressionArg {
    Gzip,
    Zstd,
}

/// Push an image to a registry, an OCI layout or an archive
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  bfcfs push app:v1 127.0.0.1:5000/team/app:v1
  bfcfs push --format bfc app:v1 reg.example/team/app:v1     # one tag: OCI image + BFC layers
  bfcfs push --compression-format zstd --creds alice:secret app:v1 reg.example/app:v1
  bfcfs push app:v1 oci:./layout:v1        # also oci-archive:FILE[:TAG], docker-archive:FILE[:REF]")]
pub struct PushArgs {
    /// Layer format: oci (tar layers) or bfc (BFC layers with an OCI index holding both)
    #[arg(long, value_enum, default_value = "oci")]
    pub format: FormatArg,
    /// Compression of tar layers
    #[arg(long = "compression-format", value_enum, default_value = "gzip")]
    pub compression: CompressionArg,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Layers made and uploaded at once (1-4)
    #[arg(short = 'j', long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=4))]
    pub jobs: u8,
    /// No progress output
    #[arg(short, long)]
    pub quiet: bool,
    /// The image in the store (name[:tag], digest or digest prefix)
    pub image: String,
    /// REGISTRY/REPO:TAG, oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REF]
    pub destination: String,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFormatArg {
    DockerArchive,
    OciArchive,
    OciDir,
}

/// Write images of the store into one archive or OCI layout
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  bfcfs save -o app.tar app:v1
  bfcfs save --format oci-archive -o images.tar app:v1 base:12
  bfcfs save --format oci-dir -o ./layout app:v1")]
pub struct SaveArgs {
    /// Archive or layout format
    #[arg(long, value_enum, default_value = "docker-archive")]
    pub format: SaveFormatArg,
    /// Output file (or directory for oci-dir)
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: PathBuf,
    /// No progress output
    #[arg(short, long)]
    pub quiet: bool,
    /// Images in the store
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// Load the images of a docker archive, OCI archive or OCI layout directory into the store
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  bfcfs load -i app.tar
  bfcfs load -i ./layout")]
pub struct LoadArgs {
    /// docker-archive or oci-archive file, or OCI layout directory
    #[arg(short = 'i', long = "input", value_name = "PATH")]
    pub input: PathBuf,
    /// No progress output
    #[arg(short, long)]
    pub quiet: bool,
}

/// Credentials and TLS policy for a registry destination: the same options and lookup as pull
/// (cli/login.rs, oci/credentials.rs).
fn registry_options(a: &PushArgs, dest: &Destination) -> anyhow::Result<Options> {
    match dest {
        Destination::Registry(_) => a.registry.options(),
        _ => Ok(Options::from_env().map_err(UsageError)?),
    }
}

pub fn push(root: Option<&Path>, a: PushArgs) -> anyhow::Result<i32> {
    let dest: Destination = a
        .destination
        .parse()
        .map_err(|e| UsageError(format!("{e}")))?;
    let opts = PushOptions {
        format: match a.format {
            FormatArg::Oci => PushFormat::Oci,
            FormatArg::Bfc => PushFormat::Bfc,
        },
        compression: match a.compression {
            CompressionArg::Gzip => image::TarCompression::Gzip,
            CompressionArg::Zstd => image::TarCompression::Zstd,
        },
        registry: registry_options(&a, &dest)?,
        jobs: usize::from(a.jobs),
    };
    let store = Store::open(&Store::default_root(root)?)?;
    super::interrupt::clean_up_on_interrupt(Some(&store), None);
    let progress = PullProgress::new(a.quiet);
    let p = image::push(&store, &a.image, &dest, &opts, &progress)
        .with_context(|| format!("pushing {} to {}", a.image, a.destination))?;
    if p.config_changed {
        eprintln!(
            "note: some layers had no tar-split side file (pulled by an older bfcfs), so their tars were regenerated: the config digest is now {}",
            p.config_digest
        );
    }
    if !a.quiet {
        println!(
            "{} {} ({} uploaded, {} already there, {} mounted)",
            a.destination, p.digest, p.uploaded, p.present, p.mounted
        );
    }
    Ok(0)
}

pub fn save(root: Option<&Path>, a: SaveArgs) -> anyhow::Result<i32> {
    let format = match a.format {
        SaveFormatArg::DockerArchive => SaveFormat::DockerArchive,
        SaveFormatArg::OciArchive => SaveFormat::OciArchive,
        SaveFormatArg::OciDir => SaveFormat::OciDir,
    };
    let store = Store::open(&Store::default_root(root)?)?;
    super::interrupt::clean_up_on_interrupt(Some(&store), Some(&a.output));
    let progress = PullProgress::new(a.quiet);
    let saved = image::save(
        &store,
        &a.images,
        format,
        &a.output,
        &PushOptions::default(),
        &progress,
    )
    .with_context(|| format!("saving to {}", a.output.display()))?;
    if !a.quiet {
        for s in saved {
            println!("{s}");
        }
    }
    Ok(0)
}

pub fn load(root: Option<&Path>, a: LoadArgs) -> anyhow::Result<i32> {
    let store = Store::open(&Store::default_root(root)?)?;
    super::interrupt::clean_up_on_interrupt(Some(&store), None);
    let progress = PullProgress::new(a.quiet);
    let opts = PullOptions {
        registry: Options::from_env().map_err(UsageError)?,
        ..Default::default()
    };
    let names = image::load(&store, &a.input, &opts, &progress)
        .with_context(|| format!("loading {}", a.input.display()))?;
    for n in names {
        println!("Loaded image: {n}");
    }
    Ok(0)
}
