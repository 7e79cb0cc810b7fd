//! Command-line interface: clap structs (raw args) and dispatch to one module per command.
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "bfcfs",
    version,
    about = "Mount container images and BFC files as filesystems"
)]
pub struct Cli {
    /// Store root (default: $BFCFS_ROOT, /var/lib/bfcfs for root, $XDG_DATA_HOME/bfcfs otherwise)
    #[arg(long, global = true)]
    pub root: Option<PathBuf>,
    /// More log output on stderr (repeat for more)
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {}

/// Runs one command and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {}
}

/// Exit code for an error: 2 for usage and key problems, 1 for everything else.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    let _ = err;
    1
}
