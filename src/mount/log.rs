//! Where a server's log lines go: stderr in the foreground (`-f`); once daemonized, syslog when
//! the host has one, else a file under the store (hosts and containers without a syslog daemon
//! would lose them: corrupt content is reported there with the entry, file and offset).
use std::ffi::CString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The environment variable that passes the log file from a mount to its supervisor and servers.
pub const LOG_FILE_ENV: &str = "BFCFS_LOG_FILE";

/// A log file is started afresh (the old one kept as `NAME.1`) when it is over this size.
const ROTATE_AT: u64 = 16 << 20;

/// Where the logs of background servers go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    Syslog,
    File(PathBuf),
}

/// Where background servers log: syslog if something listens on /dev/log, else `file`.
pub fn daemon_sink(file: &Path) -> Sink {
    if std::os::unix::net::UnixDatagram::unbound()
        .and_then(|s| s.connect("/dev/log"))
        .is_ok()
    {
        Sink::Syslog
    } else {
        Sink::File(file.to_path_buf())
    }
}

/// `STORE/logs/server.log`: the file background servers of that store log to without syslog.
pub fn log_file_in(store_root: &Path) -> PathBuf {
    store_root.join("logs").join("server.log")
}

/// Logs of a daemonized server (its stderr is /dev/null) go to syslog, or to `file` (see
/// [`daemon_sink`]); `None` takes the file from [`LOG_FILE_ENV`] (a supervisor's case).
pub fn init_daemon_log(verbose: u8, file: Option<&Path>) {
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    let env = std::env::var_os(LOG_FILE_ENV).map(PathBuf::from);
    let Some(file) = file.or(env.as_deref()) else {
        return init_syslog(level);
    };
    match daemon_sink(file) {
        Sink::Syslog => init_syslog(level),
        Sink::File(p) => match open_log(&p) {
            Ok(f) => {
                let logger = Box::leak(Box::new(FileLog(Mutex::new(f))));
                if log::set_logger(logger).is_ok() {
                    log::set_max_level(level);
                }
            }
            // Nowhere to write: syslog(3) drops the lines, as before.
            Err(_) => init_syslog(level),
        },
    }
}

fn open_log(p: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    if std::fs::metadata(p).is_ok_and(|m| m.len() > ROTATE_AT) {
        let mut old = p.as_os_str().to_owned();
        old.push(".1");
        let _ = std::fs::rename(p, old);
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(p)
}

fn init_syslog(level: log::LevelFilter) {
    static LOGGER: Syslog = Syslog;
    // SAFETY: the identifier is a static NUL-terminated string, as openlog keeps the pointer.
    unsafe { libc::openlog(c"bfcfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

/// Lines `2026-11-29T18:00:00.123Z bfcfs[PID] WARN message`, appended whole (O_APPEND, one
/// write per line, so several servers can share the file).
struct FileLog(Mutex<std::fs::File>);

impl log::Log for FileLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let line = format!(
            "{} bfcfs[{}] {} {}\n",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            std::process::id(),
            record.level(),
            record.args()
        );
        if let Ok(mut f) = self.0.lock() {
            let _ = f.write_all(line.as_bytes());
        }
    }
    fn flush(&self) {}
}

struct Syslog;

impl log::Log for Syslog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let prio = match record.level() {
            log::Level::Error => libc::LOG_ERR,
            log::Level::Warn => libc::LOG_WARNING,
            log::Level::Info => libc::LOG_INFO,
            _ => libc::LOG_DEBUG,
        };
        let msg = format!("{}", record.args()).replace('\0', "");
        if let Ok(c) = CString::new(msg) {
            // SAFETY: a constant "%s" format with one valid NUL-terminated string argument.
            unsafe { libc::syslog(prio, c"%s".as_ptr(), c.as_ptr()) };
        }
    }
    fn flush(&self) {}
}

/// Logs of a server in the foreground (`-f`) go to stderr.
pub fn init_stderr_log(verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let env = env_logger::Env::default().default_filter_or(level);
    let _ = env_logger::Builder::from_env(env).try_init();
}
