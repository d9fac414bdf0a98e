//! Terminal text for traces: the span tree, listings and analysis tables. Span names and
//! attributes come from untrusted guests, so control characters are escaped before printing
//! (a guest must not be able to move the cursor or recolour the operator's terminal).

pub mod analysis;
mod ls;
mod show;

pub use ls::ls;
pub use show::{show, ShowOptions};

/// Whether to emit ANSI colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    Always,
    Never,
}

impl Color {
    pub(crate) fn paint(self, code: &str, text: &str) -> String {
        match self {
            Color::Always => format!("\x1b[{code}m{text}\x1b[0m"),
            Color::Never => text.to_string(),
        }
    }
}

/// ANSI colour of a span by its `source` attribute.
pub(crate) fn source_color(source: Option<&str>) -> &'static str {
    match source {
        Some("runtime") => "34",    // blue
        Some("agent") => "32",      // green
        Some("hypervisor") => "35", // magenta
        Some(_) => "36",
        None => "37",
    }
}

/// Printable text: control characters (ESC, CR, ...) shown as `\u{..}` escapes.
pub fn sanitize(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `1.234s`, `12.3ms`, `456µs`, `789ns`.
pub fn fmt_duration(ns: u64) -> String {
    let f = ns as f64;
    if ns >= 60_000_000_000 {
        format!("{:.1}m", f / 60e9)
    } else if ns >= 1_000_000_000 {
        format!("{:.3}s", f / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.2}ms", f / 1e6)
    } else if ns >= 1_000 {
        format!("{:.1}µs", f / 1e3)
    } else {
        format!("{ns}ns")
    }
}

pub use crate::units::fmt_utc_millis as fmt_time;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_format() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00.000");
        assert_eq!(
            fmt_time(1_700_000_000_123_000_000),
            "2023-11-14 22:13:20.123"
        );
        assert_eq!(fmt_duration(1_500_000), "1.50ms");
        assert_eq!(fmt_duration(2_000_000_000), "2.000s");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(sanitize("a\x1b[31mb"), "a\\u{1b}[31mb");
    }
}
