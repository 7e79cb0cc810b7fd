pub mod harness;
pub mod layout;
