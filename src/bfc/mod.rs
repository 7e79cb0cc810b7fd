//! BFC files.
