//! `bfcfs mounts`, `bfcfs restart`, and the two processes of a supervised mount that users do not
//! call themselves (`__supervise`, `__serve`; see docs/restart.md).
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::mount::{mountinfo, registry};

/// List every bfcfs mount and who serves it
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  bfcfs mounts
  bfcfs mounts --json | jq '.[] | {mountpoint, server_pid, restarts}'

A mount made by root is supervised: SUPERVISOR holds the FUSE connection and starts a new
server when SERVER dies; RESTARTS counts them. Other mounts show '-' there.")]
pub struct MountsArgs {
    /// JSON output: source, mountpoint, container, server_pid, supervisor_pid, restarts, uptime
    #[arg(long)]
    pub json: bool,
}

/// One row of `bfcfs mounts`.
#[derive(Debug, serde::Serialize)]
struct Row {
    source: String,
    mountpoint: PathBuf,
    container: Option<String>,
    server_pid: Option<u32>,
    supervisor_pid: Option<u32>,
    restarts: Option<u64>,
    /// Seconds since the mount was made (supervised mounts).
    uptime: Option<u64>,
}

fn rows() -> Vec<Row> {
    let served = registry::list();
    let mut out: Vec<Row> = served
        .iter()
        .map(|r| Row {
            source: r.source.clone(),
            mountpoint: r.mountpoint.clone(),
            container: r.container.clone(),
            server_pid: Some(r.server_pid),
            supervisor_pid: Some(r.supervisor_pid),
            restarts: Some(r.restarts),
            uptime: Some(r.uptime()),
        })
        .collect();
    for m in mountinfo::mounts() {
        if m.fstype != "fuse.bfcfs" && m.fstype != "fuse" {
            continue;
        }
        if m.fstype == "fuse" && !m.source.to_string_lossy().contains("bfcfs") {
            continue;
        }
        if served.iter().any(|r| r.mountpoint == m.mount_point) {
            continue;
        }
        out.push(Row {
            source: m.source.to_string_lossy().into_owned(),
            mountpoint: m.mount_point,
            container: None,
            server_pid: None,
            supervisor_pid: None,
            restarts: None,
            uptime: None,
        });
    }
    out
}

/// Where background servers of this store log (the footer of `bfcfs mounts`).
fn log_place(root: Option<&std::path::Path>) -> String {
    match crate::container::log_file(root).map(|f| crate::mount::log::daemon_sink(&f)) {
        Some(crate::mount::log::Sink::File(f)) => f.display().to_string(),
        _ => "syslog (journalctl -t bfcfs)".into(),
    }
}

pub fn mounts(root: Option<&std::path::Path>, args: MountsArgs) -> anyhow::Result<i32> {
    let rows = rows();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    println!(
        "{:<30} {:<30} {:<16} {:>8} {:>10} {:>8} {:>8}",
        "MOUNTPOINT", "SOURCE", "CONTAINER", "SERVER", "SUPERVISOR", "RESTARTS", "UPTIME"
    );
    for r in rows {
        println!(
            "{:<30} {:<30} {:<16} {:>8} {:>10} {:>8} {:>8}",
            r.mountpoint.display(),
            r.source,
            opt(r.container),
            opt(r.server_pid.map(|p| p.to_string())),
            opt(r.supervisor_pid.map(|p| p.to_string())),
            opt(r.restarts.map(|p| p.to_string())),
            opt(r.uptime.map(super::style::duration)),
        );
    }
    println!("Server logs: {}", log_place(root));
    Ok(0)
}

/// Hand a mount to a new server of the installed bfcfs, with no failed request
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  bfcfs restart /mnt/dev          # after installing a new bfcfs: containers keep running
  kill -USR2 SUPERVISOR_PID       # the same, by signal (pid from `bfcfs mounts`)

The server stops reading requests, answers the ones it read and exits; a new server takes
the connection over with the same inode numbers and open files. Prints the new server's pid.")]
pub struct RestartArgs {
    /// How long to wait for the new server, in seconds
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// A supervised bfcfs mount point
    pub mountpoint: PathBuf,
}

pub fn restart(args: RestartArgs) -> anyhow::Result<i32> {
    let Some(before) = registry::at(&args.mountpoint) else {
        bail!(
            "{} is not a supervised bfcfs mount (see `bfcfs mounts`): mounts made by root are",
            args.mountpoint.display()
        );
    };
    let pid = libc::pid_t::try_from(before.supervisor_pid).context("supervisor pid")?;
    // SAFETY: kill(2) takes plain integers; the pid is the live supervisor of the record.
    if unsafe { libc::kill(pid, libc::SIGUSR2) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("signalling supervisor {pid}"));
    }
    let t = Instant::now();
    let deadline = Duration::from_secs(args.timeout);
    loop {
        match registry::at(&args.mountpoint) {
            Some(r) if r.restarts > before.restarts => {
                println!("{}", r.server_pid);
                return Ok(0);
            }
            Some(_) => {}
            None => bail!(
                "{} was unmounted during the restart (see the server log: `bfcfs mounts` says where)",
                args.mountpoint.display()
            ),
        }
        if t.elapsed() > deadline {
            bail!(
                "no new server for {} after {} s (supervisor {pid}; see the server log: `bfcfs mounts` says where)",
                args.mountpoint.display(),
                args.timeout
            );
        }
        // The supervisor rewrites its record once the new server answers.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The supervisor of one mount (started by `bfcfs mount`; not for direct use)
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example (what the child of `bfcfs mount` execs as root, once it has
mounted and forked the first server):
  bfcfs __supervise --spec JSON --fuse-fd 6 --init HEX --first-pid 1234 --first-ready-fd 7"
)]
pub struct SuperviseArgs {
    /// What is mounted (with its record) and how to start servers (JSON)
    #[arg(long)]
    pub spec: String,
    /// The mount's /dev/fuse descriptor
    #[arg(long)]
    pub fuse_fd: i32,
    /// The kernel's FUSE_INIT request (hex), already read from it
    #[arg(long)]
    pub init: String,
    /// The first server (a child of this process)
    #[arg(long)]
    pub first_pid: u32,
    /// Descriptor of the first server's readiness pipe
    #[arg(long)]
    pub first_ready_fd: i32,
}

/// A server of a supervised mount (started by its supervisor; not for direct use)
#[derive(clap::Args, Debug)]
#[command(after_help = "Example (what a supervisor runs):
  bfcfs __serve --spec JSON --fuse-fd 3 --ready-fd 6 --init HEX [--granted HEX]")]
pub struct ServeArgs {
    /// What to serve (JSON)
    #[arg(long)]
    pub spec: String,
    /// The /dev/fuse descriptor of the mount
    #[arg(long)]
    pub fuse_fd: i32,
    /// Descriptor of the pipe to the supervisor
    #[arg(long)]
    pub ready_fd: i32,
    /// The kernel's FUSE_INIT request (hex)
    #[arg(long)]
    pub init: String,
    /// The INIT reply the kernel took from the first server (hex): take the connection over
    #[arg(long)]
    pub granted: Option<String>,
}

pub fn supervise(args: SuperviseArgs) -> anyhow::Result<i32> {
    crate::container::run_supervisor(crate::container::SuperviseArgs {
        spec_json: &args.spec,
        fuse_fd: args.fuse_fd,
        init_hex: &args.init,
        first_pid: args.first_pid,
        first_ready_fd: args.first_ready_fd,
    })
}

pub fn serve(args: ServeArgs) -> anyhow::Result<i32> {
    crate::container::run_server(crate::container::ServeArgs {
        spec_json: &args.spec,
        fuse_fd: args.fuse_fd,
        ready_fd: args.ready_fd,
        init_hex: &args.init,
        granted_hex: args.granted.as_deref(),
    })
}
