//! An error and its causes on one line. Imports nothing from the crate, so every layer's
//! messages use it.

/// `err` and its causes joined by ": ", for messages printed while work goes on (the final error
/// output prints the chain itself), with control characters escaped ([`escape`]).
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    escape(&s).into_owned()
}

/// `s` with every control character (C0, DEL, C1) and every bidirectional-override character
/// written as `\u{…}`, so that text from outside (registry error bodies, tar member names quoted
/// by a parser, header values) can go into a message printed on a terminal or a log without
/// retitling the window, clearing the screen or reordering what is shown. Idempotent: its
/// output holds no character it would escape.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    fn bad(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if bad(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_controls() {
        assert_eq!(escape("plain: ok"), "plain: ok");
        let hostile = "\u{1b}]0;pwned\u{7}\u{1b}[2J\r\nx\u{9b}y\u{202e}z";
        let e = escape(hostile);
        assert_eq!(
            e,
            "\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{d}\\u{a}x\\u{9b}y\\u{202e}z"
        );
        assert!(!e.chars().any(|c| c.is_control()));
        assert_eq!(escape(&e), e);
    }
}
