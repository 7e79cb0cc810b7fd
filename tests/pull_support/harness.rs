//! Real components for the pull tests: Debian's `docker-registry` on 127.0.0.1 with a free port
//! and storage in a temp dir (stopped on Drop), a Bearer token endpoint that signs JWTs with
//! openssl, and TCP proxies that cut or throttle the registry's replies. Only 127.0.0.1 is used.
#![allow(dead_code)]
use super::layout::{sha, Image};
use base64::Engine as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const USER: &str = "tester";
pub const PASS: &str = "s3cret-pass";

pub enum Auth {
    None,
    Htpasswd,
    Token,
}

pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub token: Option<TokenServer>,
}

/// A port on 127.0.0.1 that nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    pub fn start(auth: Auth) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut token = None;
        let auth_yaml = match auth {
            Auth::None => String::new(),
            Auth::Htpasswd => {
                let file = dir.path().join("htpasswd");
                let st = Command::new("htpasswd")
                    .args(["-Bbc", file.to_str().unwrap(), USER, PASS])
                    .stderr(Stdio::null())
                    .status()
                    .expect("htpasswd (apache2-utils)");
                assert!(st.success());
                format!(
                    "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
                    file.display()
                )
            }
            Auth::Token => {
                let t = TokenServer::start(dir.path());
                let y = format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: test-registry\n    issuer: test-issuer\n    rootcertbundle: {}\n",
                    t.port,
                    t.cert.display()
                );
                token = Some(t);
                y
            }
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: test-secret\n{auth_yaml}",
            dir.path().join("data").display()
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry");
        let reg = Registry {
            child,
            port,
            dir,
            token,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut buf = [0u8; 12];
                if s.read(&mut buf).map(|n| n > 0).unwrap_or(false) {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        reg
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the registry process (its storage stays); `resume` starts it again on the port.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the registry again after `stop`, with the same storage and port.
    pub fn resume(&mut self) {
        self.child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "registry did not start again");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn creds_args(&self) -> Vec<String> {
        match (&self.token, self.dir.path().join("htpasswd").exists()) {
            (Some(_), _) | (None, true) => vec![format!("--dest-creds={USER}:{PASS}")],
            _ => vec![],
        }
    }

    /// `skopeo copy [--all] oci:DIR:TAG docker://HOST/NAME:TAG`, plus `extra` flags.
    pub fn seed(&self, layout: &Path, tag: &str, name: &str, extra: &[&str]) {
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(self.creds_args())
            .args(extra)
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{name}:{tag}", self.host()))
            .output()
            .expect("skopeo");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Pushes an image with plain HTTP calls (keeps media types and compression exactly).
    pub fn push(&self, name: &str, tag: &str, img: &Image) {
        let mut blobs: Vec<&[u8]> = img.blobs.iter().map(|b| &b[..]).collect();
        blobs.push(&img.config);
        for b in blobs {
            self.push_blob(name, b);
        }
        let url = format!("http://{}/v2/{name}/manifests/{tag}", self.host());
        let resp = ureq::put(&url)
            .header("Content-Type", img.media_type())
            .send(&img.manifest[..])
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
    }

    pub fn push_blob(&self, name: &str, data: &[u8]) {
        let url = format!("http://{}/v2/{name}/blobs/uploads/", self.host());
        let resp = ureq::post(&url).send_empty().unwrap();
        let loc = resp
            .headers()
            .get("location")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let loc = if loc.starts_with('/') {
            format!("http://{}{loc}", self.host())
        } else {
            loc
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let resp = ureq::put(&format!("{loc}{sep}digest={}", sha(data)))
            .header("Content-Type", "application/octet-stream")
            .send(data)
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
    }

    /// The file the registry serves for blob `digest` (to corrupt it on purpose).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = &digest[7..];
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

/// Starts `cmd` with `stdin` piped in and its stdout (and anything else the caller set to piped)
/// captured, and waits for it.
pub fn output_with_stdin(cmd: &mut Command, stdin: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// Makes a self-signed RSA certificate `cert` with its key `key` (openssl), valid for `days`;
/// `subject` holds the `-subj` argument and any `-addext` ones.
pub fn self_signed_cert(key: &Path, cert: &Path, days: u32, subject: &[&str]) {
    let st = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days"])
        .arg(days.to_string())
        .args(subject)
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Bearer token endpoint: issues RS256 JWTs (signed by `openssl dgst`) that the registry
/// trusts through `rootcertbundle`. Valid credentials get the requested actions, anonymous
/// requests get `pull` only, wrong credentials get 401.
pub struct TokenServer {
    pub port: u16,
    pub cert: PathBuf,
    pub requests: Arc<AtomicUsize>,
    pub with_creds: Arc<AtomicUsize>,
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TokenServer {
    fn start(dir: &Path) -> TokenServer {
        let key = dir.join("token-key.pem");
        let cert = dir.join("token-cert.pem");
        self_signed_cert(&key, &cert, 2, &["-subj", "/CN=test-token"]);
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .unwrap()
            .stdout;
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let with_creds = Arc::new(AtomicUsize::new(0));
        let (rq, wc) = (requests.clone(), with_creds.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut auth = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h
                        .strip_prefix("Authorization: ")
                        .or_else(|| h.strip_prefix("authorization: "))
                    {
                        auth = Some(v.trim().to_string());
                    }
                }
                rq.fetch_add(1, Ordering::SeqCst);
                let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let query = target.split_once('?').map(|x| x.1).unwrap_or("");
                let mut scopes = Vec::new();
                for kv in query.split('&') {
                    if let Some(v) = kv.strip_prefix("scope=") {
                        scopes.push(pct_decode(v));
                    }
                }
                let authed = match &auth {
                    None => false,
                    Some(a) => {
                        let want = format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD
                                .encode(format!("{USER}:{PASS}"))
                        );
                        if *a != want {
                            let _ = conn.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                            continue;
                        }
                        wc.fetch_add(1, Ordering::SeqCst);
                        true
                    }
                };
                let access: Vec<serde_json::Value> = scopes
                    .iter()
                    .filter_map(|s| {
                        let mut p = s.splitn(3, ':');
                        let (t, n, a) = (p.next()?, p.next()?, p.next()?);
                        let actions: Vec<&str> =
                            a.split(',').filter(|x| authed || *x == "pull").collect();
                        Some(serde_json::json!({"type": t, "name": n, "actions": actions}))
                    })
                    .collect();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
                let claims = serde_json::json!({"iss": "test-issuer", "sub": if authed { USER } else { "" },
                    "aud": "test-registry", "exp": now + 300, "nbf": now - 10, "iat": now,
                    "jti": format!("{now}-{}", rq.load(Ordering::SeqCst)), "access": access});
                let input = format!(
                    "{}.{}",
                    b64url(header.to_string().as_bytes()),
                    b64url(claims.to_string().as_bytes())
                );
                let sig = output_with_stdin(
                    Command::new("openssl")
                        .args(["dgst", "-sha256", "-sign"])
                        .arg(&key),
                    input.as_bytes(),
                )
                .stdout;
                let jwt = format!("{input}.{}", b64url(&sig));
                let body =
                    serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 300})
                        .to_string();
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenServer {
            port,
            cert,
            requests,
            with_creds,
        }
    }
}

/// What a proxy does to the registry's replies.
#[derive(Clone, Copy)]
pub enum ProxyMode {
    /// Cut the first connection whose reply passes `after` bytes (once).
    CutOnce { after: usize },
    /// Forward at most `bytes` per `tick`.
    Throttle { bytes: usize, tick: Duration },
}

/// A TCP proxy on 127.0.0.1 in front of the registry. Records request heads.
pub struct Proxy {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<String>>>,
    pub cuts: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target: u16, mode: ProxyMode) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let cuts = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (rq, ct, st) = (requests.clone(), cuts.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let rq = rq.clone();
                // client → server, recording request heads
                std::thread::spawn(move || {
                    let (mut c, mut s) = (c2, s2);
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match c.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        if ["GET ", "HEAD ", "POST ", "PUT ", "PATCH "]
                            .iter()
                            .any(|m| text.starts_with(m))
                        {
                            rq.lock().unwrap().push(text);
                        }
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s.shutdown(Shutdown::Write);
                });
                let ct = ct.clone();
                // server → client, cutting or throttling
                std::thread::spawn(move || {
                    let (mut c, mut s) = (client, server);
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut sent = 0usize;
                    loop {
                        let max = match mode {
                            ProxyMode::Throttle { bytes, .. } => bytes.min(buf.len()),
                            _ => buf.len(),
                        };
                        let n = match s.read(&mut buf[..max]) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if let ProxyMode::CutOnce { after } = mode {
                            if sent + n > after && ct.load(Ordering::SeqCst) == 0 {
                                ct.fetch_add(1, Ordering::SeqCst);
                                let _ = c.write_all(&buf[..after - sent]);
                                let _ = c.shutdown(Shutdown::Both);
                                let _ = s.shutdown(Shutdown::Both);
                                return;
                            }
                        }
                        if c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n;
                        if let ProxyMode::Throttle { tick, .. } = mode {
                            std::thread::sleep(tick);
                        }
                    }
                    let _ = c.shutdown(Shutdown::Both);
                });
            }
        });
        Proxy {
            port,
            requests,
            cuts,
            stop,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
