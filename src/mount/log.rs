//! Where a server's log lines go: stderr in the foreground (`-f`), syslog once daemonized.
use std::ffi::CString;

/// Logs of a daemonized server go to syslog (its stderr is /dev/null): corrupt content is
/// reported there with the entry, file and offset.
pub fn init_syslog(verbose: u8) {
    static LOGGER: Syslog = Syslog;
    // SAFETY: the identifier is a static NUL-terminated string, as openlog keeps the pointer.
    unsafe { libc::openlog(c"bfcfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(match verbose {
            0 => log::LevelFilter::Warn,
            1 => log::LevelFilter::Info,
            _ => log::LevelFilter::Debug,
        });
    }
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
