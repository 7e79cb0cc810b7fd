//! bfcfs: mount container images and BFC files as filesystems.
pub mod archive;
pub mod bfc;
pub mod cli;
pub mod fs;
pub mod overlay;
pub mod upper;
