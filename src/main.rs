//! The `bfcfs` binary: parse arguments, run one command, print the error chain once, exit.
use clap::Parser;

fn main() {
    let cli = bfcfs::cli::Cli::parse();
    match bfcfs::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            let code = bfcfs::cli::exit_code(&err);
            // Error messages quote registry replies, member names and paths: never let their
            // control characters reach the terminal raw.
            let msg = format!("{err:#}");
            eprintln!("bfcfs: {}", bfcfs::error_chain::escape(&msg));
            std::process::exit(code);
        }
    }
}
