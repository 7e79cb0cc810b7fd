//! What opening a container costs: time of `Container::open` plus the first listing of the root
//! (what mount -> first `ls` pays in the library), resident anonymous memory after it, and the
//! time to decode every entry (what `verify` and a full walk pay).
//!
//!     cargo run --release --example bench_open -- FILE.bfc [RUNS]
use bfcfs::bfc::Container;
use std::time::{Duration, Instant};

fn rss_anon_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(file), runs) = (args.get(1), args.get(2).and_then(|r| r.parse().ok())) else {
        return Err("usage: bench_open FILE.bfc [RUNS]".into());
    };
    let runs: usize = runs.unwrap_or(5);
    let before = rss_anon_kib();
    let c = Container::open(std::path::Path::new(file))?;
    let root = c.children(b"")?.len();
    let after = rss_anon_kib();
    drop(c);
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        let c = Container::open(std::path::Path::new(file))?;
        c.children(b"")?;
        best = best.min(t.elapsed());
    }
    let c = Container::open(std::path::Path::new(file))?;
    let t = Instant::now();
    for e in c.entries() {
        e?;
    }
    let all = t.elapsed();
    println!(
        "{file}: {} entries, {root} in the root; open + list root: {:.2} ms (best of {runs}); \
         RssAnon after open: +{} KiB; decode every entry: {:.0} ms",
        c.len(),
        best.as_secs_f64() * 1e3,
        after.saturating_sub(before),
        all.as_secs_f64() * 1e3
    );
    Ok(())
}
