//! Image names (issue 13): `oci:` pulls are named by the layout's ref name, `docker-archive:`
//! keeps the archive's RepoTags (written by skopeo), a short name finds a unique match across
//! registries and an ambiguous one lists the candidates; `pull --platform` that does not match a
//! single-platform image fails, the host default only warns.
mod common;
mod pull_support;

use std::path::Path;
use std::process::Command;

use pull_support::harness::{Auth, Registry};
use pull_support::layout::{write_layout, Comp, Image, Layer, Member as M};

struct Fx {
    tmp: tempfile::TempDir,
}

impl Fx {
    fn new() -> Fx {
        Fx {
            tmp: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, p: &str) -> std::path::PathBuf {
        self.tmp.path().join(p)
    }
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let store = self.path("store");
        let mut all = vec!["--root", store.to_str().unwrap()];
        all.extend_from_slice(args);
        common::bfcfs(&all)
    }
    fn ok(&self, args: &[&str]) -> (String, String) {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "bfcfs {args:?}: {err}");
        (out, err)
    }
    fn fails(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert!(
            code == 1 || code == 2,
            "bfcfs {args:?} should fail cleanly, got {code}: {out}{err}"
        );
        err
    }
    /// `name:tag` of every image, from `images --json`.
    fn names(&self) -> Vec<String> {
        let (out, _) = self.ok(&["images", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut names: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                format!(
                    "{}:{}",
                    i["repository"].as_str().unwrap(),
                    i["tag"].as_str().unwrap_or("-")
                )
            })
            .collect();
        names.sort();
        names
    }
}

fn image(arch: &str, text: &[u8]) -> Image {
    Image::new(
        vec![Layer::new(&[M::File("f", text.to_vec())], Comp::Gzip)],
        arch,
        false,
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn oci_layouts_are_named_by_ref_name_and_docker_archives_keep_repo_tags() {
    let fx = Fx::new();
    // A ref name that is a reference names the image.
    let full = write_layout(
        &fx.path("full"),
        "example.com/team/app:1.0",
        &[image("amd64", b"full")],
    );
    let (out, _) = fx.ok(&["pull", &format!("oci:{}", s(&full))]);
    assert!(out.contains("example.com/team/app:1.0"), "{out}");
    // A ref name that is only a tag: localhost/<directory>:TAG.
    let tagged = write_layout(&fx.path("Web-Layout"), "v3", &[image("amd64", b"tag")]);
    fx.ok(&["pull", "-q", &format!("oci:{}:v3", s(&tagged))]);
    assert_eq!(
        fx.names(),
        ["example.com/team/app:1.0", "localhost/web-layout:v3"]
    );
    // The transport spelling still finds it.
    fx.ok(&["inspect", &format!("oci:{}:v3", s(&tagged))]);

    // docker-archive: skopeo writes RepoTags; every one becomes a name.
    let ar = fx.path("app.tar");
    common::tool_ok(
        Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!("oci:{}:v3", s(&tagged)))
            .arg(format!(
                "docker-archive:{}:127.0.0.1:5000/deb/app:v2",
                s(&ar)
            )),
    );
    fx.ok(&["pull", "-q", &format!("docker-archive:{}", s(&ar))]);
    assert!(
        fx.names()
            .contains(&"127.0.0.1:5000/deb/app:v2".to_string()),
        "{:?}",
        fx.names()
    );
}

#[test]
fn a_short_name_finds_a_unique_image_across_registries_and_lists_several() {
    let reg = Registry::start(Auth::None);
    let fx = Fx::new();
    let lay = write_layout(&fx.path("lay"), "v2", &[image("amd64", b"one")]);
    reg.seed(&lay, "v2", "deb/app", &[]);
    let host = reg.host();
    fx.ok(&["pull", "-q", &format!("{host}/deb/app:v2")]);
    let (out, _) = fx.ok(&["inspect", "--json", "app:v2"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["repository"], format!("{host}/deb/app"));
    fx.ok(&["inspect", "deb/app:v2"]);
    let err = fx.fails(&["inspect", "app:v9"]);
    assert!(err.contains("no image"), "{err}");

    // Another image with the same short name elsewhere: ambiguous, both listed, nothing removed.
    let other = write_layout(&fx.path("other"), "v2", &[image("amd64", b"two")]);
    reg.seed(&other, "v2", "mirror/app", &[]);
    fx.ok(&["pull", "-q", &format!("{host}/mirror/app:v2")]);
    let err = fx.fails(&["rm", "app:v2"]);
    assert!(
        err.contains("matches several images")
            && err.contains("deb/app:v2")
            && err.contains("mirror/app:v2"),
        "{err}"
    );
    assert_eq!(fx.names().len(), 2);
    fx.ok(&["rm", "deb/app:v2"]);
    assert_eq!(fx.names(), [format!("{host}/mirror/app:v2")]);
}

#[test]
fn a_platform_asked_for_must_match_a_single_platform_image() {
    let fx = Fx::new();
    let lay = write_layout(&fx.path("arm"), "v1", &[image("arm64", b"arm")]);
    let src = format!("oci:{}:v1", s(&lay));
    let err = fx.fails(&["pull", "-q", "--platform", "linux/amd64", &src]);
    assert!(err.contains("is for linux/arm64, not linux/amd64"), "{err}");
    assert!(fx.names().is_empty(), "{:?}", fx.names());
    fx.ok(&["pull", "-q", "--platform", "linux/arm64", &src]);
    // The host's default platform (amd64 on the test machines) only warns.
    let _ = std::fs::remove_dir_all(fx.path("store"));
    if std::env::consts::ARCH == "x86_64" {
        let (_, err) = fx.ok(&["pull", "-q", &src]);
        assert!(err.contains("is for linux/arm64"), "{err}");
    }
}
