//! Units as users write them, one meaning each, for every command and configuration key:
//! sizes (`512M`, `2GiB`), durations (`250ms`, `1.5s`, `7d`) and points in time (`1h` ago,
//! RFC 3339 with any offset, Unix seconds). Parsing and calendar arithmetic come from
//! well-kept crates (`bytesize`, `jiff`); this module only fixes the meanings.
//!
//! Sizes are binary whatever the spelling: `K`, `KB`, `KiB` and `k` are all 1024 bytes, `M`
//! 1024², `G` 1024³, `T` 1024⁴. That is how Docker reads `--memory 512m` and QEMU `-m 512M`,
//! the tools Shoji's users come from, so a size means the same in `--memory`, `[runtime]
//! log_max_size`, `[trace_store] max_size` and `--max-request-size`.

use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    #[error("{0:?} is not a duration: expected a number and a unit (ns, us, ms, s, m, h, d), e.g. 250ms")]
    Duration(String),
    #[error("{0:?} is not a time: expected a duration ago (1h), RFC 3339 (2026-11-24T10:00:00Z, 2026-11-24T12:00:00+02:00; no offset means UTC) or Unix seconds")]
    Time(String),
    #[error("{0:?} is not a size: expected a number and an optional unit K, M, G or T (powers of 1024; KB, KiB and k mean the same), e.g. 512M or 2GiB")]
    Size(String),
}

/// Bytes in `512M`, `1.5g`, `2GiB`, `4096` (see the module's note: binary units).
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let bad = || UnitError::Size(text.to_string());
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let prefix = unit.strip_suffix('b').unwrap_or(&unit);
    let prefix = prefix.strip_suffix('i').unwrap_or(prefix);
    if num.is_empty() || !matches!(prefix, "" | "k" | "m" | "g" | "t") {
        return Err(bad());
    }
    // bytesize reads `Ki`/`Mi`/... as powers of 1024: every spelling is mapped to those.
    let binary = if prefix.is_empty() {
        num.to_string()
    } else {
        format!("{num} {prefix}ib")
    };
    binary
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| bad())
}

/// A size for people to read, in the same binary units [`parse_size`] reads: `1.2 MiB`.
pub fn fmt_size(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

/// Nanoseconds in a duration like `250ms`, `1.5s`, `10m`, `2h`, `7d`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<u64, UnitError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| UnitError::Duration(text.to_string()))?;
    let scale = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "" | "s" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        "d" => 86400e9,
        _ => return Err(UnitError::Duration(text.to_string())),
    };
    let ns = n * scale;
    if !ns.is_finite() || ns < 0.0 || ns > u64::MAX as f64 {
        return Err(UnitError::Duration(text.to_string()));
    }
    Ok(ns as u64)
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Unix nanoseconds of `1h` (ago), an RFC 3339 time with its offset (`2026-11-24T10:00:00Z`,
/// `2026-11-24T12:00:00+02:00`), a date and time without offset read as UTC
/// (`2026-11-24 10:00:00`, `2026-11-24`), or `1764000000` (Unix seconds).
pub fn parse_time(text: &str) -> Result<u64, UnitError> {
    let bad = || UnitError::Time(text.to_string());
    let t = text.trim();
    if t.len() >= 10 && t.as_bytes().get(4) == Some(&b'-') {
        let ts = match t.parse::<jiff::Timestamp>() {
            Ok(ts) => ts,
            // No offset at all: UTC, as every time Shoji prints is.
            Err(_) => t
                .parse::<jiff::civil::DateTime>()
                .or_else(|_| {
                    t.parse::<jiff::civil::Date>()
                        .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
                })
                .ok()
                .and_then(|dt| jiff::tz::Offset::UTC.to_timestamp(dt).ok())
                .ok_or_else(bad)?,
        };
        return u64::try_from(ts.as_nanosecond()).map_err(|_| bad());
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) && t.len() >= 9 {
        let secs: u64 = t.parse().map_err(|_| bad())?;
        return Ok(secs.saturating_mul(1_000_000_000));
    }
    let ago = parse_duration(t).map_err(|_| bad())?;
    Ok(now_ns().saturating_sub(ago))
}

/// Unix nanoseconds as UTC `YYYY-MM-DD HH:MM:SS.mmm`.
pub fn fmt_utc_millis(ns: u64) -> String {
    let ts = jiff::Timestamp::from_nanosecond(i128::from(ns)).unwrap_or(jiff::Timestamp::MAX);
    ts.strftime("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// Now as RFC 3339 UTC with nanoseconds, e.g. `2026-11-03T10:04:05.123456789Z`.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.9fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(fmt_size(512), "512 B");
        assert_eq!(fmt_size(3 << 20), "3.0 MiB");
        assert_eq!(parse_size("3M").unwrap(), 3 << 20);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(250_000_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration("7d"), Ok(7 * 86_400_000_000_000));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("1e400s").is_err());
    }

    #[test]
    fn times_parse_with_their_offsets() {
        let utc = 1_700_000_000_500_000_000;
        assert_eq!(parse_time("2023-11-14T22:13:20.5Z"), Ok(utc));
        // The same instant written two hours east of UTC: once silently read as UTC.
        assert_eq!(parse_time("2023-11-15T00:13:20.5+02:00"), Ok(utc));
        assert_eq!(parse_time("2023-11-14T17:13:20.5-05:00"), Ok(utc));
        assert_eq!(parse_time("2023-11-14 22:13:20.5"), Ok(utc));
        assert_eq!(parse_time("2023-11-14"), Ok(1_699_920_000_000_000_000));
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000_000_000_000));
        assert!(parse_time("2023-13-01").is_err());
        assert!(parse_time("2023-02-30T00:00:00Z").is_err());
        assert!(parse_time("1969-12-31T00:00:00Z").is_err(), "before 1970");
    }

    #[test]
    fn sizes_have_one_binary_meaning() {
        for s in [
            "512M", "512m", "512MB", "512mb", "512MiB", "512 Mi", " 512M ",
        ] {
            assert_eq!(parse_size(s), Ok(512 << 20), "{s}");
        }
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        for s in ["", "M", "12 parsecs", "1e3K", "-1M", "1PB", "1..5M"] {
            assert_eq!(parse_size(s), Err(UnitError::Size(s.to_string())), "{s}");
        }
    }

    #[test]
    fn times_format_in_utc() {
        assert_eq!(fmt_utc_millis(0), "1970-01-01 00:00:00.000");
        assert_eq!(
            fmt_utc_millis(1_700_000_000_123_000_000),
            "2023-11-14 22:13:20.123"
        );
        let now = now_rfc3339();
        assert_eq!(now.len(), "2026-11-03T10:04:05.123456789Z".len(), "{now}");
        assert!(parse_time(&now).is_ok());
    }
}
