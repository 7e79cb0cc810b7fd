//! `bfcfs completion SHELL` and `bfcfs generate-man DIR`: what the shells and man(1) need,
//! generated from the same clap definitions as the parser (clap_complete, clap_mangen).
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;

/// Print a shell completion script
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  source <(bfcfs completion bash)                                # this shell
  bfcfs completion bash > /etc/bash_completion.d/bfcfs           # every bash
  bfcfs completion zsh > \"${fpath[1]}/_bfcfs\"
  bfcfs completion fish > ~/.config/fish/completions/bfcfs.fish")]
pub struct CompletionArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Write man pages (bfcfs.1 and one per command) into a directory
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  bfcfs generate-man /usr/local/share/man/man1 && mandb -q
  bfcfs generate-man /tmp/man && man -l /tmp/man/bfcfs-run.1")]
pub struct GenerateManArgs {
    /// Where to write the pages (created if missing)
    pub dir: PathBuf,
}

pub fn completion(a: CompletionArgs) -> anyhow::Result<i32> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "bfcfs", &mut std::io::stdout());
    Ok(0)
}

pub fn generate_man(a: GenerateManArgs) -> anyhow::Result<i32> {
    let dir: &Path = &a.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(super::Cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    println!("{}", dir.join("bfcfs.1").display());
    Ok(0)
}
