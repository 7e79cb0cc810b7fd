//! `bfcfs pull` against a registry that misbehaves on purpose: a small HTTP/1.1 server written
//! here (std::net on 127.0.0.1, one thread per connection) serves one good image and breaks one
//! thing per case. Each case states its expected outcome (success, or exit 1 with one
//! `bfcfs:` line), a bound on the time it may take, and checks that no raw control character
//! reaches stderr, that nothing appears outside the store, and that the store still works
//! afterwards (a good pull, `images --json`, `verify --deep` of the layers, `prune`).
//!
//! The store faults around a pull live here too, since they need the same server: `kill -9` of a
//! pull at several moments (temp files are removed by the next command that takes the store
//! lock), and `prune` with a damaged manifest or config (it refuses, naming the blob).
//!
//! The deadlines are shortened through the environment (BFCFS_LOW_SPEED_TIME=2 s,
//! BFCFS_MAX_RESUMES=3, BFCFS_MAX_RETRY_WAIT=3 s, BFCFS_RETRY_BACKOFF_MS=50) so the suite runs
//! in well under a minute; the defaults (30 s window, 8 resumes, 60 s wait) scale the same bounds.
mod pull_support;

use pull_support::layout::{
    compress, noise, raw_name, sha, sparse_bomb, Comp, Image, Layer, Member as M,
};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Req {
    path: String,
    headers: HashMap<String, String>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// `(request, stream, number of earlier requests for the same path)`.
type Handler = dyn Fn(&Req, &mut TcpStream, usize) + Send + Sync;

struct Server {
    port: u16,
    log: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    fn start(handler: Arc<Handler>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let log: Arc<Mutex<Vec<Req>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let (log, handler) = (log2.clone(), handler.clone());
                        std::thread::spawn(move || {
                            s.set_nonblocking(false).ok();
                            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
                            s.set_write_timeout(Some(Duration::from_secs(5))).ok();
                            let Some(req) = read_request(&mut s) else {
                                return;
                            };
                            let n = {
                                let mut l = log.lock().unwrap();
                                let n = l.iter().filter(|r| r.path == req.path).count();
                                l.push(req.clone());
                                n
                            };
                            handler(&req, &mut s, n);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server {
            port,
            log,
            stop,
            accept: Some(accept),
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            t.join().ok();
        }
    }
}

fn read_request(s: &mut TcpStream) -> Option<Req> {
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    Some(Req { path, headers })
}

fn head(s: &mut TcpStream, status: u16, headers: &[(&str, String)]) {
    let mut out = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let _ = s.write_all(out.as_bytes());
}

fn respond(s: &mut TcpStream, status: u16, headers: &[(&str, String)], body: &[u8]) {
    let mut h = headers.to_vec();
    h.push(("Content-Length", body.len().to_string()));
    head(s, status, &h);
    let _ = s.write_all(body);
}

/// Writes `body` one byte per `every`, for at most `limit`.
fn drip(s: &mut TcpStream, body: &[u8], every: Duration, limit: Duration) {
    let t = Instant::now();
    for b in body {
        if t.elapsed() > limit || s.write_all(&[*b]).is_err() {
            return;
        }
        std::thread::sleep(every);
    }
}

/// The image every server serves when nothing is broken.
struct Fixture {
    manifest: Vec<u8>,
    config: Vec<u8>,
    layer: Vec<u8>,
}

impl Fixture {
    fn new(members: &[M]) -> Fixture {
        Self::from_layer(Layer::new(members, Comp::Gzip))
    }

    fn from_layer(layer: Layer) -> Fixture {
        let img = Image::new(vec![layer], "amd64", false);
        Fixture {
            manifest: img.manifest.clone(),
            config: img.config.clone(),
            layer: img.blobs[0].clone(),
        }
    }

    fn standard() -> Fixture {
        Fixture::new(&[
            M::Dir("etc"),
            M::File("etc/hello", b"hello from the registry\n".to_vec()),
        ])
    }

    fn layer_path(&self) -> String {
        format!("/v2/t/blobs/{}", sha(&self.layer))
    }

    /// Serves the good answer for `req`.
    fn serve(&self, req: &Req, s: &mut TcpStream) {
        let ct = |v: &str| vec![("Content-Type", v.to_string())];
        if req.path == "/v2/" {
            respond(s, 200, &[], b"{}");
        } else if req.path == "/v2/t/manifests/latest" {
            respond(s, 200, &ct(MANIFEST_TYPE), &self.manifest);
        } else if req.path == format!("/v2/t/blobs/{}", sha(&self.config)) {
            respond(s, 200, &[], &self.config);
        } else if req.path == self.layer_path() {
            let from = req
                .header("range")
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|r| r.parse::<usize>().ok())
                .filter(|f| *f < self.layer.len());
            match from {
                Some(f) => respond(
                    s,
                    206,
                    &[(
                        "Content-Range",
                        format!("bytes {f}-{}/{}", self.layer.len() - 1, self.layer.len()),
                    )],
                    &self.layer[f..],
                ),
                None => respond(s, 200, &[], &self.layer),
            }
        } else {
            respond(s, 404, &[], b"{\"errors\":[{\"code\":\"NOT_FOUND\"}]}");
        }
    }
}

/// A server whose handler gets the fixture, the request, the stream and the request count.
fn server(
    fx: Fixture,
    f: impl Fn(&Fixture, &Req, &mut TcpStream, usize) + Send + Sync + 'static,
) -> Server {
    Server::start(Arc::new(move |r: &Req, s: &mut TcpStream, n| {
        f(&fx, r, s, n)
    }))
}

fn good_server() -> Server {
    server(Fixture::standard(), |fx, r, s, _| fx.serve(r, s))
}

/// How one `bfcfs` run ended.
struct Run {
    code: Option<i32>,
    stderr: String,
    took: Duration,
}

/// A scratch directory: the store lives in `store/`; the run's working directory is the scratch
/// directory itself, so anything written outside the store shows up there.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn bfcfs(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_bfcfs"))
            .current_dir(self.dir.path())
            .arg("--root")
            .arg(self.store())
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("DOCKER_CONFIG")
            .env("HOME", self.dir.path().join("store"))
            .env("BFCFS_LOW_SPEED_TIME", "2")
            .env("BFCFS_MAX_RESUMES", "3")
            .env("BFCFS_MAX_RETRY_WAIT", "3")
            .env("BFCFS_RETRY_BACKOFF_MS", "50")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let took = t.elapsed();
        // Neither stdout nor stderr may carry a raw control character other than newline.
        for (what, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            assert!(
                !bytes
                    .iter()
                    .any(|b| (*b < 0x20 && *b != b'\n' && *b != b'\t') || *b == 0x7f),
                "raw control bytes on {what}: {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        Run {
            code: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took,
        }
    }

    fn pull(&self, host: &str, env: &[(&str, &str)]) -> Run {
        self.bfcfs(&["pull", "-q", &format!("{host}/t:latest")], env)
    }

    /// The store works and nothing was written outside it: a good pull, `images --json`,
    /// `verify --deep` of every layer file, `prune`.
    fn still_works(&self) {
        let temps = temp_files(&self.store());
        assert!(
            temps.is_empty(),
            "the failed pull left temp files: {temps:?}"
        );
        let names: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "store")
            .collect();
        assert!(names.is_empty(), "files outside the store: {names:?}");
        let good = good_server();
        let r = self.pull(&good.host(), &[]);
        assert_eq!(r.code, Some(0), "good pull after the case: {}", r.stderr);
        let out = Command::new(env!("CARGO_BIN_EXE_bfcfs"))
            .arg("--root")
            .arg(self.store())
            .args(["images", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v.as_array().is_some_and(|a| !a.is_empty()), "images: {v}");
        for layer in bfc_files(&self.store()) {
            let r = self.bfcfs(&["verify", "--deep", layer.to_str().unwrap()], &[]);
            assert_eq!(r.code, Some(0), "verify {}: {}", layer.display(), r.stderr);
        }
        let r = self.bfcfs(&["prune"], &[]);
        assert_eq!(r.code, Some(0), "prune: {}", r.stderr);
        peak_rss_ok();
    }
}

fn bfc_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(bfc_files(&p));
            } else if p.extension().is_some_and(|x| x == "bfc") {
                out.push(p);
            }
        }
    }
    out
}

/// The largest peak RSS of any child waited for so far stays under 200 MiB.
fn peak_rss_ok() {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_CHILDREN with a valid pointer to a rusage struct.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    assert_eq!(rc, 0);
    let kib = ru.ru_maxrss;
    assert!(kib < 200 * 1024, "peak RSS of a bfcfs run: {kib} KiB");
    eprintln!("peak RSS of the bfcfs runs so far: {kib} KiB");
}

/// Exit 1, one `bfcfs:` line naming each of `needles`, within `bound`.
#[track_caller]
fn fails_clearly(r: &Run, needles: &[&str], bound: Duration) {
    assert!(!r.stderr.contains("panicked"), "panic: {}", r.stderr);
    assert_eq!(r.code, Some(1), "stderr: {}", r.stderr);
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("bfcfs:"))
        .collect();
    assert_eq!(lines.len(), 1, "want one bfcfs: line, stderr: {}", r.stderr);
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} missing from {:?}", lines[0]);
    }
    assert!(r.took < bound, "took {:?}, bound {bound:?}", r.took);
    eprintln!(
        "failed as expected in {:?} (bound {bound:?}): {}",
        r.took, lines[0]
    );
}

#[track_caller]
fn succeeds(r: &Run, bound: Duration) {
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert!(r.took < bound, "took {:?}, bound {bound:?}", r.took);
    eprintln!("succeeded in {:?} (bound {bound:?})", r.took);
}

#[test]
fn good_registry_baseline() {
    let sc = Scratch::new();
    let srv = good_server();
    succeeds(&sc.pull(&srv.host(), &[]), Duration::from_secs(10));
    sc.still_works();
}

#[test]
fn drip_body_fails_on_the_speed_rule_with_bounded_resumes() {
    // One byte every 200 ms (5 B/s, under the 1024 B/s minimum). Each attempt gives up after
    // the 2 s window; each made progress, so after 3 resumes the pull stops.
    // Bound: 4 attempts x ~2 s + backoff < 20 s.
    let sc = Scratch::new();
    let srv = server(Fixture::standard(), |fx, r, s, _| {
        if r.path == fx.layer_path() {
            let from = r
                .header("range")
                .and_then(|v| v.strip_prefix("bytes="))
                .and_then(|v| v.strip_suffix('-'))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0)
                .min(fx.layer.len());
            let len = fx.layer.len();
            if from > 0 {
                head(
                    s,
                    206,
                    &[
                        ("Content-Length", (len - from).to_string()),
                        ("Content-Range", format!("bytes {from}-{}/{len}", len - 1)),
                    ],
                );
            } else {
                head(s, 200, &[("Content-Length", len.to_string())]);
            }
            drip(
                s,
                &fx.layer[from..],
                Duration::from_millis(200),
                Duration::from_secs(30),
            );
        } else {
            fx.serve(r, s)
        }
    });
    let r = sc.pull(&srv.host(), &[]);
    fails_clearly(
        &r,
        &["giving up on blob", "3 resumed transfers", "too slow"],
        Duration::from_secs(20),
    );
    let layer_gets = srv
        .requests()
        .iter()
        .filter(|q| {
            q.path.contains("/blobs/") && q.path.ends_with(&sha(&Fixture::standard().layer)[7..])
        })
        .count();
    assert_eq!(layer_gets, 4, "one GET plus 3 resumes");
    sc.still_works();
}

#[test]
fn headers_then_silence_gives_up_in_bounded_time() {
    // The layer's headers arrive, then nothing. Each attempt times out after the 2 s window
    // with no progress, so the retry budget (4 retries) applies: 5 x 2 s + backoff < 20 s.
    let sc = Scratch::new();
    let srv = server(Fixture::standard(), |fx, r, s, _| {
        if r.path == fx.layer_path() {
            head(s, 200, &[("Content-Length", fx.layer.len().to_string())]);
            std::thread::sleep(Duration::from_secs(8));
        } else {
            fx.serve(r, s)
        }
    });
    let r = sc.pull(&srv.host(), &[]);
    fails_clearly(
        &r,
        &["/blobs/sha256:", "sent no data for 2 s"],
        Duration::from_secs(20),
    );
    sc.still_works();
}

#[test]
fn silence_before_the_headers_gives_up_in_bounded_time() {
    // The manifest request is accepted and never answered. Bound: 5 x 2 s + backoff < 20 s.
    let sc = Scratch::new();
    let srv = server(Fixture::standard(), |fx, r, s, _| {
        if r.path.contains("/manifests/") {
            std::thread::sleep(Duration::from_secs(8));
        } else {
            fx.serve(r, s)
        }
    });
    let r = sc.pull(&srv.host(), &[]);
    fails_clearly(
        &r,
        &["/manifests/latest", "sent no response for 2 s"],
        Duration::from_secs(20),
    );
    sc.still_works();
}

#[test]
fn retry_after_is_honoured() {
    // 429 with Retry-After: 2 on the first manifest request; the backoff alone (50 ms) would
    // retry too early, so the server counts how soon the retry came. Bound: < 10 s.
    let sc = Scratch::new();
    let first = Arc::new(Mutex::new(None::<Instant>));
    let early = Arc::new(AtomicUsize::new(0));
    let (first2, early2) = (first.clone(), early.clone());
    let srv = server(Fixture::standard(), move |fx, r, s, n| {
        if r.path.contains("/manifests/") {
            let mut f = first2.lock().unwrap();
            match (*f, n) {
                (None, _) => {
                    *f = Some(Instant::now());
                    respond(s, 429, &[("Retry-After", "2".into())], b"slow down");
                    return;
                }
                (Some(t), _) if t.elapsed() < Duration::from_millis(1900) => {
                    early2.fetch_add(1, Ordering::SeqCst);
                    respond(s, 429, &[("Retry-After", "2".into())], b"too early");
                    return;
                }
                _ => {}
            }
        }
        fx.serve(r, s)
    });
    let r = sc.pull(&srv.host(), &[]);
    succeeds(&r, Duration::from_secs(10));
    assert_eq!(
        early.load(Ordering::SeqCst),
        0,
        "retried before Retry-After"
    );
    assert!(r.took >= Duration::from_secs(2));
    sc.still_works();
}

#[test]
fn retry_after_over_the_cap_fails_saying_how_long() {
    // 503 Retry-After: 3600 is over the 3 s cap: fail at once. Bound: < 5 s.
    let sc = Scratch::new();
    let srv = server(Fixture::standard(), |fx, r, s, _| {
        if r.path.contains("/manifests/") {
            respond(s, 503, &[("Retry-After", "3600".into())], b"maintenance");
        } else {
            fx.serve(r, s)
        }
    });
    let r = sc.pull(&srv.host(), &[]);
    fails_clearly(
        &r,
        &["HTTP 503", "asked to wait 3600 s", "longer than the 3 s"],
        Duration::from_secs(5),
    );
    sc.still_works();
}

#[test]
fn retry_after_as_an_http_date_is_honoured() {
    // 503 with `Retry-After: <IMF-fixdate 2 s after the response's Date>`: the wait is the
    // difference of the two dates (the registry's clock, not ours), so no retry may come within
    // 1.9 s. A second case sends no Date: the wait is then counted from our clock. Bound: < 10 s.
    for with_date in [true, false] {
        let sc = Scratch::new();
        let first = Arc::new(Mutex::new(None::<Instant>));
        let early = Arc::new(AtomicUsize::new(0));
        let (first2, early2) = (first.clone(), early.clone());
        let srv = server(Fixture::standard(), move |fx, r, s, _| {
            if r.path.contains("/manifests/") {
                let mut f = first2.lock().unwrap();
                let too_soon = f.is_some_and(|t| t.elapsed() < Duration::from_millis(1900));
                if f.is_none() || too_soon {
                    if too_soon {
                        early2.fetch_add(1, Ordering::SeqCst);
                    }
                    f.get_or_insert_with(Instant::now);
                    // Whole seconds (HTTP dates have no fraction): a Date of the current second
                    // and a Retry-After 2 s later, or 3 s later from now without a Date.
                    let now = std::time::SystemTime::now();
                    let mut h = vec![];
                    let later = if with_date {
                        h.push(("Date", httpdate::fmt_http_date(now)));
                        now + Duration::from_secs(2)
                    } else {
                        now + Duration::from_secs(3)
                    };
                    h.push(("Retry-After", httpdate::fmt_http_date(later)));
                    respond(s, 503, &h, b"come back later");
                    return;
                }
            }
            fx.serve(r, s)
        });
        let r = sc.pull(&srv.host(), &[]);
        succeeds(&r, Duration::from_secs(10));
        assert_eq!(
            early.load(Ordering::SeqCst),
            0,
            "retried before the Retry-After date (with Date: {with_date})"
        );
        assert!(r.took >= Duration::from_millis(1900), "took {:?}", r.took);
        sc.still_works();
    }
}

#[test]
fn retry_after_date_over_the_cap_fails_saying_how_long() {
    // 429 with a Retry-After date one hour after the response's Date: over the 3 s cap, fail at
    // once, saying how long. Bound: < 5 s.
    let sc = Scratch::new();
    let srv = server(Fixture::standard(), |fx, r, s, _| {
        if r.path.contains("/manifests/") {
            let now = std::time::SystemTime::now();
            let h = [
                ("Date", httpdate::fmt_http_date(now)),
                (
                    "Retry-After",
                    httpdate::fmt_http_date(now + Duration::from_secs(3600)),
                ),
            ];
            respond(s, 429, &h, b"quota");
        } else {
            fx.serve(r, s)
        }
    });
    let r = sc.pull(&srv.host(), &[]);
    fails_clearly(
        &r,
        &["HTTP 429", "asked to wait 3600 s", "longer than the 3 s"],
        Duration::from_secs(5),
    );
    sc.still_works();
}

#[test]
fn short_body_resumes_with_range() {
    // The first layer response promises the whole blob and stops halfway; the resume with
    // Range gets the rest. Bound: < 10 s.
    let sc = Scratch::new();
    let srv = server(Fixture::standard(), |fx, r, s, n| {
        if r.path == fx.layer_path() && n == 0 {
            head(s, 200, &[("Content-Length", fx.layer.len().to_string())]);
            let _ = s.write_all(&fx.layer[..fx.layer.len() / 2]);
        } else {
            fx.serve(r, s)
        }
    });
    succeeds(&sc.pull(&srv.host(), &[]), Duration::from_secs(10));
    let reqs = srv.requests();
    assert!(
        reqs.iter().any(|q| q.header("range").is_some()),
        "no Range request: {reqs:?}"
    );
    sc.still_works();
}

#[test]
fn lying_content_length_every_time_fails() {
    // Every layer response is cut short and the server ignores Range: no attempt gets further
    // than the one before, so the retry budget ends it. Bound: < 10 s.
    let sc = Scratch::new();
    let srv = server(Fixture::standard(), |fx, r, s, _| {
        if r.path == fx.layer_path() {
            head(
                s,
                200,
                &[("Content-Length", (fx.layer.len() * 4).to_string())],
            );
            let _ = s.write_all(&fx.layer[..fx.layer.len() / 2]);
        } else {
            fx.serve(r, s)
        }
    });
    let r = sc.pull(&srv.host(), &[]);
    fails_clearly(&r, &["/blobs/sha256:"], Duration::from_secs(10));
    sc.still_works();
}

#[test]
fn redirect_loop_stops() {
    // Bound: < 5 s.
    let sc = Scratch::new();
    let srv = server(Fixture::standard(), |fx, r, s, _| {
        if r.path == fx.layer_path() {
            respond(s, 302, &[("Location", r.path.clone())], b"");
        } else {
            fx.serve(r, s)
        }
    });
    let r = sc.pull(&srv.host(), &[]);
    fails_clearly(&r, &["more than 5 redirects"], Duration::from_secs(5));
    sc.still_works();
}

#[test]
fn cross_host_redirect_carries_no_credentials() {
    // The registry wants Basic auth and redirects the layer to another host (another port on
    // loopback), which must see no Authorization header. Bound: < 10 s.
    let sc = Scratch::new();
    let other = good_server();
    let other_host = other.host();
    let srv = server(Fixture::standard(), move |fx, r, s, _| {
        if r.path != "/v2/" && r.header("authorization").is_none() {
            respond(
                s,
                401,
                &[("WWW-Authenticate", "Basic realm=\"test\"".into())],
                b"",
            );
        } else if r.path == fx.layer_path() {
            respond(
                s,
                307,
                &[("Location", format!("http://{other_host}{}", r.path))],
                b"",
            );
        } else {
            fx.serve(r, s)
        }
    });
    let r = sc.bfcfs(
        &[
            "pull",
            "-q",
            "--creds",
            "user:secret",
            &format!("{}/t:latest", srv.host()),
        ],
        &[],
    );
    succeeds(&r, Duration::from_secs(10));
    assert!(srv
        .requests()
        .iter()
        .any(|q| q.header("authorization").is_some()));
    let seen = other.requests();
    assert!(!seen.is_empty(), "the redirect was not followed");
    assert!(
        seen.iter().all(|q| q.header("authorization").is_none()),
        "credentials reached another host: {seen:?}"
    );
    sc.still_works();
}

#[test]
fn endless_manifest_is_capped() {
    // A manifest without Content-Length that never ends: refused at the 4 MiB cap. Bound: < 10 s.
    let sc = Scratch::new();
    let srv = server(Fixture::standard(), |fx, r, s, _| {
        if r.path.contains("/manifests/") {
            head(s, 200, &[("Content-Type", MANIFEST_TYPE.into())]);
            let chunk = vec![b' '; 64 * 1024];
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(20) && s.write_all(&chunk).is_ok() {}
        } else {
            fx.serve(r, s)
        }
    });
    let r = sc.pull(&srv.host(), &[]);
    fails_clearly(&r, &["manifest exceeds the cap"], Duration::from_secs(10));
    sc.still_works();
}

#[test]
fn huge_declared_manifest_is_refused() {
    // Content-Length of 10 GB on the manifest: refused before reading. Bound: < 5 s.
    let sc = Scratch::new();
    let srv = server(Fixture::standard(), |fx, r, s, _| {
        if r.path.contains("/manifests/") {
            head(
                s,
                200,
                &[
                    ("Content-Type", MANIFEST_TYPE.into()),
                    ("Content-Length", "10000000000".into()),
                ],
            );
            let _ = s.write_all(b"{");
        } else {
            fx.serve(r, s)
        }
    });
    let r = sc.pull(&srv.host(), &[]);
    fails_clearly(&r, &["manifest exceeds the cap"], Duration::from_secs(5));
    sc.still_works();
}

#[test]
fn digest_lie_is_refused() {
    // The layer served is the right size but other bytes. Bound: < 10 s.
    let sc = Scratch::new();
    let srv = server(Fixture::standard(), |fx, r, s, _| {
        if r.path == fx.layer_path() {
            let mut b = fx.layer.clone();
            let last = b.len() - 1;
            b[last] ^= 0xff;
            respond(s, 200, &[], &b);
        } else {
            fx.serve(r, s)
        }
    });
    let r = sc.pull(&srv.host(), &[]);
    fails_clearly(&r, &["digest"], Duration::from_secs(10));
    sc.still_works();
}

#[test]
fn escapes_in_an_error_body_are_not_printed_raw() {
    // The 404 body retitles the terminal and clears the screen if printed raw. Bound: < 5 s.
    let sc = Scratch::new();
    let srv = server(Fixture::standard(), |fx, r, s, _| {
        if r.path.contains("/manifests/") {
            respond(s, 404, &[], b"\x1b]0;pwned\x07\x1b[2J gone");
        } else {
            fx.serve(r, s)
        }
    });
    let r = sc.pull(&srv.host(), &[]);
    fails_clearly(
        &r,
        &["HTTP 404", "\\u{1b}]0;pwned\\u{7}"],
        Duration::from_secs(5),
    );
    sc.still_works();
}

#[test]
fn escapes_in_a_member_name_are_not_printed_raw() {
    // A member named with escape sequences and a broken mode field: tar-rs quotes the raw name
    // in its error. Bound: < 5 s.
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    raw_name(&mut h, b"\x1b]0;pwned\x07\x1b[2J");
    h.as_old_mut().mode = *b"zzzzzzz\0";
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(&[0u8; 1024]);
    let sc = Scratch::new();
    let srv = server(
        Fixture::from_layer(Layer {
            tar,
            comp: Comp::Gzip,
        }),
        |fx, r, s, _| fx.serve(r, s),
    );
    let r = sc.pull(&srv.host(), &[]);
    fails_clearly(&r, &["mode", "\\u{1b}]0;pwned"], Duration::from_secs(5));
    sc.still_works();
}

#[test]
fn lying_token_endpoint() {
    // A Bearer realm whose token never expires (expires_in = u64::MAX) works; one that answers
    // garbage fails clearly. Bound: < 10 s each.
    for (body, ok) in [
        (
            &br#"{"token":"T","expires_in":18446744073709551615}"#[..],
            true,
        ),
        (&b"\x1b[2J not json"[..], false),
    ] {
        let sc = Scratch::new();
        let port = Arc::new(AtomicUsize::new(0));
        let port2 = port.clone();
        let srv = server(Fixture::standard(), move |fx, r, s, _| {
            if r.path.starts_with("/token") {
                respond(s, 200, &[], body);
            } else if r.path != "/v2/" && r.header("authorization") != Some("Bearer T") {
                let realm = format!("http://127.0.0.1:{}/token", port2.load(Ordering::SeqCst));
                respond(
                    s,
                    401,
                    &[(
                        "WWW-Authenticate",
                        format!("Bearer realm=\"{realm}\",service=\"t\""),
                    )],
                    b"",
                );
            } else {
                fx.serve(r, s)
            }
        });
        port.store(usize::from(srv.port), Ordering::SeqCst);
        let r = sc.pull(&srv.host(), &[]);
        if ok {
            succeeds(&r, Duration::from_secs(10));
        } else {
            fails_clearly(&r, &["token response"], Duration::from_secs(10));
        }
        sc.still_works();
    }
}

#[test]
fn sparse_bomb_through_the_registry_fails_fast() {
    // 64 GNU sparse members of 1 GiB each in a blob of a few hundred bytes: the layer budget
    // stops it at the second member. `-c zstd` keeps the one GiB that fits small on disk.
    // Bound: < 30 s, store growth < 64 MiB.
    let tar = sparse_bomb(64, 1 << 30);
    assert!(compress(&tar, Comp::Gzip).len() < 4096);
    let sc = Scratch::new();
    let srv = server(
        Fixture::from_layer(Layer {
            tar,
            comp: Comp::Gzip,
        }),
        |fx, r, s, _| fx.serve(r, s),
    );
    let r = sc.bfcfs(
        &[
            "pull",
            "-q",
            "-c",
            "zstd",
            &format!("{}/t:latest", srv.host()),
        ],
        &[],
    );
    fails_clearly(&r, &["expansion cap", "s01"], Duration::from_secs(30));
    let used: u64 = du(&sc.store());
    assert!(used < 64 << 20, "store holds {used} bytes");
    sc.still_works();
}

#[test]
fn server_errors_forever_fail_after_the_retries() {
    // 500 on every manifest request: 1 + 4 retries, then exit 1. Bound: < 5 s.
    let sc = Scratch::new();
    let srv = server(Fixture::standard(), |fx, r, s, _| {
        if r.path.contains("/manifests/") {
            respond(s, 500, &[], b"internal");
        } else {
            fx.serve(r, s)
        }
    });
    let r = sc.pull(&srv.host(), &[]);
    fails_clearly(&r, &["HTTP 500"], Duration::from_secs(5));
    let gets = srv
        .requests()
        .iter()
        .filter(|q| q.path.contains("/manifests/"))
        .count();
    assert_eq!(gets, 5);
    sc.still_works();
}

fn du(p: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = match e.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            n += if m.is_dir() { du(&e.path()) } else { m.len() };
        }
    }
    n
}

/// Temp files anywhere in the store: everything in `tmp/`, names in `layers/` other than
/// `<64 hex>.bfc`, hidden `.tmp` files in the root.
fn temp_files(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let list = |d: &Path| -> Vec<(String, PathBuf)> {
        std::fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                    .collect()
            })
            .unwrap_or_default()
    };
    out.extend(list(&store.join("tmp")).into_iter().map(|(_, p)| p));
    for (n, p) in list(&store.join("layers")) {
        let hex = n
            .strip_suffix(".bfc")
            .or_else(|| n.strip_suffix(".tar-split"))
            .unwrap_or("");
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            out.push(p);
        }
    }
    for (n, p) in list(store) {
        if n.ends_with(".tmp") {
            out.push(p);
        }
    }
    out
}

#[test]
fn kill_9_during_pull_then_the_next_command_removes_the_temp_files() {
    // A 4 MiB incompressible layer served at 256 KiB per 40 ms (~0.7 s), pulls killed with
    // SIGKILL at five moments (during the manifest, the download and the conversion). The next
    // command that takes the store lock (a pull of another image, shared lock) removes every
    // temp file of the dead processes; `prune` then finds none. Bound: < 30 s in all.
    let big = Layer::new(&[M::File("big", noise(4 << 20, 7))], Comp::Gzip);
    let slow = server(Fixture::from_layer(big), |fx, r, s, _| {
        if r.path == fx.layer_path() {
            head(s, 200, &[("Content-Length", fx.layer.len().to_string())]);
            for c in fx.layer.chunks(256 << 10) {
                if s.write_all(c).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(40));
            }
        } else {
            fx.serve(r, s)
        }
    });
    let sc = Scratch::new();
    let t0 = Instant::now();
    let mut left_behind = 0;
    for ms in [30u64, 150, 350, 600, 900] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bfcfs"))
            .arg("--root")
            .arg(sc.store())
            .args(["pull", "-q", &format!("{}/t:latest", slow.host())])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        child.kill().unwrap();
        child.wait().unwrap();
        left_behind = left_behind.max(temp_files(&sc.store()).len());
    }
    assert!(
        left_behind > 0,
        "no kill left a temp file: the test proves nothing"
    );
    // Another pull takes the shared lock: the dead pulls' temp files go.
    let good = good_server();
    succeeds(&sc.pull(&good.host(), &[]), Duration::from_secs(10));
    let temps = temp_files(&sc.store());
    assert!(temps.is_empty(), "after a pull: {temps:?}");
    let r = sc.bfcfs(&["prune"], &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(temp_files(&sc.store()).is_empty());
    eprintln!(
        "{left_behind} temp files at most after a kill; all gone; {:?}",
        t0.elapsed()
    );
    assert!(t0.elapsed() < Duration::from_secs(30));
    sc.still_works();
}

#[test]
fn prune_refuses_when_an_image_record_is_damaged() {
    // Two images; the manifest or config blob of one is damaged or missing: `prune` fails,
    // naming the blob, and removes nothing. A container's state keeps its image (by its
    // `image` field only: a digest elsewhere in the state keeps nothing). Bound: < 5 s each.
    let sc = Scratch::new();
    let fa = Fixture::new(&[M::File("a", b"image a".to_vec())]);
    let fb = Fixture::new(&[M::File("b", b"image b".to_vec())]);
    let (ma, ca, mb) = (sha(&fa.manifest), sha(&fa.config), sha(&fb.manifest));
    let layer_a = Image::new(
        vec![Layer::new(&[M::File("a", b"image a".to_vec())], Comp::Gzip)],
        "amd64",
        false,
    );
    let diff_a = layer_a.layers[0].diff_id();
    let diff_b = Layer::new(&[M::File("b", b"image b".to_vec())], Comp::Gzip).diff_id();
    let sa = server(fa, |fx, r, s, _| fx.serve(r, s));
    let sb = server(fb, |fx, r, s, _| fx.serve(r, s));
    succeeds(&sc.pull(&sa.host(), &[]), Duration::from_secs(10));
    succeeds(&sc.pull(&sb.host(), &[]), Duration::from_secs(10));
    let store = sc.store();
    let blob = |d: &str| store.join("blobs/sha256").join(&d[7..]);
    let layer = |d: &str| store.join("layers").join(format!("{}.bfc", &d[7..]));
    // Layer files, not their tar-split side files.
    let count = |d: &str| {
        std::fs::read_dir(store.join(d))
            .unwrap()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().ends_with(".tar-split"))
            .count()
    };
    let (blobs, layers) = (count("blobs/sha256"), count("layers"));
    assert_eq!(layers, 2);

    for (what, digest, damage) in [
        ("manifest", &ma, "flip"),
        ("config", &ca, "flip"),
        ("manifest", &ma, "delete"),
        ("config", &ca, "truncate"),
    ] {
        let p = blob(digest);
        let good = std::fs::read(&p).unwrap();
        match damage {
            "flip" => {
                let mut b = good.clone();
                b[0] ^= 0x20;
                std::fs::write(&p, b).unwrap();
            }
            "truncate" => std::fs::write(&p, &good[..good.len() / 2]).unwrap(),
            _ => std::fs::remove_file(&p).unwrap(),
        }
        let r = sc.bfcfs(&["prune"], &[]);
        fails_clearly(
            &r,
            &[what, &digest[7..], "nothing was removed"],
            Duration::from_secs(5),
        );
        let now_blobs = count("blobs/sha256") + usize::from(damage == "delete");
        assert_eq!(
            (now_blobs, count("layers")),
            (blobs, layers),
            "{what} {damage}: something was removed"
        );
        std::fs::write(&p, good).unwrap();
    }
    sc.bfcfs(&["prune"], &[]);
    assert_eq!(count("layers"), 2);

    // A container made from image A; its `reference` names image B's manifest, which must not
    // keep B alive.
    let cdir = store.join("containers/c1");
    std::fs::create_dir_all(&cdir).unwrap();
    let state = serde_json::json!({"name": "c1", "image": ma, "reference": mb, "created": 0});
    std::fs::write(cdir.join("state.json"), state.to_string()).unwrap();
    // `-f`: `rm` refuses an image a container uses; forced, it untags it and the container's
    // record still keeps its layers.
    let r = sc.bfcfs(
        &[
            "rm",
            "-f",
            &format!("{}/t:latest", sa.host()),
            &format!("{}/t:latest", sb.host()),
        ],
        &[],
    );
    assert_eq!(r.code, Some(0), "rm: {}", r.stderr);
    assert!(
        layer(&diff_a).exists(),
        "the container's image lost its layer"
    );
    assert!(
        !layer(&diff_b).exists(),
        "a digest in the state's reference kept image B alive"
    );
    assert!(blob(&ma).exists() && blob(&ca).exists());
    assert!(!blob(&mb).exists());

    // A state that does not parse: refused as before.
    std::fs::write(cdir.join("state.json"), b"{not json").unwrap();
    let r = sc.bfcfs(&["prune"], &[]);
    fails_clearly(
        &r,
        &["state.json", "nothing was removed"],
        Duration::from_secs(5),
    );
    assert!(layer(&diff_a).exists());
    std::fs::remove_dir_all(&cdir).unwrap();
    sc.still_works();
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    /// None when tmpfs cannot be mounted here (not root, no mount permission).
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallFs { dir })
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn pull_into_a_full_filesystem_fails_clearly_and_leaves_no_temp_file() {
    // The store on a 3 MiB tmpfs, a 4 MiB incompressible layer: ENOSPC while the blob is
    // written. Exit 1 naming the cause, no temp file left, and after space is freed (a bigger
    // layer is not needed: the small standard image fits) the store works. Bound: < 10 s.
    let Some(fs) = SmallFs::mount("3m") else {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    };
    let big = Layer::new(&[M::File("big", noise(4 << 20, 9))], Comp::Gzip);
    let srv = server(Fixture::from_layer(big), |fx, r, s, _| fx.serve(r, s));
    let store = fs.dir.path().join("store");
    let run = |host: &str| {
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_bfcfs"))
            .arg("--root")
            .arg(&store)
            .args(["pull", "-q", &format!("{host}/t:latest")])
            .env("BFCFS_RETRY_BACKOFF_MS", "50")
            .output()
            .unwrap();
        Run {
            code: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: t.elapsed(),
        }
    };
    let r = run(&srv.host());
    fails_clearly(&r, &["No space left on device"], Duration::from_secs(10));
    let temps = temp_files(&store);
    assert!(temps.is_empty(), "the failed pull left {temps:?}");
    let good = good_server();
    succeeds(&run(&good.host()), Duration::from_secs(10));
    drop(fs);
}
