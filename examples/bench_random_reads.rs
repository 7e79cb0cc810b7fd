//! Helper of `scripts/bench-archive.sh` for the random-read benchmark.
//!
//! ```text
//! bench_random_reads gen OUT BYTES           deterministic text-like data (zstd -3 shrinks it ~3x)
//! bench_random_reads offsets N MAX SEED      N random byte offsets in [0, MAX), one per line
//! bench_random_reads bfc FILE.bfc PATH OFFS  4 KiB Container::read_at at each offset
//! bench_random_reads file PATH OFFS          4 KiB pread at each offset (e.g. on a squashfuse mount)
//! ```
//! `bfc` and `file` print `<seconds> <hash>`: the time of all reads (bfc: including the open)
//! and a hash of the bytes read, so two readers can be checked against each other.
use anyhow::{bail, Context, Result};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

const READ: usize = 4096;

/// SplitMix64: small, fast, deterministic.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Words from a 4096-word made-up vocabulary, with numbers, punctuation and line breaks.
fn gen(out: &Path, bytes: u64) -> Result<()> {
    let mut rng = Rng(42);
    let letters = b"etaoinshrdlcumwfgypbvkjxqz";
    let vocab: Vec<Vec<u8>> = (0..4096)
        .map(|_| {
            let len = 2 + (rng.next() % 9) as usize;
            // Skewed towards common letters, as in English text.
            (0..len)
                .map(|_| letters[((rng.next() % 26) * (rng.next() % 26) / 25) as usize])
                .collect()
        })
        .collect();
    let f = std::fs::File::create(out).with_context(|| format!("create {}", out.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut written = 0u64;
    let mut line = Vec::with_capacity(256);
    while written < bytes {
        line.clear();
        let words = 6 + rng.next() % 12;
        for k in 0..words {
            let r = rng.next();
            if k > 0 {
                line.push(b' ');
            }
            if r % 23 == 0 {
                line.extend_from_slice((r >> 20).to_string().as_bytes());
            } else {
                // Zipf-like: low word numbers are much more frequent.
                let idx = ((r >> 8) % 4096) * ((r >> 24) % 4096) / 4096;
                line.extend_from_slice(&vocab[idx as usize]);
            }
        }
        line.extend_from_slice(if rng.next() % 5 == 0 { b".\n" } else { b",\n" });
        let n = line.len().min((bytes - written) as usize);
        w.write_all(&line[..n])?;
        written += n as u64;
    }
    w.flush()?;
    Ok(())
}

fn offsets(n: usize, max: u64, seed: u64) {
    let mut rng = Rng(seed);
    for _ in 0..n {
        println!("{}", rng.next() % max);
    }
}

fn read_offsets(path: &Path) -> Result<Vec<u64>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    text.lines()
        .map(|l| l.trim().parse().with_context(|| format!("offset {l:?}")))
        .collect()
}

/// FNV-1a over everything read.
fn hash(h: &mut u64, data: &[u8]) {
    for b in data {
        *h = (*h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut buf = vec![0u8; READ];
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    match a.as_slice() {
        ["gen", out, bytes] => gen(Path::new(out), bytes.parse()?)?,
        ["offsets", n, max, seed] => offsets(n.parse()?, max.parse()?, seed.parse()?),
        ["bfc", file, path, offs] => {
            let offs = read_offsets(Path::new(offs))?;
            let t = Instant::now();
            let c = bfcfs::bfc::Container::open(Path::new(file))?;
            let i = c
                .find(path.as_bytes())
                .with_context(|| format!("{path} is not in {file}"))?;
            for off in offs {
                let n = c.read_at(i, off, &mut buf)?;
                hash(&mut h, &buf[..n]);
            }
            println!("{:.6} {h:016x}", t.elapsed().as_secs_f64());
        }
        ["file", path, offs] => {
            let offs = read_offsets(Path::new(offs))?;
            let t = Instant::now();
            let f = std::fs::File::open(path).with_context(|| format!("open {path}"))?;
            for off in offs {
                let mut n = 0;
                while n < READ {
                    let k = f.read_at(&mut buf[n..], off + n as u64)?;
                    if k == 0 {
                        break;
                    }
                    n += k;
                }
                hash(&mut h, &buf[..n]);
            }
            println!("{:.6} {h:016x}", t.elapsed().as_secs_f64());
        }
        _ => bail!("usage: see the doc comment of examples/bench_random_reads.rs"),
    }
    Ok(())
}
