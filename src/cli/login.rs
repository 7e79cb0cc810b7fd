//! `bfcfs login` / `bfcfs logout`, and the registry options that pull (and push) share:
//! `--authfile`, `--tls-verify`, `--insecure-registry`, `--creds`, `--password-stdin`.
//! Where credentials are kept and found is `oci::credentials`.
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{ArgAction, Args};

use super::keys::prompt_password;
use super::UsageError;
use crate::oci::auth::Credentials;
use crate::oci::registry::{Options, Registry};
use crate::oci::{credentials, ImageRef};

/// How to reach a registry and as whom.
#[derive(Args, Debug, Clone)]
pub struct RegistryArgs {
    /// Read credentials from this auth file only (default: podman's and docker's files; see
    /// `bfcfs login --help`)
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Require HTTPS and verified certificates (default); --tls-verify=false allows plain HTTP
    /// and unverified certificates for every registry
    #[arg(long = "tls-verify", value_name = "BOOL", default_value_t = true,
          action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub tls_verify: bool,
    /// Allow plain HTTP to this registry (repeatable); loopback hosts are always allowed
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure: Vec<String>,
    /// Registry credentials; with USER alone the password is asked for on the terminal (or
    /// read from stdin with --password-stdin)
    #[arg(long, value_name = "USER[:PASS]")]
    pub creds: Option<String>,
    /// Read the registry password from stdin
    #[arg(long = "password-stdin", requires = "creds")]
    pub password_stdin: bool,
}

impl RegistryArgs {
    /// The registry options these arguments ask for (deadlines from the environment), with
    /// the password of `--creds USER` read from stdin or asked for.
    pub fn options(&self) -> anyhow::Result<Options> {
        Ok(Options {
            insecure: self.insecure.clone(),
            creds: self.credentials()?,
            authfile: self.authfile.clone(),
            tls_verify: self.tls_verify,
            ..Options::from_env().map_err(UsageError)?
        })
    }

    fn credentials(&self) -> anyhow::Result<Option<Credentials>> {
        let Some(c) = &self.creds else {
            return Ok(None);
        };
        let user = c.split(':').next().unwrap_or(c);
        if user.is_empty() {
            return Err(UsageError(format!("--creds {c:?}: the user name is empty")).into());
        }
        let password = if self.password_stdin {
            password_from_stdin()?
        } else if let Some(parsed) = Credentials::parse(c) {
            return Ok(Some(parsed));
        } else {
            ask_password(user, "--creds USER:PASS or --password-stdin")?
        };
        Ok(Some(Credentials {
            username: user.to_string(),
            password,
        }))
    }
}

fn password_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Asks for `user`'s password on the terminal; without one, says what to give instead.
fn ask_password(user: &str, instead: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(format!(
            "no password for {user}: stdin is not a terminal to ask on; give {instead}"
        ))
        .into());
    }
    let p = prompt_password(&format!("Password for {user}: "))?;
    String::from_utf8(p).map_err(|_| UsageError("the password is not UTF-8".into()).into())
}

/// Log in to a registry: check the credentials with it, then store them
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  bfcfs login -u alice reg.example.com                 # asks for the password
  echo \"$TOKEN\" | bfcfs login -u alice --password-stdin ghcr.io
  bfcfs login --authfile ./auth.json -u ci -p \"$PASS\" 127.0.0.1:5000

Credentials go where podman keeps them: --authfile FILE, $REGISTRY_AUTH_FILE, else
${XDG_RUNTIME_DIR}/containers/auth.json (/run/containers/UID/auth.json without it), as an
`auths` entry, or through the docker credential helper that file names (credHelpers,
credsStore). pull reads them from there, from ~/.config/containers/auth.json and from
~/.docker/config.json; skopeo and podman read the same file.")]
pub struct LoginArgs {
    /// The auth file to write (see below)
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// User name (asked for on the terminal when missing)
    #[arg(short = 'u', long = "username", value_name = "USER")]
    pub username: Option<String>,
    /// Password (visible in the process list: prefer --password-stdin or the prompt)
    #[arg(
        short = 'p',
        long = "password",
        value_name = "PASS",
        conflicts_with = "password_stdin"
    )]
    pub password: Option<String>,
    /// Read the password from stdin
    #[arg(long = "password-stdin")]
    pub password_stdin: bool,
    /// Require HTTPS and verified certificates (default); false allows plain HTTP and
    /// unverified certificates
    #[arg(long = "tls-verify", value_name = "BOOL", default_value_t = true,
          action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub tls_verify: bool,
    /// Allow plain HTTP to this registry (loopback hosts are always allowed)
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure: Vec<String>,
    /// The registry: HOST[:PORT], optionally with a namespace (HOST/NAMESPACE) to keep
    /// credentials for that namespace only
    pub registry: String,
}

/// Log out of a registry: remove its stored credentials
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  bfcfs logout reg.example.com
  bfcfs logout --authfile ./auth.json 127.0.0.1:5000
  bfcfs logout --all")]
pub struct LogoutArgs {
    /// The auth file to change (default as for login)
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Remove the credentials of every registry from the auth file
    #[arg(short = 'a', long, conflicts_with = "registry")]
    pub all: bool,
    /// The registry: HOST[:PORT] or HOST/NAMESPACE, as given to login
    #[arg(required_unless_present = "all")]
    pub registry: Option<String>,
}

/// `https://reg:5000/ns/` → (`reg:5000/ns`, the registry's ImageRef for the check).
fn login_key(arg: &str) -> anyhow::Result<(String, ImageRef)> {
    let key = arg
        .strip_prefix("https://")
        .or_else(|| arg.strip_prefix("http://"))
        .unwrap_or(arg)
        .trim_end_matches('/');
    let (host, ns) = key.split_once('/').unwrap_or((key, ""));
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        h => h,
    };
    let probe = format!("{host}/{}", if ns.is_empty() { "library/x" } else { ns });
    let image: ImageRef = probe
        .parse()
        .ok()
        .filter(|r: &ImageRef| r.registry() == host)
        .ok_or_else(|| {
            UsageError(format!(
                "{arg:?} is not a registry: give HOST[:PORT] (a host name with a '.' or a port, or localhost)"
            ))
        })?;
    let key = if ns.is_empty() {
        host.to_string()
    } else {
        format!("{host}/{ns}")
    };
    Ok((key, image))
}

fn read_line(prompt: &str) -> anyhow::Result<String> {
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("opening /dev/tty to ask for the user name")?;
    write!(tty, "{prompt}").context("writing to /dev/tty")?;
    let mut line = String::new();
    std::io::BufReader::new(&tty)
        .read_line(&mut line)
        .context("reading the user name")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

pub fn login(a: LoginArgs) -> anyhow::Result<i32> {
    let (key, image) = login_key(&a.registry)?;
    let username = match a.username {
        Some(u) => u,
        None if std::io::stdin().is_terminal() => read_line("Username: ")?,
        None => {
            return Err(UsageError("no user name: give -u USER".into()).into());
        }
    };
    if username.is_empty() {
        return Err(UsageError("the user name is empty".into()).into());
    }
    let password = match (a.password, a.password_stdin) {
        (Some(p), _) => p,
        (None, true) => password_from_stdin()?,
        (None, false) => ask_password(&username, "-p PASS or --password-stdin")?,
    };
    let creds = Credentials { username, password };
    let opts = Options {
        insecure: a.insecure,
        creds: Some(creds.clone()),
        authfile: a.authfile.clone(),
        tls_verify: a.tls_verify,
        ..Options::from_env().map_err(UsageError)?
    };
    Registry::check_login(&image, &opts)
        .with_context(|| format!("logging in to {}", image.registry()))?;
    let place = credentials::store(&key, &creds, a.authfile.as_deref())?;
    log::info!("credentials for {key} stored in {place}");
    println!("Login Succeeded!");
    Ok(0)
}

pub fn logout(a: LogoutArgs) -> anyhow::Result<i32> {
    let file = credentials::default_auth_file(a.authfile.as_deref());
    if a.all {
        credentials::erase_all(a.authfile.as_deref())?;
        println!("Removed login credentials for all registries");
        return Ok(0);
    }
    let arg = a.registry.as_deref().unwrap_or_default();
    let (key, _) = login_key(arg)?;
    if !credentials::erase(&key, a.authfile.as_deref())? {
        return Err(anyhow::anyhow!(
            "not logged in to {key} (no credentials for it in {})",
            show(&file)
        ));
    }
    println!("Removed login credentials for {key}");
    Ok(0)
}

fn show(p: &Path) -> String {
    p.display().to_string()
}
