//! Value syntax as Tetragon's Go code parses it (`strconv`, `net/netip`), so the validator
//! refuses exactly what the loader would.

use std::net::IpAddr;

/// Splits an optional sign, then a base prefix when `base0` (`0x`, `0o`, `0b`, leading `0` = octal).
fn digits_and_radix(s: &str, base0: bool) -> Option<(&str, u32)> {
    if !base0 {
        return Some((s, 10));
    }
    let lower = s.get(..2).map(str::to_ascii_lowercase);
    match lower.as_deref() {
        Some("0x") => Some((&s[2..], 16)),
        Some("0o") => Some((&s[2..], 8)),
        Some("0b") => Some((&s[2..], 2)),
        _ if s.len() > 1 && s.starts_with('0') => Some((&s[1..], 8)),
        _ => Some((s, 10)),
    }
}

/// Go `strconv.ParseUint(s, base, bits)` with base 0 (`base0`) or 10.
pub(super) fn parse_uint(s: &str, base0: bool, bits: u32) -> Option<u64> {
    if s.is_empty() || s.starts_with('+') || s.starts_with('-') {
        return None;
    }
    let (digits, radix) = digits_and_radix(s, base0)?;
    // Underscores may separate digits only with base 0 (Go integer literal syntax).
    let cleaned: String = if digits.contains('_') {
        let prefixed = radix != 10 || digits.len() < s.len();
        if !base0
            || (!prefixed && digits.starts_with('_'))
            || digits.ends_with('_')
            || digits.contains("__")
        {
            return None;
        }
        digits.chars().filter(|c| *c != '_').collect()
    } else {
        digits.to_owned()
    };
    if cleaned.is_empty() || !cleaned.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let v = u64::from_str_radix(&cleaned, radix).ok()?;
    (bits >= 64 || v < (1u64 << bits)).then_some(v)
}

/// Go `strconv.ParseInt(s, base, bits)` with base 0 (`base0`) or 10.
pub(super) fn parse_int(s: &str, base0: bool, bits: u32) -> Option<i64> {
    let (neg, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mag = parse_uint(rest, base0, 64)?;
    let limit = 1u64 << (bits - 1);
    if neg {
        (mag <= limit).then(|| (-(mag as i128)) as i64)
    } else {
        (mag < limit).then_some(mag as i64)
    }
}

/// Go `strconv.ParseBool`.
pub(super) fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go `strconv.Atoi` (decimal, optional sign, platform int = 64 bits).
pub(super) fn atoi(s: &str) -> Option<i64> {
    parse_int(s, false, 64)
}

/// An IP address or CIDR as `netip.ParseAddr` / `netip.ParsePrefix` accept them.
pub(super) fn is_addr_or_cidr(s: &str) -> bool {
    match s.split_once('/') {
        Some((addr, bits)) => {
            let Ok(ip) = addr.parse::<IpAddr>() else {
                return false;
            };
            // Go: decimal, no sign, no leading zeros ("0" itself is fine).
            if bits.is_empty()
                || !bits.bytes().all(|b| b.is_ascii_digit())
                || (bits.len() > 1 && bits.starts_with('0'))
            {
                return false;
            }
            let max = if ip.is_ipv4() { 32 } else { 128 };
            bits.parse::<u32>().is_ok_and(|b| b <= max)
        }
        None => s.parse::<IpAddr>().is_ok(),
    }
}

/// Tetragon's `parseRateLimit`: `N`, `Ns`, `Nm` or `Nh` (N a decimal uint32; unit case-insensitive).
pub(super) fn is_rate_limit(s: &str) -> bool {
    let Some(last) = s.chars().last() else {
        return false;
    };
    let number = if matches!(last, 's' | 'S' | 'm' | 'M' | 'h' | 'H') {
        &s[..s.len() - 1]
    } else {
        s
    };
    parse_uint(number, false, 32).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_integers() {
        assert_eq!(parse_int("0x10", true, 32), Some(16));
        assert_eq!(parse_int("010", true, 32), Some(8));
        assert_eq!(parse_int("-2147483648", true, 32), Some(i32::MIN as i64));
        assert_eq!(parse_int("2147483648", true, 32), None);
        assert_eq!(parse_int("0b101", true, 64), Some(5));
        assert_eq!(parse_int("1_000", true, 64), Some(1000));
        assert_eq!(parse_int("1_000", false, 64), None);
        assert_eq!(parse_int("abc", true, 64), None);
        assert_eq!(parse_uint("-1", true, 64), None);
        assert_eq!(parse_uint("4294967295", true, 32), Some(u32::MAX as u64));
        assert_eq!(parse_uint("4294967296", true, 32), None);
        assert_eq!(parse_uint("0x", true, 32), None);
        assert_eq!(parse_uint("08", true, 32), None);
        assert_eq!(parse_uint("08", false, 32), Some(8));
        assert_eq!(parse_int("-9223372036854775808", false, 64), Some(i64::MIN));
    }

    #[test]
    fn addresses_and_rate_limits() {
        assert!(is_addr_or_cidr("169.254.169.254"));
        assert!(is_addr_or_cidr("::ffff:169.254.169.254"));
        assert!(is_addr_or_cidr("fd00:ec2::254"));
        assert!(is_addr_or_cidr("10.0.0.0/8"));
        assert!(is_addr_or_cidr("fd00::/8"));
        assert!(!is_addr_or_cidr("10.0.0.0/33"));
        assert!(!is_addr_or_cidr("10.0.0.0/08"));
        assert!(!is_addr_or_cidr("169.254.169.254:80"));
        assert!(!is_addr_or_cidr("localhost"));
        assert!(
            is_rate_limit("1m")
                && is_rate_limit("30")
                && is_rate_limit("5M")
                && is_rate_limit("1h")
        );
        assert!(
            !is_rate_limit("m")
                && !is_rate_limit("1d")
                && !is_rate_limit("-1m")
                && !is_rate_limit("")
        );
    }
}
