//! Choosing one manifest out of an image index by platform.
use super::{Error, Result};
use oci_spec::image::{Arch, Descriptor, ImageIndex, Os};
use std::fmt;
use std::str::FromStr;

/// `OS/ARCH[/VARIANT]`, as in `--platform linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSpec {
    pub os: Os,
    pub arch: Arch,
    pub variant: Option<String>,
}

impl PlatformSpec {
    /// This host: Go's names for the OS and architecture (oci-spec maps Rust's to them).
    pub fn host() -> Self {
        PlatformSpec {
            os: Os::default(),
            arch: Arch::default(),
            variant: None,
        }
    }

    fn matches(&self, p: &oci_spec::image::Platform) -> bool {
        if *p.os() != self.os || *p.architecture() != self.arch {
            return false;
        }
        match (&self.variant, p.variant()) {
            (None, _) => true,
            (Some(w), Some(v)) => w == v,
            // arm64 without a variant means v8
            (Some(w), None) => self.arch == Arch::ARM64 && w == "v8",
        }
    }

    /// Picks the manifest for this platform from `index`; the error lists what is there.
    pub fn choose<'a>(&self, image: &str, index: &'a ImageIndex) -> Result<&'a Descriptor> {
        let mut available = Vec::new();
        for d in index.manifests() {
            let Some(p) = d.platform() else { continue };
            if self.matches(p) {
                return Ok(d);
            }
            if p.os().to_string() != "unknown" {
                available.push(platform_string(p));
            }
        }
        // An index whose only entry has no platform (some single-image layouts): take it.
        let plain: Vec<_> = index
            .manifests()
            .iter()
            .filter(|d| d.platform().is_none())
            .collect();
        if index.manifests().len() == 1 && plain.len() == 1 {
            return Ok(plain[0]);
        }
        Err(Error::NoPlatform {
            image: image.to_string(),
            wanted: self.to_string(),
            available: if available.is_empty() {
                "none".into()
            } else {
                available.join(", ")
            },
        })
    }
}

fn platform_string(p: &oci_spec::image::Platform) -> String {
    match p.variant() {
        Some(v) => format!("{}/{}/{v}", p.os(), p.architecture()),
        None => format!("{}/{}", p.os(), p.architecture()),
    }
}

impl fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for PlatformSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(Error::Platform { input: s.into() });
        }
        Ok(PlatformSpec {
            os: Os::from(parts[0]),
            arch: Arch::from(parts[1]),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> ImageIndex {
        serde_json::from_str(&format!(
            r#"{{"schemaVersion":2,"manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{a}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{b}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{c}","size":1,"platform":{{"os":"unknown","architecture":"unknown"}}}}]}}"#,
            a = "a".repeat(64),
            b = "b".repeat(64),
            c = "c".repeat(64)
        ))
        .unwrap()
    }

    #[test]
    fn picks_matching_platform() {
        let idx = index();
        for (spec, want) in [
            ("linux/arm64", "bbbb"),
            ("linux/arm64/v8", "bbbb"),
            ("linux/amd64", "aaaa"),
        ] {
            let p: PlatformSpec = spec.parse().unwrap();
            let got = p.choose("x", &idx).unwrap().digest().to_string();
            assert!(got.contains(want), "{spec}: {got}");
        }
    }

    #[test]
    fn no_match_lists_platforms() {
        let p: PlatformSpec = "linux/s390x".parse().unwrap();
        let err = p.choose("img", &index()).unwrap_err().to_string();
        assert_eq!(
            err,
            "no image for platform linux/s390x in img; available: linux/amd64, linux/arm64/v8"
        );
    }

    #[test]
    fn bad_platform_strings() {
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d"] {
            assert!(bad.parse::<PlatformSpec>().is_err(), "{bad}");
        }
    }
}
