//! bfcfs: mount container images and BFC files as filesystems.
//!
//! Data moves down this list; no module imports one above it.
//! ```text
//! oci        registry client, references, local sources   (reference → manifest → blobs)
//! store      content-addressed blobs, layer files, refs, locks, gc
//! convert    layer tar / tar+gzip / tar+zstd → one BFC file per layer
//! bfc        BFC containers: validated mmap reader, streaming writer, extension
//! archive    local trees ⇄ BFC files (create, extract)
//! overlay    union of layer containers (OCI whiteouts), inode numbers, merged listings
//! upper      writable upper dir in the kernel overlayfs format
//! fs         FUSE adapter (fuser): replies only, policy lives below
//! mount      kernel mounts: -o options, mount/umount syscalls, server daemon, logging, mountinfo
//! image      joins the steps for one image reference
//! container  named upper dirs in the store, and mounting an image (in one) for mount and bundle
//! bundle     runtime spec for runc
//! cli        clap commands on top
//! ```
pub mod archive;
pub mod bfc;
pub mod bundle;
pub mod cli;
pub mod container;
pub mod convert;
pub mod fs;
pub mod image;
pub mod mount;
pub mod oci;
pub mod overlay;
pub mod store;
pub mod upper;
