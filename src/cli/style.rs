//! One output style for every command, so that a number reads the same everywhere: sizes in
//! binary units (JSON: bytes), dates in local time labelled with their UTC offset (JSON: RFC 3339
//! in UTC), durations in the two largest units, modes in octal. Per-entry listings (`list -l`)
//! keep exact byte counts, as `ls -l` and `tar tv` do.
use chrono::{DateTime, Local, Utc};

/// `39.46 KiB`.
pub fn size(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

/// `2026-11-29 19:17:16 +01:00`: local time, labelled with its offset from UTC.
pub fn local_time(secs: i64) -> String {
    match DateTime::<Utc>::from_timestamp(secs, 0) {
        Some(t) => t
            .with_timezone(&Local)
            .format("%Y-%m-%d %H:%M:%S %:z")
            .to_string(),
        None => format!("@{secs}"),
    }
}

/// An RFC 3339 date (an image config's `created`) shown as [`local_time`]; text that is not a
/// date is shown as it is, a missing one as `-`.
pub fn local_time_of(rfc3339: Option<&str>) -> String {
    match rfc3339 {
        None => "-".into(),
        Some(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => local_time(t.timestamp()),
            Err(_) => s.to_string(),
        },
    }
}

/// `2026-11-29T18:17:16Z`: for JSON.
pub fn json_time(secs: i64) -> String {
    crate::image::rfc3339_utc(secs)
}

/// `3d 4h`, `2h 5m`, `5m 6s`, `7s`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `0755` (permission and set-id/sticky bits).
pub fn mode(perm: u32) -> String {
    format!("{:04o}", perm & 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_style() {
        assert_eq!(size(40_402), "39.46 KiB");
        assert_eq!(size(0), "0 B");
        assert_eq!(json_time(1_764_440_236), "2025-11-29T18:17:16Z");
        assert_eq!(json_time(-315_619_200), "1960-01-01T00:00:00Z");
        assert_eq!(duration(7), "7s");
        assert_eq!(duration(306), "5m 6s");
        assert_eq!(duration(7_500), "2h 5m");
        assert_eq!(duration(3 * 86_400 + 4 * 3_600 + 5), "3d 4h");
        assert_eq!(mode(0o104755), "4755");
        assert_eq!(mode(0o644), "0644");
        // The label is the offset that applies at that date, whatever the zone.
        let t = local_time(1_764_440_236);
        assert!(t.starts_with("2025-11-"), "{t}");
        assert!(
            t.ends_with(":00") || t.ends_with(":30") || t.ends_with(":45"),
            "{t}"
        );
        assert_eq!(local_time_of(Some("2025-11-29T18:17:16Z")), t);
        assert_eq!(local_time_of(Some("yesterday")), "yesterday");
        assert_eq!(local_time_of(None), "-");
    }
}
