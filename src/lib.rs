//! bfcfs: mount container images and BFC files as filesystems.
//!
//! The rule that holds: a module imports only modules listed below it in [`LAYERS`] (the test
//! `layering::imports_point_down` checks every `crate::` path in src/). The three helpers at the
//! bottom import nothing from the crate.
//! ```text
//! cli          clap commands on top: plan, call the library, print
//! bundle       runtime spec (config.json) for runc
//! container    named upper dirs in the store, and mounting an image (in one) for mount and bundle
//! image        joins the steps for one image: pull, queries, gc, opening layers for a mount
//! mount        kernel mounts: -o options, mount/umount syscalls, server daemon, logging, mountinfo
//! fs           FUSE adapter (fuser): replies only, policy lives below
//! overlay      union of layer containers (OCI whiteouts) and the upper dir, inode numbers
//! upper        writable upper dir in the kernel overlayfs format
//! archive      local trees ⇄ BFC files (create, extract)
//! convert      layer tar / tar+gzip / tar+zstd → one BFC file per layer
//! lazy         layers fetched as they are read: range requests into partial BFC files
//! store        content-addressed blobs, layer files, refs, locks, gc
//! oci          registry client, references, local sources   (reference → manifest → blobs)
//! bfc          BFC containers: validated mmap reader, streaming writer, extension
//! error_chain  an error and its causes on one line
//! digest       sha256 digests as `sha256:<hex>`
//! atomic_file  temp file + fsync + rename + fsync of the directory
//! ```
//! Data moves through them in two pipelines: a pull goes oci → store → convert → bfc (joined by
//! `image`), and a read(2) on a mount goes fs → overlay → bfc (and upper).
pub mod archive;
pub mod atomic_file;
pub mod bfc;
pub mod bundle;
pub mod cli;
pub mod container;
pub mod convert;
pub mod digest;
pub mod error_chain;
pub mod fs;
pub mod image;
pub mod lazy;
pub mod mount;
pub mod oci;
pub mod overlay;
pub mod store;
pub mod upper;

/// The modules from top to bottom: each imports only modules after it in this list.
pub const LAYERS: &[&str] = &[
    "cli",
    "bundle",
    "container",
    "image",
    "mount",
    "fs",
    "overlay",
    "upper",
    "archive",
    "convert",
    "lazy",
    "store",
    "oci",
    "bfc",
    "error_chain",
    "digest",
    "atomic_file",
];

#[cfg(test)]
mod layering {
    use super::LAYERS;
    use std::path::Path;

    /// The crate modules a source text names through `crate::` paths (comments skipped).
    fn imports(text: &str) -> Vec<String> {
        let ident = |s: &str| -> String {
            s.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    // `crate::{a, b::c}`: the first identifier of each top-level item.
                    let mut depth = 0;
                    let mut start = true;
                    for (j, ch) in group.char_indices() {
                        match ch {
                            '{' => depth += 1,
                            '}' if depth == 0 => break,
                            '}' => depth -= 1,
                            ',' if depth == 0 => start = true,
                            c if start && !c.is_whitespace() => {
                                out.push(ident(&group[j..]));
                                start = false;
                            }
                            _ => {}
                        }
                    }
                } else {
                    out.push(ident(rest));
                }
            }
        }
        out
    }

    fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, files);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }

    #[test]
    fn imports_point_down() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        walk(&src, &mut files);
        let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
        let mut checked = 0;
        for f in files {
            let rel = f.strip_prefix(&src).unwrap();
            let top = rel.iter().next().unwrap().to_string_lossy();
            let module = top.trim_end_matches(".rs");
            if module == "lib" || module == "main" {
                continue;
            }
            let me = rank(module).unwrap_or_else(|| panic!("{module} is missing from LAYERS"));
            for used in imports(&std::fs::read_to_string(&f).unwrap()) {
                let Some(other) = rank(&used) else { continue };
                assert!(
                    other >= me,
                    "{} imports {used}, which is listed above {module} in LAYERS",
                    rel.display()
                );
                checked += 1;
            }
        }
        assert!(
            checked > 50,
            "only {checked} imports found: is the parser broken?"
        );
    }

    #[test]
    fn import_parser_sees_groups_and_skips_comments() {
        let text = "use crate::{bfc, convert::x, store};\n// crate::cli\nlet a = crate::oci::y;";
        assert_eq!(imports(text), ["bfc", "convert", "store", "oci"]);
    }
}
