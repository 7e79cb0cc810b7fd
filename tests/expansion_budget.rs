//! One expansion budget per layer: the holes of GNU sparse members count against the same
//! whole-layer cap ([`Limits::max_total`]) as the uncompressed stream, so a tiny blob that
//! declares huge sparse files fails fast instead of writing zeros until the disk is full.
mod pull_support;

use bfcfs::bfc::{Compression, Writer, WriterOptions};
use bfcfs::convert::{self, sanitize::Limits};
use pull_support::layout::{compress, sparse_bomb, Comp};
use std::io::BufWriter;
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;

/// Converts `blob`; returns the error text, the time taken and the output file's size.
fn run(blob: &[u8], limits: Limits, compression: Compression) -> (String, Duration, u64) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("layer.bfc");
    let f = std::fs::File::create(&out).unwrap();
    let opts = WriterOptions {
        compression,
        ..Default::default()
    };
    let mut w = Writer::new(BufWriter::new(f), opts, &out).unwrap();
    let t = Instant::now();
    let r = convert::convert_layer(blob, &mut w, b"", "sha256:sparse-bomb", limits);
    let took = t.elapsed();
    drop(w);
    let size = std::fs::metadata(&out).unwrap().len();
    let err = match r {
        Ok(s) => panic!("a sparse bomb was accepted: {s:?}"),
        Err(e) => bfcfs::error_chain::chain(&e),
    };
    (err, took, size)
}

#[test]
fn sixty_four_gib_of_sparse_members_in_a_tiny_blob_fail_fast() {
    let blob = compress(&sparse_bomb(64, GIB), Comp::Gzip);
    assert!(blob.len() < 4096, "the bomb is {} bytes", blob.len());
    // The default limits for this blob: each member passes the per-file cap (1 GiB + 100 x blob),
    // the layer as a whole must not. zstd keeps the one GiB of zeros that fits small on disk.
    let limits = Limits::for_blob(blob.len() as u64);
    assert!(limits.max_member >= GIB);
    let (err, took, size) = run(&blob, limits, Compression::Zstd);
    assert!(
        err.contains("expansion cap") && err.contains("\"s01\""),
        "error: {err}"
    );
    // Bound: one GiB of zeros through zstd takes a few seconds; 64 GiB would take minutes.
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert!(size < 64 << 20, "wrote {size} bytes");
}

#[test]
fn sparse_holes_share_the_budget_with_the_stream() {
    // 64 members of 4 MiB under a 32 MiB layer cap and no compression: the ninth member
    // overflows the cap before a byte of it is written, so the disk grows by at most the cap.
    let blob = sparse_bomb(64, 4 << 20);
    let limits = Limits {
        max_member: GIB,
        max_total: 32 << 20,
        max_members: 1000,
    };
    let (err, took, size) = run(&blob, limits, Compression::None);
    assert!(
        err.contains("expansion cap: it exceeds 33554432 bytes") && err.contains("\"s07\""),
        "error: {err}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(size <= 32 << 20, "wrote {size} bytes");
}
