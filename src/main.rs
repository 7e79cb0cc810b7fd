//! The `bfcfs` binary: parse arguments, run one command, print the error chain once, exit.
use clap::Parser;

fn main() {
    let cli = bfcfs::cli::Cli::parse();
    match bfcfs::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            let code = bfcfs::cli::exit_code(&err);
            eprintln!("bfcfs: {err:#}");
            std::process::exit(code);
        }
    }
}
