//! Command-line interface: clap structs (raw args) and dispatch to one module per command.
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

pub mod archive;
pub mod completion;
pub mod container;
pub mod images;
pub mod import;
pub mod interrupt;
pub mod keys;
pub mod login;
pub mod mount;
pub mod progress;
pub mod pull;
pub mod push;
pub mod run;
pub mod served;
pub mod style;

#[derive(Parser, Debug)]
#[command(
    name = "bfcfs",
    version,
    about = "Mount container images and BFC files as filesystems",
    after_help = "Examples:
  bfcfs pull debian:12 && bfcfs run --rm debian:12 cat /etc/os-release
  bfcfs import ./rootfs app:v1 && bfcfs run --rm app:v1
  bfcfs mount --ro debian:12 /mnt/deb && ls /mnt/deb && bfcfs umount /mnt/deb
  bfcfs create -c zstd docs.bfc /usr/share/doc && bfcfs mount docs.bfc /mnt/docs
`bfcfs COMMAND --help` shows each command's options and examples."
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
pub enum Command {
    Mount(mount::MountArgs),
    Umount(mount::UmountArgs),
    /// Pack files and directories into a BFC container
    Create(archive::CreateArgs),
    /// List the entries of a container
    List(archive::ListArgs),
    /// Extract entries (never writes outside the target directory)
    Extract(archive::ExtractArgs),
    /// Check a container's structure, and with --deep every byte of content
    Verify(archive::VerifyArgs),
    /// Show a summary of a container, or the details of one entry
    Info(archive::InfoArgs),
    /// Pull an image into the store (or into one BFC file with -o)
    Pull(pull::PullArgs),
    Push(push::PushArgs),
    Save(push::SaveArgs),
    Load(push::LoadArgs),
    /// List the images in the store
    Images(images::ImagesArgs),
    /// Show an image's manifest, config and layers
    Inspect(images::InspectArgs),
    /// Untag images and free what nothing else uses
    Rm(images::RmArgs),
    /// Remove blobs and layers that no image or container references
    #[command(after_help = "Examples:
  bfcfs prune
  bfcfs rm app:v1 && bfcfs prune")]
    Prune,
    Bundle(container::BundleArgs),
    Run(run::RunArgs),
    Import(import::ImportArgs),
    Commit(import::CommitArgs),
    Tag(import::TagArgs),
    Login(login::LoginArgs),
    Logout(login::LogoutArgs),
    Containers(container::ContainersArgs),
    RmContainer(container::RmContainerArgs),
    /// Commands on containers (prune)
    Container {
        #[command(subcommand)]
        command: container::ContainerCommand,
    },
    Completion(completion::CompletionArgs),
    GenerateMan(completion::GenerateManArgs),
    Mounts(served::MountsArgs),
    Restart(served::RestartArgs),
    #[command(name = "__supervise", hide = true)]
    Supervise(served::SuperviseArgs),
    #[command(name = "__serve", hide = true)]
    Serve(served::ServeArgs),
}

/// Key options of commands that read encrypted containers (upstream's letters).
#[derive(Args, Debug, Clone, Default)]
pub struct ReadKeyArgs {
    /// Password (visible in the process list: prefer --password-file)
    #[arg(short = 'p', long = "password", conflicts_with_all = ["password_file", "keyfile"])]
    pub password: Option<String>,
    /// Read the password from the first line of a file ("-" for stdin)
    #[arg(long = "password-file", conflicts_with = "keyfile")]
    pub password_file: Option<PathBuf>,
    /// Raw 32-byte key file
    #[arg(short = 'K', long = "keyfile")]
    pub keyfile: Option<PathBuf>,
}

/// Runs one command and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    // A mount logs to stderr (-f) or syslog (daemon): it sets up its own logger.
    if !matches!(
        cli.command,
        Command::Mount(_)
            | Command::Bundle(_)
            | Command::Run(_)
            | Command::Supervise(_)
            | Command::Serve(_)
    ) {
        init_log(cli.verbose);
    }
    if matches!(
        cli.command,
        Command::List(_)
            | Command::Info(_)
            | Command::Images(_)
            | Command::Inspect(_)
            | Command::Containers(_)
            | Command::Mounts(_)
            | Command::Completion(_)
    ) {
        quiet_on_closed_pipe();
    }
    match cli.command {
        Command::Mount(a) => mount::run_mount(cli.root.as_deref(), a, cli.verbose),
        Command::Umount(a) => mount::run_umount(a),
        Command::Create(a) => archive::create(a),
        Command::List(a) => archive::list(a),
        Command::Extract(a) => archive::extract(a),
        Command::Verify(a) => archive::verify(a),
        Command::Info(a) => archive::info(a),
        Command::Pull(a) => pull::run(cli.root.as_deref(), a),
        Command::Push(a) => push::push(cli.root.as_deref(), a),
        Command::Save(a) => push::save(cli.root.as_deref(), a),
        Command::Load(a) => push::load(cli.root.as_deref(), a),
        Command::Images(a) => images::images(cli.root.as_deref(), a),
        Command::Inspect(a) => images::inspect(cli.root.as_deref(), a),
        Command::Rm(a) => images::rm(cli.root.as_deref(), a),
        Command::Prune => images::prune(cli.root.as_deref()),
        Command::Bundle(a) => container::bundle(cli.root.as_deref(), a, cli.verbose),
        Command::Run(a) => run::run(cli.root.as_deref(), a, cli.verbose),
        Command::Import(a) => import::import(cli.root.as_deref(), a),
        Command::Commit(a) => import::commit(cli.root.as_deref(), a),
        Command::Tag(a) => import::tag(cli.root.as_deref(), a),
        Command::Login(a) => login::login(a),
        Command::Logout(a) => login::logout(a),
        Command::Container { command } => {
            container::container_command(cli.root.as_deref(), command)
        }
        Command::Completion(a) => completion::completion(a),
        Command::GenerateMan(a) => completion::generate_man(a),
        Command::Containers(a) => container::containers(cli.root.as_deref(), a),
        Command::RmContainer(a) => container::rm_container(cli.root.as_deref(), a),
        Command::Mounts(a) => served::mounts(cli.root.as_deref(), a),
        Command::Restart(a) => served::restart(a),
        Command::Supervise(a) => served::supervise(a),
        Command::Serve(a) => served::serve(a),
    }
}

/// Commands that only print end quietly when their reader goes away (`bfcfs images | head -1`),
/// as `ls` and `git log` do, instead of panicking in `println!` on EPIPE: SIGPIPE gets its
/// default action back (Rust ignores it so that servers and network code see EPIPE instead).
fn quiet_on_closed_pipe() {
    // SAFETY: resetting a signal's disposition to SIG_DFL has no memory-safety preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

fn init_log(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .try_init();
}

/// Exit code for an error: 2 for usage and key problems, 1 for everything else.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<crate::bfc::Error>() {
            return e.exit_code();
        }
        if let Some(e) = cause.downcast_ref::<crate::archive::Error>() {
            return e.exit_code();
        }
        if let Some(e) = cause.downcast_ref::<UsageError>() {
            let _ = e;
            return 2;
        }
    }
    1
}

/// A mistake in what the user asked for (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own consistency checks (unique short options, valid defaults, ...), which it
    /// runs only in debug builds otherwise.
    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    /// Every command has an example in its help, and every argument a description.
    #[test]
    fn every_command_has_an_example_and_every_argument_a_description() {
        fn check(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let name = format!("{path} {}", cmd.get_name()).trim().to_string();
            if cmd.get_about().is_none() {
                missing.push(format!("{name}: no about"));
            }
            if cmd.get_name() == "help" {
                return;
            }
            let has_sub = cmd.get_subcommands().next().is_some();
            let example = cmd
                .get_after_help()
                .is_some_and(|h| h.to_string().contains("Example"));
            if !has_sub && !example {
                missing.push(format!("{name}: no example"));
            }
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id != "help" && id != "version" && a.get_help().is_none() {
                    missing.push(format!("{name}: argument {id} has no description"));
                }
            }
            for sub in cmd.get_subcommands() {
                check(sub, &name, missing);
            }
        }
        let mut missing = Vec::new();
        let mut cmd = super::Cli::command();
        cmd.build();
        for sub in cmd.get_subcommands() {
            if sub.get_name() != "help" {
                check(sub, "bfcfs", &mut missing);
            }
        }
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }
}
