//! An error and its causes on one line. Imports nothing from the crate, so every layer's
//! messages use it.

/// `err` and its causes joined by ": ", for messages printed while work goes on (the final error
/// output prints the chain itself).
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
