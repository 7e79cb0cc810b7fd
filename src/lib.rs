//! bfcfs: mount container images and BFC files as filesystems.
pub mod bfc;
pub mod overlay;
pub mod fs;
pub mod cli;
