//! Builds OCI image layouts (and the layer tars inside them) with our own code, so each test
//! knows exactly what the registry will serve.
#![allow(dead_code)]
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

pub fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

/// One member of a layer tar.
#[derive(Clone, Debug)]
pub enum Member {
    File(&'static str, Vec<u8>),
    FileMode(&'static str, Vec<u8>, u32, u64, u64),
    Dir(&'static str),
    Symlink(&'static str, &'static str),
    Hardlink(&'static str, &'static str),
    Fifo(&'static str),
    CharDev(&'static str, u32, u32),
    /// A file with PAX xattrs.
    Xattr(&'static str, &'static str, &'static [u8]),
    /// Raw name bytes (for hostile names), regular file.
    RawName(Vec<u8>, Vec<u8>),
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_mtime(1_700_000_000);
    h
}

/// Writes the members as an uncompressed tar.
pub fn tar(members: &[Member]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        match m {
            Member::File(p, data) => {
                let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
                b.append_data(&mut h, p, &data[..]).unwrap();
            }
            Member::FileMode(p, data, mode, uid, gid) => {
                let mut h = header(tar::EntryType::Regular, data.len() as u64, *mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                b.append_data(&mut h, p, &data[..]).unwrap();
            }
            Member::Dir(p) => {
                let mut h = header(tar::EntryType::Directory, 0, 0o755);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            Member::Symlink(p, t) => {
                let mut h = header(tar::EntryType::Symlink, 0, 0o777);
                b.append_link(&mut h, p, t).unwrap();
            }
            Member::Hardlink(p, t) => {
                let mut h = header(tar::EntryType::Link, 0, 0o644);
                b.append_link(&mut h, p, t).unwrap();
            }
            Member::Fifo(p) => {
                let mut h = header(tar::EntryType::Fifo, 0, 0o600);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            Member::CharDev(p, maj, min) => {
                let mut h = header(tar::EntryType::Char, 0, 0o666);
                h.set_device_major(*maj).unwrap();
                h.set_device_minor(*min).unwrap();
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            Member::Xattr(p, name, value) => {
                let key = format!("SCHILY.xattr.{name}");
                b.append_pax_extensions([(key.as_str(), *value)]).unwrap();
                let mut h = header(tar::EntryType::Regular, 1, 0o644);
                b.append_data(&mut h, p, &b"x"[..]).unwrap();
            }
            Member::RawName(name, data) => {
                let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
                raw_name(&mut h, name);
                h.set_cksum();
                b.append(&h, &data[..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// Puts `name` into the header's name field unchecked (tar-rs refuses `..` and absolute names).
pub fn raw_name(h: &mut tar::Header, name: &[u8]) {
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    field[..name.len()].copy_from_slice(name);
}

pub fn compress(data: &[u8], c: Comp) -> Vec<u8> {
    match c {
        Comp::None => data.to_vec(),
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Comp::Zstd => zstd::encode_all(data, 3).unwrap(),
    }
}

fn layer_media(c: Comp, docker: bool) -> &'static str {
    match (c, docker) {
        (Comp::None, false) => "application/vnd.oci.image.layer.v1.tar",
        (Comp::Gzip, false) => "application/vnd.oci.image.layer.v1.tar+gzip",
        (Comp::Zstd, false) => "application/vnd.oci.image.layer.v1.tar+zstd",
        (Comp::None, true) => "application/vnd.docker.image.rootfs.diff.tar",
        (_, true) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
    }
}

/// Members of every kind a layer conversion must keep: owner and mode bits (setuid), a symlink,
/// a hardlink, a fifo, a device, a PAX xattr and a GNU long name (`deep/d…/f…`).
pub fn rich_members() -> Vec<Member> {
    let long: &'static str =
        Box::leak(format!("deep/{}/{}", "d".repeat(120), "f".repeat(150)).into_boxed_str());
    vec![
        Member::Dir("etc"),
        Member::FileMode("etc/passwd", b"root:x:0:0\n".to_vec(), 0o640, 0, 42),
        Member::FileMode("bin/tool", b"#!/bin/sh\n".to_vec(), 0o4755, 0, 0),
        Member::Symlink("bin/sh", "/bin/tool"),
        Member::Hardlink("bin/tool2", "bin/tool"),
        Member::Fifo("run/fifo"),
        Member::CharDev("dev/null", 1, 3),
        Member::Xattr("bin/cap", "security.capability", b"\x01\x00\x00\x02"),
        Member::File(long, b"long".to_vec()),
    ]
}

/// A layer: its tar and how it is compressed.
#[derive(Clone)]
pub struct Layer {
    pub tar: Vec<u8>,
    pub comp: Comp,
}

impl Layer {
    pub fn new(members: &[Member], comp: Comp) -> Layer {
        Layer {
            tar: tar(members),
            comp,
        }
    }
    pub fn blob(&self) -> Vec<u8> {
        compress(&self.tar, self.comp)
    }
    pub fn diff_id(&self) -> String {
        sha(&self.tar)
    }
}

/// A single-platform image ready to be written into a layout or pushed.
pub struct Image {
    pub layers: Vec<Layer>,
    pub arch: &'static str,
    pub docker: bool,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    pub blobs: Vec<Vec<u8>>,
}

impl Image {
    pub fn new(layers: Vec<Layer>, arch: &str, docker: bool) -> Image {
        let diff_ids: Vec<String> = layers.iter().map(Layer::diff_id).collect();
        let config = serde_json::to_vec(&json!({
            "created": "2024-05-06T07:08:09Z",
            "architecture": arch, "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin"], "WorkingDir": "/w",
                       "Labels": {"test": "yes"}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let blobs: Vec<Vec<u8>> = layers.iter().map(Layer::blob).collect();
        let layer_descs: Vec<_> = layers
            .iter()
            .zip(&blobs)
            .map(|(l, b)| json!({"mediaType": layer_media(l.comp, docker), "digest": sha(b), "size": b.len()}))
            .collect();
        let (mt, cmt) = if docker {
            (
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.container.image.v1+json",
            )
        } else {
            (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.config.v1+json",
            )
        };
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": mt,
            "config": {"mediaType": cmt, "digest": sha(&config), "size": config.len()},
            "layers": layer_descs,
        }))
        .unwrap();
        Image {
            layers,
            arch: Box::leak(arch.to_string().into_boxed_str()),
            docker,
            config,
            manifest,
            blobs,
        }
    }

    pub fn media_type(&self) -> &'static str {
        if self.docker {
            "application/vnd.docker.distribution.manifest.v2+json"
        } else {
            "application/vnd.oci.image.manifest.v1+json"
        }
    }
}

fn put_blob(dir: &Path, data: &[u8]) {
    let d = sha(data);
    let p = dir.join("blobs/sha256").join(&d[7..]);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Writes an OCI layout at `dir` holding `images` under `tag`: one image → a manifest entry;
/// several → an image index (multi-arch).
pub fn write_layout(dir: &Path, tag: &str, images: &[Image]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    for img in images {
        put_blob(dir, &img.config);
        put_blob(dir, &img.manifest);
        for b in &img.blobs {
            put_blob(dir, b);
        }
    }
    let ann = json!({"org.opencontainers.image.ref.name": tag});
    let top = if images.len() == 1 {
        let i = &images[0];
        json!({"mediaType": i.media_type(), "digest": sha(&i.manifest), "size": i.manifest.len(), "annotations": ann})
    } else {
        let entries: Vec<_> = images
            .iter()
            .map(|i| json!({"mediaType": i.media_type(), "digest": sha(&i.manifest), "size": i.manifest.len(),
                            "platform": {"os": "linux", "architecture": i.arch}}))
            .collect();
        let index = serde_json::to_vec(&json!({"schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}))
        .unwrap();
        put_blob(dir, &index);
        json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha(&index),
               "size": index.len(), "annotations": ann})
    };
    let index = json!({"schemaVersion": 2, "manifests": [top]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    dir.to_path_buf()
}

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `count` GNU sparse members of `real` bytes each: one 512-byte data segment at the end, the
/// rest a hole.
pub fn sparse_bomb(count: usize, real: u64) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..count {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_path(format!("s{i:02}")).unwrap();
        h.set_mode(0o644);
        h.set_size(512);
        let g = h.as_gnu_mut().unwrap();
        g.sparse[0].offset = *format!("{:011o}\0", real - 512)
            .as_bytes()
            .first_chunk()
            .unwrap();
        g.sparse[0].numbytes = *b"00000001000\0";
        g.realsize = *format!("{real:011o}\0").as_bytes().first_chunk().unwrap();
        h.set_cksum();
        v.extend_from_slice(h.as_bytes());
        v.extend_from_slice(&[b'D'; 512]);
    }
    v.extend_from_slice(&[0u8; 1024]);
    v
}
