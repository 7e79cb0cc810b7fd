//! From a source to verified blobs in the store: resolve the source (registry or image on disk)
//! to one platform's manifest and config, and stream a layer blob into the store, checking its
//! digest and size.
use super::pull::{Progress, PullOptions};
use super::Result;
use crate::oci::{self, registry::Registry, Fetch, Resolved, Source};
use crate::store::{BlobWriter, Store};
use oci_spec::image::Descriptor;
use std::path::PathBuf;

/// The store's blob writer is where fetched bytes go: it hashes them and checks the digest when
/// `fetch_blob` commits it.
impl oci::BlobSink for BlobWriter {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write(bytes).map_err(std::io::Error::other)
    }
    fn offset(&self) -> u64 {
        self.len()
    }
    fn restart(&mut self) -> std::io::Result<()> {
        BlobWriter::restart(self)
    }
}

/// Resolves `source` for `opts.platform`: what can hand out its blobs, the checked manifest
/// and config, and what an image on disk calls itself (ref name, RepoTags). A registry's
/// manifest and config come from the store when it has them.
pub(super) fn resolve(
    store: &Store,
    source: &Source,
    opts: &PullOptions,
) -> Result<(Box<dyn Fetch>, Resolved, Vec<String>)> {
    let local = |l: oci::source::Local| -> (Box<dyn Fetch>, Resolved, Vec<String>) {
        let r = l.resolved().clone();
        let names = l.names().to_vec();
        (Box::new(l), r, names)
    };
    Ok(match source {
        Source::Registry(image) => {
            let reg = Registry::connect(image, &opts.registry)?;
            let cached =
                |d: &oci_spec::image::Digest| store.read_blob(d.as_ref(), oci::MAX_DOCUMENT).ok();
            let resolved = reg.resolve(image, &opts.platform, &cached)?;
            (Box::new(reg), resolved, Vec::new())
        }
        Source::OciDir { path, tag } => local(oci::source::Local::oci_dir(
            path,
            tag.as_deref(),
            &opts.platform,
        )?),
        Source::OciArchive { path, tag } => local(oci::source::Local::oci_archive(
            path,
            tag.as_deref(),
            &opts.platform,
            &store.tmp_dir(),
        )?),
        Source::DockerArchive { path } => {
            local(oci::source::Local::docker_archive(path, &store.tmp_dir())?)
        }
    })
}

/// Gets blob `desc` into the store (verified) and returns its path.
pub(super) fn fetch_blob(
    store: &Store,
    fetcher: &dyn Fetch,
    desc: &Descriptor,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    let digest = desc.digest().to_string();
    let path = store.blob_path(&digest)?;
    if path.exists() {
        return Ok(path);
    }
    progress.start(&digest, desc.size());
    let mut w = BlobWriter::new(store)?;
    fetcher.fetch_blob(desc, &mut w, &|done| progress.bytes(&digest, done))?;
    Ok(w.commit(&digest, Some(desc.size()))?)
}
