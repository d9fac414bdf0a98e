//! Durations (`250ms`, `1.5s`, `2h`, `7d`) and points in time (`1h` ago, RFC 3339, Unix
//! seconds) as the CLI and the configuration write them.

use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimeError {
    #[error("{0:?} is not a duration: expected a number and a unit (ns, us, ms, s, m, h, d), e.g. 250ms")]
    Duration(String),
    #[error("{0:?} is not a time: expected a duration ago (1h), RFC 3339 (2026-11-24T10:00:00Z) or Unix seconds")]
    Time(String),
}

/// Nanoseconds in a duration like `250ms`, `1.5s`, `10m`, `2h`, `7d`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<u64, TimeError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| TimeError::Duration(text.to_string()))?;
    let scale = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "" | "s" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        "d" => 86400e9,
        _ => return Err(TimeError::Duration(text.to_string())),
    };
    let ns = n * scale;
    if !ns.is_finite() || ns < 0.0 || ns > u64::MAX as f64 {
        return Err(TimeError::Duration(text.to_string()));
    }
    Ok(ns as u64)
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Unix nanoseconds of `1h` (ago), `2026-11-24T10:00:00Z` / `2026-11-24 10:00:00` (UTC) or
/// `1764000000` (Unix seconds).
pub fn parse_time(text: &str) -> Result<u64, TimeError> {
    let t = text.trim();
    if t.len() >= 10 && t.as_bytes().get(4) == Some(&b'-') {
        return parse_rfc3339(t).ok_or_else(|| TimeError::Time(text.to_string()));
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) && t.len() >= 9 {
        let secs: u64 = t.parse().map_err(|_| TimeError::Time(text.to_string()))?;
        return Ok(secs.saturating_mul(1_000_000_000));
    }
    let ago = parse_duration(t).map_err(|_| TimeError::Time(text.to_string()))?;
    Ok(now_ns().saturating_sub(ago))
}

fn parse_rfc3339(t: &str) -> Option<u64> {
    let num = |s: &str| s.parse::<u64>().ok();
    let y = num(t.get(0..4)?)?;
    let mo = num(t.get(5..7)?)?;
    let d = num(t.get(8..10)?)?;
    let rest = t.get(10..).unwrap_or("");
    let (mut h, mut mi, mut s, mut frac_ns) = (0, 0, 0, 0u64);
    if !rest.is_empty() {
        let rest = rest.strip_prefix(['T', 't', ' '])?;
        h = num(rest.get(0..2)?)?;
        mi = num(rest.get(3..5)?)?;
        s = num(rest.get(6..8)?).unwrap_or(0);
        let tail = rest.get(8..).unwrap_or("");
        if let Some(frac) = tail.strip_prefix('.') {
            let digits: String = frac.chars().take_while(char::is_ascii_digit).collect();
            let padded = format!("{digits:0<9}");
            frac_ns = padded.get(0..9)?.parse().ok()?;
        }
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(y as i64, mo as i64, d as i64);
    let secs = days * 86400 + (h * 3600 + mi * 60 + s) as i64;
    u64::try_from(secs)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(frac_ns)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(250_000_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration("7d"), Ok(7 * 86_400_000_000_000));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("1e400s").is_err());
    }

    #[test]
    fn times_parse() {
        assert_eq!(
            parse_time("2023-11-14T22:13:20.5Z"),
            Ok(1_700_000_000_500_000_000)
        );
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000_000_000_000));
        assert!(parse_time("2023-13-01").is_err());
    }
}
