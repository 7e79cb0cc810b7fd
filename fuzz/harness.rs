//! What each fuzz target does with one input, shared by the targets in `fuzz_targets/` and by
//! `tests/fuzz_regressions.rs`, which replays every saved input through the same function.
//! Each function must return without panicking, hanging or allocating without bound.
#![allow(dead_code)]
use bfcfs::bfc::{Container, Writer, WriterOptions};
use bfcfs::convert::{self, sanitize::Limits};
use bfcfs::oci::auth::{Challenge, Credentials, Session};
use bfcfs::oci::{self, ImageRef, PlatformSpec, Source};
use std::io::{Cursor, Read, Write};

/// Layer conversion. The first byte picks how the rest reaches the converter: as it is (the
/// converter sniffs gzip and zstd itself), or compressed here with gzip or zstd, so that a
/// mutated tar is also parsed behind each decoder. A conversion that succeeds must give a
/// container that opens and whose every file reads.
pub fn convert_layer(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let blob: Vec<u8> = match mode % 3 {
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let _ = e.write_all(rest);
            e.finish().unwrap_or_default()
        }
        2 => zstd::encode_all(rest, 1).unwrap_or_default(),
        _ => rest.to_vec(),
    };
    // Small caps keep each run fast; the budget logic is the same at any size.
    let limits = Limits {
        max_member: 8 << 20,
        max_total: 16 << 20,
        max_members: 4096,
    };
    let mut w = match Writer::new(
        Cursor::new(Vec::new()),
        WriterOptions::default(),
        "fuzz.bfc".as_ref(),
    ) {
        Ok(w) => w,
        Err(e) => panic!("writer: {e}"),
    };
    if convert::convert_layer(&blob[..], &mut w, b"", "sha256:fuzz", limits).is_err() {
        return;
    }
    let bytes = match w.finish() {
        Ok(c) => c.into_inner(),
        Err(e) => panic!("a converted layer does not finish: {e}"),
    };
    let c = match Container::from_bytes("fuzz.bfc", bytes) {
        Ok(c) => c,
        Err(e) => panic!("a converted layer does not open: {e}"),
    };
    for i in 0..c.len() {
        let kind = match c.entry(i) {
            Ok(e) => e.kind,
            Err(e) => panic!("entry {i} of a converted layer does not decode: {e}"),
        };
        if kind == bfcfs::bfc::Kind::File {
            let mut r = match c.open_reader(i) {
                Ok(r) => r,
                Err(e) => panic!("entry {i} of a converted layer does not read: {e}"),
            };
            let mut sink = Vec::new();
            if let Err(e) = r.read_to_end(&mut sink) {
                panic!("entry {i} of a converted layer does not read: {e}");
            }
        }
    }
}

/// OCI documents: the bytes as a manifest or index under each content type, then as an image
/// config for a manifest, and an index through the platform choice.
pub fn oci_documents(data: &[u8]) {
    let url = "http://127.0.0.1/v2/fuzz/manifests/x";
    for ct in [
        None,
        Some(oci::media::OCI_MANIFEST),
        Some(oci::media::OCI_INDEX),
        Some(oci::media::DOCKER_LIST),
        Some("application/json; charset=utf-8"),
    ] {
        match oci::decode_document(url, ct, data) {
            Ok(oci::Document::Manifest(m)) => {
                let _ = oci::check_image(url, &m, data);
            }
            Ok(oci::Document::Index(i)) => {
                let _ = PlatformSpec::host().choose("fuzz", &i);
                if let Ok(p) = "linux/arm64/v8".parse::<PlatformSpec>() {
                    let _ = p.choose("fuzz", &i);
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}

/// WWW-Authenticate challenges and token responses: the text as a challenge, answered with
/// the same bytes as the token server's reply.
pub fn auth(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = Credentials::parse(&text);
    let Some(c) = Challenge::parse(&text) else {
        return;
    };
    let _ = c.param("realm");
    let s = Session::new(Credentials::parse("u:p"));
    let fetch = |_: &str, _: &[(&str, &str)], _: Option<&str>| Ok(data.to_vec());
    if s.answer("http://127.0.0.1/v2/", "repository:fuzz:pull", &c, &fetch)
        .is_ok()
    {
        let _ = s.header("repository:fuzz:pull");
    }
    // The rest of the input after the first line as the token body, the first as the header.
    if let Some((first, rest)) = text.split_once('\n') {
        if let Some(c) = Challenge::parse(first) {
            let fetch = |_: &str, _: &[(&str, &str)], _: Option<&str>| Ok(rest.as_bytes().to_vec());
            let _ = Session::new(None).answer("http://127.0.0.1/v2/", "s", &c, &fetch);
        }
    }
}

/// Image references and SOURCE strings: a reference that parses prints as a string that
/// parses again to the same reference.
pub fn reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = text.parse::<ImageRef>() {
        let shown = r.to_string();
        let again: ImageRef = match shown.parse() {
            Ok(a) => a,
            Err(e) => panic!("{text:?} parses, prints as {shown:?}, which does not: {e}"),
        };
        assert_eq!(again.to_string(), shown, "{text:?}");
        let _ = (r.api_host(), r.manifest_reference(), r.name());
    }
    if let Ok(s) = text.parse::<Source>() {
        let _ = s.display_name();
    }
    let _ = text.parse::<PlatformSpec>();
}
