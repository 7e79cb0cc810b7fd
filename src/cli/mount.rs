//! `bfcfs mount` and `bfcfs umount`.
use std::io::{BufRead, IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};

use crate::bfc::{self, Container, Key};
use crate::fs::attr::Owner;
use crate::fs::mount::{self, Forked, MountOptions};
use crate::fs::BfcFs;
use crate::overlay::{Layer, Union, WhiteoutSpec};

/// Mount a BFC file read-only (returns once the mount answers)
#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// Stay in the foreground and log to stderr
    #[arg(short, long)]
    pub foreground: bool,
    /// Mount options: ro, allow_other, suid, dev, exec, noexec, uid=N, gid=N, cache_size=SIZE, threads=N
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// Password of an encrypted container (visible in `ps`: prefer --password-file or the prompt)
    #[arg(short = 'p', long, conflicts_with_all = ["password_file", "keyfile"])]
    pub password: Option<String>,
    /// Read the password from FILE (one trailing newline is dropped)
    #[arg(long, value_name = "FILE", conflicts_with = "keyfile")]
    pub password_file: Option<PathBuf>,
    /// Raw key: the first 32 bytes of KEYFILE
    #[arg(short = 'K', long, value_name = "KEYFILE")]
    pub keyfile: Option<PathBuf>,
    /// Mount this directory of the container as the root
    #[arg(long, value_name = "PATH")]
    pub subdir: Option<String>,
    /// The .bfc file
    pub file: PathBuf,
    /// An existing directory
    pub mountpoint: PathBuf,
}

/// Unmount a bfcfs mount (also one whose server died)
#[derive(clap::Args, Debug)]
pub struct UmountArgs {
    /// Detach now, finish when the mount is no longer busy
    #[arg(short = 'l', long)]
    pub lazy: bool,
    pub mountpoint: PathBuf,
}

pub fn run_mount(args: MountArgs, verbose: u8) -> anyhow::Result<i32> {
    let opts = MountOptions::parse(&args.options)?;
    let file = std::path::absolute(&args.file)
        .with_context(|| format!("resolving {}", args.file.display()))?;
    let mountpoint = args
        .mountpoint
        .canonicalize()
        .with_context(|| format!("mount point {}", args.mountpoint.display()))?;
    if !mountpoint.is_dir() {
        bail!("mount point {} is not a directory", mountpoint.display());
    }
    let mut container = Container::open(&file)?;
    if container.is_encrypted() {
        let key = key_for(&args, &file)?;
        container.set_key(&key)?;
    }
    if let Some(bytes) = opts.cache_size {
        container.set_cache_bytes(usize::try_from(bytes).unwrap_or(usize::MAX));
    }
    let mut layer = Layer::new(Arc::new(container));
    if let Some(sub) = &args.subdir {
        let sub = sub.trim_matches('/');
        if !sub.is_empty() {
            bfc::check_path(sub.as_bytes()).map_err(|why| anyhow!("--subdir {sub}: {why}"))?;
        }
        layer.root = sub.as_bytes().to_vec();
    }
    let union = Union::new(vec![layer], WhiteoutSpec::Typed)?;
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let owner = Owner {
        uid: opts.uid.unwrap_or(uid),
        gid: opts.gid.unwrap_or(gid),
    };
    let fs = BfcFs::new(union, owner);
    let config = opts.fuser_config(&file);
    if args.foreground {
        init_stderr_log(verbose);
        mount::serve(fs, &mountpoint, &config, || {
            log::info!("{} mounted on {}", file.display(), mountpoint.display())
        })
        .with_context(|| format!("mounting {} on {}", file.display(), mountpoint.display()))?;
        return Ok(0);
    }
    match mount::fork_server()? {
        Forked::Parent(pipe) => {
            mount::wait_ready(pipe).map_err(|why| anyhow!(why))?;
            Ok(0)
        }
        Forked::Child(mut readiness) => {
            mount::init_syslog(verbose);
            let r = mount::serve(fs, &mountpoint, &config, || readiness.ready());
            if let Err(e) = &r {
                log::error!(
                    "mounting {} on {}: {e}",
                    file.display(),
                    mountpoint.display()
                );
                readiness.failed(&format!(
                    "mounting {} on {}: {e}",
                    file.display(),
                    mountpoint.display()
                ));
            }
            std::process::exit(i32::from(r.is_err()));
        }
    }
}

pub fn run_umount(args: UmountArgs) -> anyhow::Result<i32> {
    mount::unmount(&args.mountpoint, args.lazy)?;
    Ok(0)
}

fn init_stderr_log(verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let env = env_logger::Env::default().default_filter_or(level);
    let _ = env_logger::Builder::from_env(env).try_init();
}

/// The key of an encrypted container: from `-K`, `--password-file`, `-p`, else a prompt on the
/// terminal. The caller checks it (`set_key`) before anything is mounted.
fn key_for(args: &MountArgs, file: &Path) -> anyhow::Result<Key> {
    if let Some(k) = &args.keyfile {
        return Key::from_keyfile(k).with_context(|| format!("reading keyfile {}", k.display()));
    }
    if let Some(f) = &args.password_file {
        let mut p =
            std::fs::read(f).with_context(|| format!("reading password file {}", f.display()))?;
        if p.ends_with(b"\n") {
            p.pop();
            if p.ends_with(b"\r") {
                p.pop();
            }
        }
        return Ok(Key::Password(p));
    }
    if let Some(p) = &args.password {
        return Ok(Key::Password(p.as_bytes().to_vec()));
    }
    if std::io::stdin().is_terminal() {
        return prompt_password(file);
    }
    bail!(
        "{} is encrypted: give --password-file FILE or -K KEYFILE (or run on a terminal to be asked)",
        file.display()
    )
}

/// Asks for the password on the controlling terminal with echo off.
fn prompt_password(file: &Path) -> anyhow::Result<Key> {
    let mut tty = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/tty")?;
    write!(tty, "Password for {}: ", file.display())?;
    let fd = tty.as_raw_fd();
    // SAFETY: termios is plain data filled by tcgetattr on an open terminal fd.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open for the life of `tty`; the pointers are valid.
    let echo_off = unsafe { libc::tcgetattr(fd, &mut saved) } == 0 && {
        let mut t = saved;
        t.c_lflag &= !libc::ECHO;
        // SAFETY: as above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) == 0 }
    };
    let mut line = Vec::new();
    let r = std::io::BufReader::new(&tty).read_until(b'\n', &mut line);
    if echo_off {
        // SAFETY: restores the settings read above on the same open fd.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    let _ = writeln!(tty);
    r?;
    if line.ends_with(b"\n") {
        line.pop();
    }
    Ok(Key::Password(line))
}
