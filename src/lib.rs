//! bfcfs: mount container images and BFC files as filesystems.
pub mod archive;
pub mod bfc;
pub mod bundle;
pub mod cli;
pub mod convert;
pub mod image;
pub mod oci;
pub mod store;
pub mod upper;
