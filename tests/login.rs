//! Registry credentials (issue 13): `login` against a real docker-registry with htpasswd stores
//! credentials where podman keeps them, pull uses them, skopeo reads them, `logout` removes them;
//! `--authfile`, docker's config.json, a real docker credential helper (`docker-credential-pass`),
//! the `--creds USER` prompt on a terminal, and `--tls-verify=false` against a TLS registry with
//! a self-signed certificate. Every bfcfs runs with its own HOME and XDG_RUNTIME_DIR.
mod common;
mod pull_support;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine as _;
use common::{bin, tool_ok};
use pull_support::harness::{
    free_port, output_with_stdin, self_signed_cert, Auth, Registry, PASS, USER,
};
use pull_support::layout::{write_layout, Comp, Image, Layer, Member as M};

/// A registry with one private image, and a private home for bfcfs.
struct Fx {
    reg: Registry,
    tmp: tempfile::TempDir,
    /// `HOST/private/img:t`
    image: String,
}

impl Fx {
    fn new(reg: Registry) -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let l = Layer::new(&[M::File("secret", b"private".to_vec())], Comp::Gzip);
        let lay = write_layout(
            &tmp.path().join("lay"),
            "t",
            &[Image::new(vec![l], "amd64", false)],
        );
        reg.seed(&lay, "t", "private/img", &[]);
        for d in ["home", "run", "store"] {
            fs::create_dir(tmp.path().join(d)).unwrap();
        }
        let image = format!("{}/private/img:t", reg.host());
        Fx { reg, tmp, image }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// podman's default auth file here.
    fn runtime_auth(&self) -> PathBuf {
        self.path("run/containers/auth.json")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.env("HOME", self.path("home"))
            .env("XDG_RUNTIME_DIR", self.path("run"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("DOCKER_CONFIG")
            .env_remove("REGISTRY_AUTH_FILE")
            .env("BFCFS_RETRIES", "0")
            .arg("--root")
            .arg(self.path("store"))
            .args(args);
        c
    }

    /// Runs bfcfs with `stdin`: (code, stdout, stderr).
    fn run(&self, args: &[&str], stdin: &str) -> (i32, String, String) {
        let out = output_with_stdin(self.cmd(args).stderr(Stdio::piped()), stdin.as_bytes());
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args, "");
        assert_eq!(code, 0, "bfcfs {args:?}: {err}");
        out
    }

    fn fails(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args, "");
        assert!(
            code == 1 || code == 2,
            "bfcfs {args:?} should fail cleanly, got {code}: {out}{err}"
        );
        err
    }

    /// A pull into an empty store (so nothing is already there).
    fn pull(&self, extra: &[&str]) -> (i32, String, String) {
        let _ = fs::remove_dir_all(self.path("store"));
        let mut args = vec!["pull", "-q"];
        args.extend_from_slice(extra);
        args.push(&self.image);
        self.run(&args, "")
    }
}

#[test]
fn login_stores_what_pull_and_skopeo_use_and_logout_removes_it() {
    let fx = Fx::new(Registry::start(Auth::Htpasswd));
    let host = fx.reg.host();
    let (code, _, err) = fx.pull(&[]);
    assert_ne!(code, 0);
    assert!(err.contains("bfcfs login"), "{err}");

    // A wrong password is refused by the registry and stores nothing.
    let (code, _, err) = fx.run(&["login", "-u", USER, "--password-stdin", &host], "wrong\n");
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("rejected") || err.contains("401"), "{err}");
    assert!(!fx.runtime_auth().exists());

    let (code, out, err) = fx.run(
        &["login", "-u", USER, "--password-stdin", &host],
        &format!("{PASS}\n"),
    );
    assert_eq!((code, out.as_str()), (0, "Login Succeeded!\n"), "{err}");
    let file = fx.runtime_auth();
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        v["auths"][&host]["auth"],
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"))
    );

    let (code, _, err) = fx.pull(&[]);
    assert_eq!(code, 0, "pull with the stored credentials: {err}");

    // skopeo reads the file login wrote.
    tool_ok(
        Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--authfile"])
            .arg(&file)
            .arg(format!("docker://{}", fx.image))
            .env("HOME", fx.path("home")),
    );

    let out = fx.ok(&["logout", &host]);
    assert_eq!(out, format!("Removed login credentials for {host}\n"));
    let (code, _, err) = fx.pull(&[]);
    assert_ne!(code, 0);
    assert!(err.contains("bfcfs login"), "{err}");
    let err = fx.fails(&["logout", &host]);
    assert!(err.contains("not logged in"), "{err}");
}

#[test]
fn authfile_and_docker_config_are_read_and_creds_user_prompts_on_a_terminal() {
    let fx = Fx::new(Registry::start(Auth::Htpasswd));
    let host = fx.reg.host();
    let authfile = fx.path("my-auth.json");
    let af = authfile.to_str().unwrap();
    fx.ok(&["login", "--authfile", af, "-u", USER, "-p", PASS, &host]);
    assert!(authfile.exists() && !fx.runtime_auth().exists());
    assert_eq!(fx.pull(&["--authfile", af]).0, 0);
    assert_ne!(fx.pull(&[]).0, 0, "only --authfile has the credentials");
    fx.ok(&["logout", "--authfile", af, "--all"]);
    assert_ne!(fx.pull(&["--authfile", af]).0, 0);

    // Docker's config.json, as `docker login` writes it.
    let docker = fx.path("home/.docker");
    fs::create_dir_all(&docker).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    fs::write(
        docker.join("config.json"),
        serde_json::to_vec(&serde_json::json!({"auths": {host.clone(): {"auth": auth}}})).unwrap(),
    )
    .unwrap();
    let (code, _, err) = fx.pull(&[]);
    assert_eq!(code, 0, "pull with ~/.docker/config.json: {err}");
    fs::remove_file(docker.join("config.json")).unwrap();

    // --creds USER: no terminal, no password: a clear error.
    let err = fx.fails(&["pull", "--creds", USER, &fx.image]);
    assert!(err.contains("not a terminal"), "{err}");
    // On a terminal (script(1) gives it one) the password is asked for, without echo.
    let _ = fs::remove_dir_all(fx.path("store"));
    let line = format!(
        "'{}' --root '{}' pull -q --creds {USER} {}",
        bin().display(),
        fx.path("store").display(),
        fx.image
    );
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("HOME", fx.path("home"))
        .env("XDG_RUNTIME_DIR", fx.path("run"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Type the password once the prompt shows (echo is off by then).
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("Password for") {
        let n = std::io::Read::read(&mut stdout, &mut buf).unwrap();
        assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{PASS}\n").as_bytes()).unwrap();
    drop(stdin);
    std::io::Read::read_to_end(&mut stdout, &mut seen).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&seen);
    assert!(out.status.success(), "prompted pull: {said}");
    assert!(said.contains(&format!("Password for {USER}:")), "{said}");
    assert!(!said.contains(PASS), "the password was echoed: {said}");
}

/// A gpg key and a pass store in a temp dir, so `docker-credential-pass` works; the gpg-agent it
/// starts is stopped on drop.
struct PassStore {
    dir: tempfile::TempDir,
}

impl PassStore {
    fn new() -> Option<PassStore> {
        for tool in ["docker-credential-pass", "pass", "gpg"] {
            if Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .map(|s| !s.success())
                .unwrap_or(true)
            {
                eprintln!("SKIP: {tool} is missing (scripts/setup-debian.sh installs it)");
                return None;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let s = PassStore { dir };
        fs::create_dir(s.gnupg()).unwrap();
        fs::set_permissions(s.gnupg(), fs::Permissions::from_mode(0o700)).unwrap();
        tool_ok(
            s.cmd("gpg")
                .args(["--batch", "--passphrase", "", "--quick-gen-key"])
                .args([
                    "bfcfs-test <bfcfs-test@localhost>",
                    "default",
                    "default",
                    "never",
                ]),
        );
        tool_ok(s.cmd("pass").args(["init", "bfcfs-test@localhost"]));
        Some(s)
    }

    fn gnupg(&self) -> PathBuf {
        self.dir.path().join("gnupg")
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("GNUPGHOME", self.gnupg())
            .env("PASSWORD_STORE_DIR", self.dir.path().join("pass"));
        c
    }

    fn env(&self, c: &mut Command) {
        c.env("GNUPGHOME", self.gnupg())
            .env("PASSWORD_STORE_DIR", self.dir.path().join("pass"));
    }
}

impl Drop for PassStore {
    fn drop(&mut self) {
        let _ = self.cmd("gpgconf").args(["--kill", "gpg-agent"]).status();
    }
}

#[test]
fn credential_helpers_named_by_the_auth_file_are_used_by_login_and_pull() {
    let Some(pass) = PassStore::new() else { return };
    let fx = Fx::new(Registry::start(Auth::Htpasswd));
    let host = fx.reg.host();
    let authfile = fx.path("auth.json");
    let af = authfile.to_str().unwrap();
    fs::write(
        &authfile,
        serde_json::to_vec(&serde_json::json!({"credHelpers": {host.clone(): "pass"}})).unwrap(),
    )
    .unwrap();
    let run = |args: &[&str], stdin: &str| {
        let mut c = fx.cmd(args);
        pass.env(&mut c);
        let out = output_with_stdin(c.stderr(Stdio::piped()), stdin.as_bytes());
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(
        &[
            "login",
            "--authfile",
            af,
            "-u",
            USER,
            "--password-stdin",
            &host,
        ],
        &format!("{PASS}\n"),
    );
    assert_eq!(code, 0, "{err}");
    // The secret went to the helper, not into the file.
    let text = fs::read_to_string(&authfile).unwrap();
    assert!(!text.contains("auths"), "{text}");
    let list = pass
        .cmd("docker-credential-pass")
        .arg("list")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&list.stdout).contains(&host),
        "{}",
        String::from_utf8_lossy(&list.stdout)
    );
    let _ = fs::remove_dir_all(fx.path("store"));
    let (code, err) = run(&["pull", "-q", "--authfile", af, &fx.image], "");
    assert_eq!(code, 0, "pull through the helper: {err}");

    // credsStore: the helper for every registry.
    let _ = fs::remove_dir_all(fx.path("store"));
    fs::write(&authfile, br#"{"credsStore": "pass"}"#).unwrap();
    let (code, err) = run(&["pull", "-q", "--authfile", af, &fx.image], "");
    assert_eq!(code, 0, "pull through credsStore: {err}");

    let (code, err) = run(&["logout", "--authfile", af, &host], "");
    assert_eq!(code, 0, "{err}");
    let _ = fs::remove_dir_all(fx.path("store"));
    let (code, err) = run(&["pull", "-q", "--authfile", af, &fx.image], "");
    assert_ne!(code, 0, "the helper still had the credentials: {err}");
}

/// `--tls-verify=false` against a registry that speaks TLS with a self-signed certificate: the
/// default refuses the certificate, false accepts it.
#[test]
fn tls_verify_false_accepts_a_self_signed_registry() {
    let fx = Fx::new(Registry::start(Auth::None));
    let dir = fx.path("tls");
    fs::create_dir(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    self_signed_cert(
        &key,
        &cert,
        1,
        &[
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
    );
    let port = free_port();
    let config = format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: s\n  tls:\n    certificate: {}\n    key: {}\n",
        fx.reg.dir.path().join("data").display(),
        cert.display(),
        key.display()
    );
    fs::write(dir.join("config.yml"), config).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _tls = Kill(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "TLS registry did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The same storage as the plain registry: the seeded image is there.
    let image = format!("127.0.0.1:{port}/private/img:t");
    let pull = |extra: &[&str]| {
        let _ = fs::remove_dir_all(fx.path("store"));
        let mut args = vec!["pull", "-q"];
        args.extend_from_slice(extra);
        args.push(&image);
        fx.run(&args, "")
    };
    let (code, _, err) = pull(&[]);
    assert_ne!(code, 0, "a self-signed certificate was accepted by default");
    let (code, _, err2) = pull(&["--tls-verify=false"]);
    assert_eq!(code, 0, "--tls-verify=false: {err2} (default said: {err})");
    let err = fx.fails(&["pull", "--tls-verify=maybe", &image]);
    assert!(err.contains("tls-verify"), "{err}");
}
