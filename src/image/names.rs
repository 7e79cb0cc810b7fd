//! Which names a pulled image is recorded under, and what a short name (`app:v2`) finds.
//!
//! - A registry image: its normalized reference (`docker.io/library/alpine:3.19`).
//! - An OCI layout or archive: the chosen manifest's `org.opencontainers.image.ref.name` when it
//!   is an image reference (`example.com/app:1.0`, `app:v1` → `docker.io/library/app:v1`, as for
//!   every name here); when it is only a tag (`1.0`), `localhost/<directory or file name>:1.0`;
//!   without one, the transport name (`oci:/abs/dir`) as before.
//! - A docker archive: every name in its `RepoTags`; without any, the transport name.
//! - A short name (no registry host: `app:v2`, `team/app`) that names no image as normalized
//!   (`docker.io/library/app:v2`) finds the images of any registry whose repository ends with
//!   it (`127.0.0.1:5077/deb/app:v2`); several different images are an error that lists them.
use super::record_name;
use crate::oci::{ImageRef, Source};
use crate::store::refs::RefEntry;
use std::path::Path;

/// The (name, tag) pairs to record for `source`, given what the source calls the image.
pub(super) fn record_names(source: &Source, given: &[String]) -> Vec<(String, Option<String>)> {
    let from_path = |path: &Path, tag: &str| -> Option<(String, Option<String>)> {
        let stem = path.file_stem()?.to_str()?;
        let reference = format!("localhost/{}:{tag}", stem.to_ascii_lowercase());
        let r: ImageRef = reference.parse().ok()?;
        Some((r.name(), r.tag().map(str::to_string)))
    };
    let parsed = |n: &str| -> Option<(String, Option<String>)> {
        let r: ImageRef = n.parse().ok()?;
        r.digest()
            .is_none()
            .then(|| (r.name(), r.tag().map(str::to_string)))
    };
    let names: Vec<(String, Option<String>)> = match source {
        Source::Registry(_) => Vec::new(),
        Source::OciDir { path, .. } | Source::OciArchive { path, .. } => given
            .iter()
            .filter_map(|n| {
                if n.contains('/') || n.contains(':') {
                    parsed(n)
                } else {
                    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                    from_path(&abs, n)
                }
            })
            .collect(),
        Source::DockerArchive { .. } => given.iter().filter_map(|n| parsed(n)).collect(),
    };
    if names.is_empty() {
        vec![record_name(source)]
    } else {
        names
    }
}

/// For a short name (one that names no registry host), the repository path and tag it asks
/// for: `app:v2` → (`app`, `v2`), `team/app` → (`team/app`, `latest`). None for a name with a
/// host (`localhost/app`, `reg:5000/app`, `example.com/app`), a digest, or not a name at all.
pub(super) fn short_name(query: &str) -> Option<(String, String)> {
    if query.contains('@') || query.contains("://") {
        return None;
    }
    let first = query.split('/').next()?;
    let has_more = query.contains('/');
    if has_more && (first.contains('.') || first.contains(':') || first == "localhost") {
        return None;
    }
    let r: ImageRef = query.parse().ok()?;
    if r.registry() != "docker.io" {
        return None;
    }
    let repo = if has_more {
        r.repository().to_string()
    } else {
        r.repository()
            .strip_prefix("library/")
            .unwrap_or(r.repository())
            .to_string()
    };
    Some((repo, r.tag().unwrap_or("latest").to_string()))
}

/// The entries a short name finds in any registry: the repository ends with `/<repo>` (or is
/// it) and the tag is the same.
pub(super) fn short_matches(entries: &[RefEntry], repo: &str, tag: &str) -> Vec<RefEntry> {
    let suffix = format!("/{repo}");
    entries
        .iter()
        .filter(|e| e.tag.as_deref() == Some(tag) && e.name.ends_with(&suffix))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn oci(path: &str) -> Source {
        Source::OciDir {
            path: PathBuf::from(path),
            tag: None,
        }
    }

    #[test]
    fn layouts_are_named_by_their_ref_name() {
        let n = |given: &[&str]| {
            let given: Vec<String> = given.iter().map(|s| s.to_string()).collect();
            record_names(&oci("/no/such/Layout.dir"), &given)
        };
        assert_eq!(
            n(&["example.com/team/app:1.0"]),
            [("example.com/team/app".to_string(), Some("1.0".to_string()))]
        );
        assert_eq!(
            n(&["app:v1"]),
            [("docker.io/library/app".to_string(), Some("v1".to_string()))]
        );
        assert_eq!(
            n(&["1.0"]),
            [("localhost/layout".to_string(), Some("1.0".to_string()))]
        );
        // No ref name: the transport name, as before.
        assert_eq!(n(&[])[0].0, "oci:/no/such/Layout.dir");
        let d = Source::DockerArchive {
            path: PathBuf::from("/x.tar"),
        };
        assert_eq!(
            record_names(&d, &["a:1".into(), "reg:5000/b:2".into()]),
            [
                ("docker.io/library/a".to_string(), Some("1".to_string())),
                ("reg:5000/b".to_string(), Some("2".to_string()))
            ]
        );
    }

    #[test]
    fn short_names_are_names_without_a_registry_host() {
        assert_eq!(short_name("app:v2"), Some(("app".into(), "v2".into())));
        assert_eq!(short_name("app"), Some(("app".into(), "latest".into())));
        assert_eq!(
            short_name("deb/app:v2"),
            Some(("deb/app".into(), "v2".into()))
        );
        for full in [
            "localhost/app:v2",
            "127.0.0.1:5077/deb/app:v2",
            "example.com/app",
            "docker.io/library/app",
            "oci:/x",
        ] {
            assert_eq!(short_name(full), None, "{full}");
        }
        let e = |name: &str, tag: &str, d: &str| RefEntry {
            name: name.into(),
            tag: Some(tag.into()),
            digest: d.into(),
            pulled: 0,
        };
        let entries = [
            e("127.0.0.1:5077/deb/app", "v2", "a"),
            e("127.0.0.1:5077/deb/app", "v3", "b"),
            e("localhost/myapp", "v2", "c"),
        ];
        let found = short_matches(&entries, "app", "v2");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].digest, "a");
        assert_eq!(short_matches(&entries, "deb/app", "v3")[0].digest, "b");
    }
}
