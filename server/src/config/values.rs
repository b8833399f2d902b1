//! Value parsers for configuration text: Go-style durations, byte sizes
//! and listen addresses. Pure functions over strings.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Parses a byte size: a plain number of bytes, or a number with a
/// decimal (`KB`, `MB`, `GB`, `TB`) or binary (`KiB`, `MiB`, `GiB`, `TiB`)
/// unit.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "MB" => 1000_u64.pow(2),
        "GB" => 1000_u64.pow(3),
        "TB" => 1000_u64.pow(4),
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

/// Parses a Go-style duration: one or more `<number><unit>` terms with units
/// `h`, `m`, `s`, `ms`, `us`, `ns` (e.g. `1m30s`), or `0`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    (total.is_finite() && total < 1e9).then(|| Duration::from_secs_f64(total))
}

/// Parses `:PORT`, `HOST:PORT` or `[V6]:PORT`.
pub fn parse_listen(text: &str) -> Option<SocketAddr> {
    if let Some(port) = text.strip_prefix(':') {
        return Some(SocketAddr::from(([0, 0, 0, 0], port.parse().ok()?)));
    }
    text.to_socket_addrs().ok()?.next()
}

/// A duration as `config check` shows it, in the syntax
/// [`parse_duration`] reads: `0`, whole hours, minutes and seconds as
/// `1h30m`, `90s` as `1m30s`, anything finer in Rust's `Debug` form
/// (`500ms`, `1.5s`).
pub fn show_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0".into();
    }
    if d.subsec_nanos() != 0 {
        return format!("{d:?}");
    }
    let secs = d.as_secs();
    let terms = [(secs / 3600, "h"), (secs / 60 % 60, "m"), (secs % 60, "s")];
    terms
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_durations_read_back() {
        for (secs, nanos, shown) in [
            (30, 0, "30s"),
            (90, 0, "1m30s"),
            (3600, 0, "1h"),
            (604_800, 0, "168h"),
            (3661, 0, "1h1m1s"),
            (0, 500_000_000, "500ms"),
            (1, 500_000_000, "1.5s"),
        ] {
            let d = Duration::new(secs, nanos);
            assert_eq!(show_duration(d), shown);
            assert_eq!(parse_duration(shown), Some(d), "{shown}");
        }
        assert_eq!(show_duration(Duration::ZERO), "0");
    }
}
