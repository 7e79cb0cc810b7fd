//! `-o` mount options: parsing (comma lists, repeatable) and the fuser `Config` they give.
use std::path::Path;

use fuser::{Config, MountOption, SessionACL};

/// Default bound of the decoded-chunk cache of a mount. The kernel keeps decoded pages in its page
/// cache (FOPEN_KEEP_CACHE), so this only has to hold the chunks that partial reads and readahead
/// windows are still working through; small keeps the server's memory small.
pub const DEFAULT_CACHE_SIZE: u64 = 16 << 20;

/// Options given with `-o` (comma lists, repeatable). `ro`, `nosuid`, `nodev` and `default_permissions`
/// are the defaults; `ro` and `default_permissions` cannot be turned off.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountOptions {
    pub allow_other: bool,
    pub suid: bool,
    pub dev: bool,
    pub exec: bool,
    /// Owner shown for entries that record none (default: the user who mounts).
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Bound in bytes of the decoded-chunk cache (compressed and encrypted content).
    pub cache_size: u64,
    /// Worker threads for requests that may block (`n_threads`).
    pub threads: Option<usize>,
    /// Threads reading requests from /dev/fuse (`readers=`, default 2; see `fs::pool`).
    pub readers: Option<usize>,
    /// Lazy layers: background fetch rate in bytes/s (0: off; default: the lazy default).
    pub bg_rate: Option<u64>,
    /// Lazy layers: seconds a read waits for missing bytes before it fails with EIO.
    pub read_timeout: Option<u64>,
    /// Mount read-write (a union with an upper dir; set by the command, not by `-o`).
    pub writable: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            suid: false,
            dev: false,
            exec: true,
            uid: None,
            gid: None,
            cache_size: DEFAULT_CACHE_SIZE,
            threads: None,
            readers: None,
            bg_rate: None,
            read_timeout: None,
            writable: false,
        }
    }
}

/// A `-o` option that bfcfs does not accept, and why.
#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    #[error("mount option `{0}`: layers are read-only; for writes give --upper DIR or --container NAME (read-write unless --ro)")]
    ReadWrite(String),
    #[error("mount option `{option}`: {why}")]
    BadValue { option: String, why: String },
    #[error("unknown mount option `{0}` (known: ro, allow_other, suid, nosuid, dev, nodev, exec, noexec, uid=, gid=, cache_size=, threads=, readers=, bg_rate=, read_timeout=, default_permissions)")]
    Unknown(String),
}

impl MountOptions {
    /// Parses every `-o` argument (each a comma-separated list) into one set of options.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<MountOptions, OptionError> {
        let mut o = MountOptions::default();
        for opt in args.iter().flat_map(|a| a.as_ref().split(',')) {
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            match (key, value) {
                ("", None) => {}
                ("ro" | "default_permissions" | "noatime" | "atime" | "nodiratime", None) => {}
                ("rw", None) => return Err(OptionError::ReadWrite(opt.to_string())),
                ("allow_other", None) => o.allow_other = true,
                ("suid", None) => o.suid = true,
                ("nosuid", None) => o.suid = false,
                ("dev", None) => o.dev = true,
                ("nodev", None) => o.dev = false,
                ("exec", None) => o.exec = true,
                ("noexec", None) => o.exec = false,
                ("uid", Some(v)) => o.uid = Some(parse_num(opt, v)?),
                ("gid", Some(v)) => o.gid = Some(parse_num(opt, v)?),
                ("cache_size", Some(v)) => o.cache_size = parse_size(opt, v)?,
                ("threads", Some(v)) => {
                    let n: usize = parse_num(opt, v)?;
                    if !(1..=64).contains(&n) {
                        return Err(bad(opt, "threads must be between 1 and 64"));
                    }
                    o.threads = Some(n);
                }
                ("readers", Some(v)) => {
                    let n: usize = parse_num(opt, v)?;
                    if !(1..=64).contains(&n) {
                        return Err(bad(opt, "readers must be between 1 and 64"));
                    }
                    o.readers = Some(n);
                }
                ("bg_rate", Some(v)) => o.bg_rate = Some(parse_size(opt, v)?),
                ("read_timeout", Some(v)) => {
                    let n: u64 = parse_num(opt, v)?;
                    if n == 0 {
                        return Err(bad(opt, "read_timeout must be at least 1 second"));
                    }
                    o.read_timeout = Some(n);
                }
                _ => return Err(OptionError::Unknown(opt.to_string())),
            }
        }
        Ok(o)
    }

    /// Worker threads for the requests that may block (content reads and decoding, copy-ups,
    /// fsync; see `fs::pool`): the `threads=` option, else one per CPU, at least 2 and at most 8.
    pub fn n_threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .clamp(2, 8)
        })
    }

    /// The fuser configuration: always `ro` and `default_permissions` (the kernel checks modes, so
    /// bfcfs never has to), `nosuid,nodev` unless asked, `allow_other` only when asked.
    pub fn fuser_config(&self, source: &Path) -> Config {
        let mut mount_options = vec![
            MountOption::FSName(source.display().to_string().replace(',', "_")),
            MountOption::CUSTOM("subtype=bfcfs".to_string()),
            if self.writable {
                MountOption::RW
            } else {
                MountOption::RO
            },
            MountOption::DefaultPermissions,
            if self.suid {
                MountOption::Suid
            } else {
                MountOption::NoSuid
            },
            if self.dev {
                MountOption::Dev
            } else {
                MountOption::NoDev
            },
        ];
        if !self.exec {
            mount_options.push(MountOption::NoExec);
        }
        let mut config = Config::default();
        config.mount_options = mount_options;
        config.acl = if self.allow_other {
            SessionACL::All
        } else {
            SessionACL::Owner
        };
        // Two reader threads unless asked; `n_threads` workers take the requests that may block
        // (fs::pool).
        config.n_threads = Some(self.readers.unwrap_or(2));
        config
    }
}

fn bad(option: &str, why: &str) -> OptionError {
    OptionError::BadValue {
        option: option.to_string(),
        why: why.to_string(),
    }
}

fn parse_num<T: std::str::FromStr>(option: &str, v: &str) -> Result<T, OptionError> {
    v.parse()
        .map_err(|_| bad(option, "expected a decimal number"))
}

/// `123`, `64K`, `256M`, `1G` (powers of 1024).
fn parse_size(option: &str, v: &str) -> Result<u64, OptionError> {
    let (digits, mult) = match v.char_indices().last() {
        Some((i, 'k' | 'K')) => (&v[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&v[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&v[..i], 1 << 30),
        _ => (v, 1),
    };
    let n: u64 = parse_num(option, digits)?;
    n.checked_mul(mult)
        .ok_or_else(|| bad(option, "size too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_ro_nosuid_nodev() {
        let o = MountOptions::parse::<&str>(&[]).unwrap();
        assert_eq!(o, MountOptions::default());
        let c = o.fuser_config(Path::new("/x.bfc"));
        for want in [
            MountOption::RO,
            MountOption::NoSuid,
            MountOption::NoDev,
            MountOption::DefaultPermissions,
        ] {
            assert!(c.mount_options.contains(&want), "{want:?}");
        }
        assert_eq!(c.acl, SessionACL::Owner);
    }

    #[test]
    fn options_parse() {
        let o =
            MountOptions::parse(&["ro,allow_other", "suid,dev,uid=12,gid=34", "cache_size=64M"])
                .unwrap();
        assert!(o.allow_other && o.suid && o.dev);
        assert_eq!((o.uid, o.gid, o.cache_size), (Some(12), Some(34), 64 << 20));
        let c = o.fuser_config(Path::new("/x.bfc"));
        assert!(c.mount_options.contains(&MountOption::Suid));
        assert_eq!(c.acl, SessionACL::All);
    }

    #[test]
    fn bad_options_are_named() {
        assert!(matches!(
            MountOptions::parse(&["rw"]),
            Err(OptionError::ReadWrite(_))
        ));
        assert!(matches!(
            MountOptions::parse(&["uid=x"]),
            Err(OptionError::BadValue { .. })
        ));
        assert!(matches!(
            MountOptions::parse(&["cache_size=99999999999G"]),
            Err(OptionError::BadValue { .. })
        ));
        assert!(matches!(
            MountOptions::parse(&["bogus"]),
            Err(OptionError::Unknown(_))
        ));
    }
}
