//! Image references and transports.
//!
//! A SOURCE on the command line is either a registry reference (`alpine`, `alpine:3.19`,
//! `ghcr.io/org/app:v1`, `localhost:5000/x@sha256:…`, optionally prefixed `docker://`) or a
//! skopeo-style transport for an image already on disk: `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`,
//! `docker-archive:FILE`. Registry references are parsed and normalised by oci-spec's
//! [`Reference`] (`docker.io`, `library/`, `latest`), never by hand.
use super::Error;
use oci_spec::distribution::Reference;
use oci_spec::image::Digest;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A normalised registry reference: registry host, repository, tag and/or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    inner: Reference,
    digest: Option<Digest>,
}

impl ImageRef {
    /// Registry host as written (`docker.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }
    /// Host to contact: `docker.io` is served by `registry-1.docker.io`.
    pub fn api_host(&self) -> &str {
        match self.inner.registry() {
            "docker.io" => "registry-1.docker.io",
            other => other,
        }
    }
    /// Repository path (`library/alpine`).
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }
    /// Tag, if any (`latest` when neither tag nor digest was given).
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }
    /// Digest, if the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }
    /// `registry/repository`, the key under which tags are recorded.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }
    /// What to ask the registry for: the digest if pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        match (&self.digest, self.inner.tag()) {
            (Some(d), _) => d.as_ref(),
            (None, Some(t)) => t,
            (None, None) => "latest",
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl FromStr for ImageRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let inner = Reference::from_str(s).map_err(|source| Error::Reference {
            input: s.to_string(),
            source,
        })?;
        // oci-spec lets an upper-case first component through when it falls back to docker.io.
        if inner.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(Error::Reference {
                input: s.to_string(),
                source: oci_spec::distribution::ParseError::NameContainsUppercase,
            });
        }
        let digest = match inner.digest() {
            None => None,
            Some(d) => {
                let digest = Digest::from_str(d).map_err(|e| Error::Source {
                    input: s.to_string(),
                    why: format!("bad digest: {e}"),
                })?;
                if digest.algorithm().as_ref() != "sha256" {
                    return Err(Error::Source {
                        input: s.to_string(),
                        why: "only sha256 digests are supported".into(),
                    });
                }
                Some(digest)
            }
        };
        Ok(ImageRef { inner, digest })
    }
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An OCI Distribution registry.
    Registry(ImageRef),
    /// An OCI image layout directory; `tag` selects `org.opencontainers.image.ref.name`.
    OciDir { path: PathBuf, tag: Option<String> },
    /// A tar archive of an OCI image layout.
    OciArchive { path: PathBuf, tag: Option<String> },
    /// A `docker save` / `podman save` tarball.
    DockerArchive { path: PathBuf },
}

impl Source {
    /// The name under which the image is recorded in the store (`registry/repo:tag`,
    /// `oci:DIR:TAG`, ...).
    pub fn display_name(&self) -> String {
        match self {
            Source::Registry(r) => r.to_string(),
            Source::OciDir { path, tag } => transport_name("oci", path, tag.as_deref()),
            Source::OciArchive { path, tag } => transport_name("oci-archive", path, tag.as_deref()),
            Source::DockerArchive { path } => transport_name("docker-archive", path, None),
        }
    }
}

fn transport_name(t: &str, path: &std::path::Path, tag: Option<&str>) -> String {
    match tag {
        Some(tag) => format!("{t}:{}:{tag}", path.display()),
        None => format!("{t}:{}", path.display()),
    }
}

/// Splits `PATH[:TAG]` the way skopeo does: the path ends at the first `:`.
fn path_and_tag(input: &str, rest: &str) -> Result<(PathBuf, Option<String>), Error> {
    let (path, tag) = match rest.split_once(':') {
        Some((p, t)) => (p, Some(t.to_string())),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(Error::Source {
            input: input.to_string(),
            why: "missing path".into(),
        });
    }
    if tag.as_deref() == Some("") {
        return Err(Error::Source {
            input: input.to_string(),
            why: "empty tag after ':'".into(),
        });
    }
    Ok((PathBuf::from(path), tag))
}

impl FromStr for Source {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        if let Some(rest) = s.strip_prefix("oci:") {
            let (path, tag) = path_and_tag(s, rest)?;
            return Ok(Source::OciDir { path, tag });
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (path, tag) = path_and_tag(s, rest)?;
            return Ok(Source::OciArchive { path, tag });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            let (path, tag) = path_and_tag(s, rest)?;
            if tag.is_some() {
                return Err(Error::Source {
                    input: s.to_string(),
                    why: "docker-archive: takes no tag; the first image in the archive is used"
                        .into(),
                });
            }
            return Ok(Source::DockerArchive { path });
        }
        let reference = s.strip_prefix("docker://").unwrap_or(s);
        Ok(Source::Registry(reference.parse()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(s: &str) -> ImageRef {
        match s.parse::<Source>() {
            Ok(Source::Registry(r)) => r,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn docker_hub_names_are_normalised() {
        let r = reg("alpine");
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.repository(), "library/alpine");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
        let r = reg("docker://index.docker.io/user/app:v2");
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("docker.io", "user/app", Some("v2"))
        );
    }

    #[test]
    fn hosts_ports_and_digests() {
        let d = "sha256:".to_string() + &"ab".repeat(32);
        let r = reg(&format!("localhost:5000/x@{d}"));
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "x");
        assert_eq!(r.manifest_reference(), d);
        let r = reg("ghcr.io/org/app:v1");
        assert_eq!(
            (r.registry(), r.repository(), r.manifest_reference()),
            ("ghcr.io", "org/app", "v1")
        );
        assert_eq!(r.name(), "ghcr.io/org/app");
    }

    #[test]
    fn bad_references_are_rejected() {
        for bad in [
            "",
            "UPPER/case",
            "a:b:c:d",
            "x@sha256:123",
            "x@md5:0123456789abcdef0123456789abcdef",
        ] {
            assert!(bad.parse::<Source>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn transports() {
        assert_eq!(
            "oci:/tmp/lay:v1".parse::<Source>().unwrap(),
            Source::OciDir {
                path: "/tmp/lay".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            "oci:rel".parse::<Source>().unwrap(),
            Source::OciDir {
                path: "rel".into(),
                tag: None
            }
        );
        assert_eq!(
            "oci-archive:a.tar:t".parse::<Source>().unwrap(),
            Source::OciArchive {
                path: "a.tar".into(),
                tag: Some("t".into())
            }
        );
        assert_eq!(
            "docker-archive:s.tar".parse::<Source>().unwrap(),
            Source::DockerArchive {
                path: "s.tar".into()
            }
        );
        assert!("oci:".parse::<Source>().is_err());
        assert!("oci:x:".parse::<Source>().is_err());
        assert!("docker-archive:s.tar:t".parse::<Source>().is_err());
    }
}
