//! Running the real `bfcfs` binary from a chosen directory and judging how it ended.
use std::ffi::OsStr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

/// How one run of `bfcfs` ended.
#[derive(Debug)]
pub struct Run {
    pub what: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `bfcfs args...` with `dir` as the current directory (entry paths are stored relative to it).
pub fn run_in<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> Run {
    let out = Command::new(super::bin())
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run bfcfs");
    let what = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    Run {
        what: format!("bfcfs {what}"),
        code: out.status.code(),
        signal: out.status.signal(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Run {
    /// Asserts exit 0 and returns self.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code,
            Some(0),
            "{} failed:\nstdout: {}\nstderr: {}",
            self.what,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts that the command failed the way a user-facing error should: exit code 1 or 2,
    /// not a panic (101) or a signal, with a message and no "panicked" on stderr. Returns the code.
    #[track_caller]
    pub fn failed_cleanly(&self) -> i32 {
        assert!(
            self.signal.is_none(),
            "{} was killed by signal {:?}\nstderr: {}",
            self.what,
            self.signal,
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "{} panicked:\n{}",
            self.what,
            self.stderr
        );
        let code = self.code.unwrap_or(-1);
        assert!(
            code == 1 || code == 2,
            "{} exited {code}, expected 1 or 2\nstderr: {}",
            self.what,
            self.stderr
        );
        assert!(
            self.stderr.contains("bfcfs"),
            "{} failed without a message: {:?}",
            self.what,
            self.stderr
        );
        code
    }

    /// `failed_cleanly` and exactly `want`.
    #[track_caller]
    pub fn fails_with(&self, want: i32) -> &Run {
        let code = self.failed_cleanly();
        assert_eq!(code, want, "{}: stderr: {}", self.what, self.stderr);
        self
    }

    /// Asserts that stderr mentions every one of `needles`.
    #[track_caller]
    pub fn stderr_has(&self, needles: &[&str]) -> &Run {
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "{}: stderr does not mention {n:?}:\n{}",
                self.what,
                self.stderr
            );
        }
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{}: stdout is not JSON ({e}):\n{}", self.what, self.stdout))
    }
}
