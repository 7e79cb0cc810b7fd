//! BFC containers: reading (memory-mapped; structure and index checksum checked at open, each entry
//! when first used) and writing (one forward pass).
//! This module knows nothing of OCI or FUSE.
pub mod ahead;
pub mod cache;
pub mod codec;
pub mod content;
pub mod cursor;
pub mod error;
pub mod ext;
pub mod layout;
pub mod map;
pub mod partial;
pub mod reader;
mod records;
mod spool;
pub mod subdirs;
pub mod writer;

pub use codec::Key;
pub use content::{ChunkSlice, EntryReader};
pub use error::{Error, Result};
pub use ext::Whiteout;
pub use partial::{PartialOptions, RangeSource};
pub use reader::{check_path, Child, Container, Entry, Kind};
pub use writer::{Compression, Meta, Writer, WriterOptions};
