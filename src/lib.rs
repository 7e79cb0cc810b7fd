//! bfcfs: mount container images and BFC files as filesystems.
pub mod archive;
pub mod bfc;
pub mod cli;
pub mod oci;
pub mod store;
pub mod convert;
pub mod image;
