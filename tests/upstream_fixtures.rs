//! Every container the upstream `bfc` tool wrote opens and matches its MANIFEST.json exactly.
mod common;
use bfcfs::bfc::{Container, Kind};
use common::*;

fn check_container(c: &serde_json::Value, manifest: &serde_json::Value) {
    let file = c["file"].as_str().unwrap();
    let mut con = Container::open(&fixtures().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    if let Some(k) = fixture_key(c) {
        assert!(con.is_encrypted(), "{file} should be encrypted");
        con.set_key(&k)
            .unwrap_or_else(|e| panic!("{file}: key: {e}"));
    }
    let tree = manifest["trees"][c["tree"].as_str().unwrap()]
        .as_array()
        .unwrap();
    assert_eq!(con.len(), tree.len(), "{file}: entry count");
    for want in tree {
        let path = want["path"].as_str().unwrap();
        let i = con
            .find(path.as_bytes())
            .unwrap_or_else(|| panic!("{file}: {path} missing"));
        let e = con.entry(i).unwrap();
        assert_eq!(
            e.perm() as u64,
            want["mode"].as_u64().unwrap(),
            "{file}: {path} mode"
        );
        match want["type"].as_str().unwrap() {
            "dir" => assert_eq!(e.kind, Kind::Dir, "{file}: {path}"),
            "symlink" => {
                assert_eq!(e.kind, Kind::Symlink, "{file}: {path}");
                let t = con.symlink_target(i).unwrap();
                assert_eq!(
                    t,
                    want["target"].as_str().unwrap().as_bytes(),
                    "{file}: {path}"
                );
            }
            "file" => {
                assert_eq!(e.kind, Kind::File, "{file}: {path}");
                assert_eq!(
                    e.size,
                    want["size"].as_u64().unwrap(),
                    "{file}: {path} size"
                );
                let mut data = Vec::new();
                con.open_reader(i).unwrap().copy_to(&mut data).unwrap();
                assert_eq!(
                    sha256_hex(&data),
                    want["sha256"].as_str().unwrap(),
                    "{file}: {path}"
                );
                // Random access gives the same bytes.
                if !data.is_empty() {
                    let off = data.len() / 3;
                    let mut buf = vec![0u8; 5000.min(data.len() - off)];
                    let n = con.read_at(i, off as u64, &mut buf).unwrap();
                    assert_eq!(&buf[..n], &data[off..off + n], "{file}: {path} read_at");
                }
                con.verify_entry(i).unwrap();
            }
            other => panic!("unknown type {other}"),
        }
    }
}

#[test]
fn every_upstream_fixture_matches_its_manifest() {
    let m = manifest();
    let containers = m["containers"].as_array().unwrap();
    assert!(containers.len() >= 9);
    for c in containers {
        check_container(c, &m);
    }
}

#[test]
fn encrypted_fixtures_report_missing_and_wrong_keys() {
    for name in ["enc-password.bfc", "zstd-enc-keyfile.bfc"] {
        let mut con = Container::open(&fixtures().join(name)).unwrap();
        let i = (0..con.len())
            .find(|&i| con.entry(i).unwrap().kind == Kind::File)
            .unwrap();
        let err = con.open_reader(i).err().expect("needs a key");
        assert!(
            matches!(err, bfcfs::bfc::Error::KeyRequired { .. }),
            "{err}"
        );
        let err = con
            .set_key(&bfcfs::bfc::Key::Password(b"wrong".to_vec()))
            .unwrap_err();
        assert!(
            matches!(err, bfcfs::bfc::Error::WrongKey { .. }),
            "{name}: {err}"
        );
        let err = con.set_key(&bfcfs::bfc::Key::Raw([9; 32])).unwrap_err();
        assert!(
            matches!(err, bfcfs::bfc::Error::WrongKey { .. }),
            "{name}: {err}"
        );
    }
}

#[test]
fn children_list_implicit_and_real_directories() {
    let con = Container::open(&fixtures().join("plain.bfc")).unwrap();
    let root = con.children(b"").unwrap();
    assert_eq!(
        root,
        vec![bfcfs::bfc::Child::Entry(con.find(b"tree").unwrap())]
    );
    let kids = con.children(b"tree").unwrap();
    assert!(kids.len() > 3);
}
