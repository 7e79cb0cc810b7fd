//! The single-file image (`pull -o FILE`): every layer of the image in one BFC file, layer `i`
//! under `layers/<diff_id hex>/`, with the manifest, the config and an index of the layers as
//! image blobs (docs/FORMAT.md, "single-file image").
use super::fetch::fetch_blob;
use super::layer::{convert_blob, write_bfc_file};
use super::pull::{Progress, PullOptions};
use super::Result;
use crate::bfc;
use crate::oci::{Fetch, Resolved};
use crate::store::{self, Store};
use std::path::Path;

/// Name of the extension blob that describes a single-file image.
pub const SINGLE_FILE_INDEX: &str = "bfcfs.image.v1";

/// The directory of layer `diff_id` inside a single-file image: `layers/<hex>`.
pub(super) fn layer_dir(diff_id: &str) -> String {
    format!("layers/{}", diff_id.trim_start_matches("sha256:"))
}

/// Writes the whole image into the BFC file `out`. Blobs pass through the store; those this
/// call fetched are removed once converted.
pub(super) fn write_single_file(
    store: &Store,
    fetcher: &dyn Fetch,
    resolved: &Resolved,
    opts: &PullOptions,
    out: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    write_bfc_file(out, &opts.writer, |w| {
        let mut layers_json = Vec::new();
        let dir_meta = bfc::Meta {
            mode: 0o755,
            ..Default::default()
        };
        w.add_dir(b"layers", &dir_meta)?;
        for (desc, diff_id) in resolved.layers().iter().zip(resolved.diff_ids()) {
            let digest = desc.digest().to_string();
            store::sha256_hex(diff_id)?;
            let prefix = layer_dir(diff_id);
            w.add_dir(prefix.as_bytes(), &dir_meta)?;
            let had = store.blob_path(&digest)?.exists();
            let blob = fetch_blob(store, fetcher, desc, progress)?;
            convert_blob(w, &blob, desc, diff_id, prefix.as_bytes(), None)?;
            if !had {
                let _ = std::fs::remove_file(&blob);
            }
            progress.finish(&digest, "converted");
            layers_json.push(serde_json::json!({
                "digest": digest, "diff_id": diff_id, "size": desc.size(),
                "media_type": desc.media_type().to_string(), "prefix": prefix,
            }));
        }
        w.add_image_blob("manifest.json", &resolved.manifest_bytes)?;
        w.add_image_blob("config.json", &resolved.config_bytes)?;
        let index = serde_json::json!({
            "version": 1, "manifest_digest": resolved.manifest_digest.to_string(), "layers": layers_json,
        });
        w.add_image_blob(SINGLE_FILE_INDEX, index.to_string().as_bytes())?;
        Ok(())
    })
}
