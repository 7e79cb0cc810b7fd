//! `import`: a one-layer image from a directory. The tree becomes an uncompressed layer tar
//! (layer_tar.rs: the same tree gives the same digest), stored as a blob and converted into a
//! layer BFC file by the same path as a pulled layer; then a config
//! (diff_ids, history, the `--change` values) and an OCI manifest are stored and the image is
//! recorded under its name, last, so that a failed import records nothing.
//!
//! `tag` records another name for an image that is already in the store.
use super::layer_tar::{store_tree_layer, NewLayer, Walk};
use super::query::find_one;
use super::{record_name, Error, Result};
use crate::oci::{PlatformSpec, Source};
use crate::store::{self, refs::Refs, Store};
use oci_spec::image::{
    ConfigBuilder, Descriptor, Digest, HistoryBuilder, ImageConfiguration,
    ImageConfigurationBuilder, ImageManifestBuilder, MediaType, RootFsBuilder,
};
use std::fs;
use std::path::Path;
use std::str::FromStr;

/// One `--change` instruction (Dockerfile syntax, as `podman import --change` takes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Cmd(Vec<String>),
    Entrypoint(Vec<String>),
    Env(String, String),
    Workdir(String),
    User(String),
    Label(String, String),
}

impl FromStr for Change {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        let (word, rest) = s.split_once(char::is_whitespace).unwrap_or((s, ""));
        let rest = rest.trim();
        let need = |what: &str| {
            if rest.is_empty() {
                Err(format!("{word} needs {what}"))
            } else {
                Ok(())
            }
        };
        let pair = |sep: char| -> std::result::Result<(String, String), String> {
            let (k, v) = rest
                .split_once(sep)
                .or_else(|| rest.split_once(char::is_whitespace))
                .ok_or_else(|| format!("{word} wants KEY=VALUE, not {rest:?}"))?;
            let k = k.trim();
            if k.is_empty() {
                return Err(format!("{word} {rest:?}: empty key"));
            }
            Ok((k.to_string(), v.trim().to_string()))
        };
        match word.to_ascii_uppercase().as_str() {
            "CMD" => command(rest).map(Change::Cmd),
            "ENTRYPOINT" => command(rest).map(Change::Entrypoint),
            "ENV" => pair('=').map(|(k, v)| Change::Env(k, v)),
            "LABEL" => pair('=').map(|(k, v)| Change::Label(k, v)),
            "WORKDIR" => need("a directory").map(|()| Change::Workdir(rest.to_string())),
            "USER" => need("a user").map(|()| Change::User(rest.to_string())),
            _ => Err(format!(
                "unsupported instruction {word:?} (use CMD, ENTRYPOINT, ENV, LABEL, USER or WORKDIR)"
            )),
        }
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_default();
        match self {
            Change::Cmd(v) => write!(f, "CMD {}", json(v)),
            Change::Entrypoint(v) => write!(f, "ENTRYPOINT {}", json(v)),
            Change::Env(k, v) => write!(f, "ENV {k}={v}"),
            Change::Workdir(d) => write!(f, "WORKDIR {d}"),
            Change::User(u) => write!(f, "USER {u}"),
            Change::Label(k, v) => write!(f, "LABEL {k}={v}"),
        }
    }
}

/// `["a", "b"]` (exec form), or a shell command line run by `/bin/sh -c`.
fn command(rest: &str) -> std::result::Result<Vec<String>, String> {
    if rest.starts_with('[') {
        return serde_json::from_str::<Vec<String>>(rest)
            .map_err(|e| format!("{rest:?} is not a JSON array of strings: {e}"));
    }
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec!["/bin/sh".into(), "-c".into(), rest.to_string()])
}

/// Applies `changes` to an image's run config, in order.
pub fn apply_changes(config: &mut oci_spec::image::Config, changes: &[Change]) {
    for c in changes {
        match c {
            Change::Cmd(v) => {
                config.set_cmd(Some(v.clone()));
            }
            Change::Entrypoint(v) => {
                config.set_entrypoint(Some(v.clone()));
            }
            Change::Env(k, v) => {
                let mut env = config.env().clone().unwrap_or_default();
                let prefix = format!("{k}=");
                env.retain(|e| !e.starts_with(&prefix));
                env.push(format!("{k}={v}"));
                config.set_env(Some(env));
            }
            Change::Workdir(d) => {
                config.set_working_dir(Some(d.clone()));
            }
            Change::User(u) => {
                config.set_user(Some(u.clone()));
            }
            Change::Label(k, v) => {
                let mut labels = config.labels().clone().unwrap_or_default();
                labels.insert(k.clone(), v.clone());
                config.set_labels(Some(labels));
            }
        }
    }
}

/// What `import` made.
#[derive(Debug, Clone)]
pub struct Imported {
    /// `name:tag` as recorded.
    pub name: String,
    pub manifest_digest: String,
    pub diff_id: String,
}

/// The (name, tag) under which `reference` is recorded: a registry-style name with a tag.
pub fn local_name(reference: &str) -> Result<(String, String)> {
    let bad = |why: &str| Error::BadReference {
        reference: reference.to_string(),
        why: why.to_string(),
    };
    let source: Source = reference.parse().map_err(|e| Error::BadReference {
        reference: reference.to_string(),
        why: format!("{e}"),
    })?;
    let Source::Registry(r) = &source else {
        return Err(bad("name the image like a registry image (NAME[:TAG])"));
    };
    if r.digest().is_some() {
        return Err(bad("a digest cannot be chosen; give a tag"));
    }
    let (name, tag) = record_name(&source);
    Ok((name, tag.unwrap_or_else(|| "latest".into())))
}

/// Records `reference` as another name of the image `query` names. Returns `name:tag`.
pub fn tag(store: &Store, query: &str, reference: &str) -> Result<String> {
    let (name, tag) = local_name(reference)?;
    let mut refs = Refs::load(store)?;
    let entry = find_one(store, &refs, query)?;
    refs.set(&name, Some(&tag), &entry.digest);
    refs.save()?;
    Ok(format!("{name}:{tag}"))
}

/// Imports the tree at `dir` as a one-layer image named `reference`, with `changes` in its config.
pub fn import(store: &Store, dir: &Path, reference: &str, changes: &[Change]) -> Result<Imported> {
    let (name, tag) = local_name(reference)?;
    let meta = fs::metadata(dir).map_err(store::io_err(dir))?;
    if !meta.is_dir() {
        return Err(Error::BadImage {
            path: dir.to_path_buf(),
            why: "not a directory".into(),
        });
    }
    let _shared = store.lock_shared()?;

    let NewLayer {
        descriptor: layer,
        diff_id,
    } = store_tree_layer(store, dir, Walk::Plain)?;

    let now = rfc3339_utc(now_secs());
    let mut run_config = ConfigBuilder::default().build()?;
    apply_changes(&mut run_config, changes);
    let shown: Vec<String> = changes.iter().map(Change::to_string).collect();
    let history = HistoryBuilder::default()
        .created(now.clone())
        .created_by(format!("bfcfs import {}", dir.display()))
        .comment(if shown.is_empty() {
            "imported from a directory".to_string()
        } else {
            format!("imported from a directory; changes: {}", shown.join(", "))
        })
        .build()?;
    let platform = PlatformSpec::host();
    let config: ImageConfiguration = ImageConfigurationBuilder::default()
        .created(now)
        .architecture(platform.arch)
        .os(platform.os)
        .config(run_config)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff_id.clone()])
                .build()?,
        )
        .history(vec![history])
        .build()?;
    store_image(store, &config, vec![layer], &name, &tag, diff_id)
}

/// Stores `config` and a manifest naming it and `layers`, and records the manifest as
/// `name:tag`; `diff_id` is the new top layer's.
pub(super) fn store_image(
    store: &Store,
    config: &ImageConfiguration,
    layers: Vec<Descriptor>,
    name: &str,
    tag: &str,
    diff_id: String,
) -> Result<Imported> {
    let json = |v: serde_json::Result<Vec<u8>>| {
        v.map_err(|e| Error::BadImage {
            path: store.root().to_path_buf(),
            why: format!("serializing the image: {e}"),
        })
    };
    let config_bytes = json(serde_json::to_vec(config))?;
    let config_digest = crate::digest::sha256_digest(&config_bytes);
    store.put_blob(&config_digest, &config_bytes)?;
    let digest = Digest::from_str(&config_digest).map_err(|e| Error::BadImage {
        path: store.root().to_path_buf(),
        why: format!("digest {config_digest}: {e}"),
    })?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_bytes.len() as u64,
            digest,
        ))
        .layers(layers)
        .build()?;
    let manifest_bytes = json(serde_json::to_vec(&manifest))?;
    let manifest_digest = crate::digest::sha256_digest(&manifest_bytes);
    store.put_blob(&manifest_digest, &manifest_bytes)?;
    let mut refs = Refs::load(store)?;
    refs.set(name, Some(tag), &manifest_digest);
    refs.save()?;
    Ok(Imported {
        name: format!("{name}:{tag}"),
        manifest_digest,
        diff_id,
    })
}

pub(super) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (UTC); a time chrono cannot represent
/// (beyond ±262,000 years) is written as the epoch.
pub fn rfc3339_utc(secs: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_parse_like_dockerfile_instructions() {
        let c = |s: &str| s.parse::<Change>();
        assert_eq!(
            c(r#"CMD ["/bin/echo", "hi"]"#),
            Ok(Change::Cmd(vec!["/bin/echo".into(), "hi".into()]))
        );
        assert_eq!(
            c("cmd echo hi"),
            Ok(Change::Cmd(vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo hi".into()
            ]))
        );
        assert_eq!(c("ENV A=b=c"), Ok(Change::Env("A".into(), "b=c".into())));
        assert_eq!(c("ENV A b"), Ok(Change::Env("A".into(), "b".into())));
        assert_eq!(c("WORKDIR /srv"), Ok(Change::Workdir("/srv".into())));
        assert_eq!(c("USER 1000:1000"), Ok(Change::User("1000:1000".into())));
        assert!(c("WORKDIR").unwrap_err().contains("needs"));
        assert!(c("ENV =x").unwrap_err().contains("empty key"));
        assert!(c("CMD [1]").unwrap_err().contains("JSON array"));
        assert!(c("RUN make").unwrap_err().contains("unsupported"));
        // What the history says reads back as the same change.
        for text in [
            r#"CMD ["/bin/echo","hi"]"#,
            "ENV A=b",
            "USER 1:2",
            "LABEL k=v",
        ] {
            assert_eq!(c(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn env_changes_replace_earlier_values() {
        let mut cfg = oci_spec::image::Config::default();
        apply_changes(
            &mut cfg,
            &[
                Change::Env("A".into(), "1".into()),
                Change::Env("B".into(), "2".into()),
                Change::Env("A".into(), "3".into()),
            ],
        );
        assert_eq!(cfg.env().clone().unwrap(), ["B=2", "A=3"]);
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn names_are_registry_style_with_a_tag() {
        assert_eq!(
            local_name("app").unwrap(),
            ("docker.io/library/app".into(), "latest".into())
        );
        assert_eq!(
            local_name("localhost/app:v2").unwrap(),
            ("localhost/app".into(), "v2".into())
        );
        assert!(local_name("oci:/x:y").is_err());
        assert!(local_name(&format!("app@sha256:{}", "a".repeat(64))).is_err());
    }

    #[test]
    fn the_same_tree_imports_to_the_same_image_and_mounts_back() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("store")).unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("d/e")).unwrap();
        fs::write(src.join("d/e/f"), b"hello\n").unwrap();
        fs::write(src.join("a"), b"a\n").unwrap();
        fs::hard_link(src.join("a"), src.join("b")).unwrap();
        std::os::unix::fs::symlink("d/e/f", src.join("s")).unwrap();
        let one = import(&store, &src, "t:1", &[]).unwrap();
        let two = import(&store, &src, "t:2", &[Change::Workdir("/d".into())]).unwrap();
        assert_eq!(one.diff_id, two.diff_id);
        assert_ne!(one.manifest_digest, two.manifest_digest);
        let c = crate::bfc::Container::open(&store.layer_path(&one.diff_id).unwrap()).unwrap();
        assert!(c.is_dir(b"d/e"));
        let info = super::super::inspect(Some(&store), "t:2").unwrap();
        let cfg = info.config.unwrap();
        assert_eq!(cfg.rootfs().diff_ids(), std::slice::from_ref(&one.diff_id));
        let run = cfg.config().clone().unwrap();
        assert_eq!(run.working_dir().as_deref(), Some("/d"));
        // No blob of the layer is left: the BFC file replaced it.
        assert!(!store.blob_path(&one.diff_id).unwrap().exists());
        assert_eq!(
            tag(&store, "t:1", "u").unwrap(),
            "docker.io/library/u:latest"
        );
        assert_eq!(
            super::super::inspect(Some(&store), "u").unwrap().digest,
            one.manifest_digest
        );
        assert!(tag(&store, "nope", "u").is_err());
    }
}
