//! A small ISO-8601 reader for CDR's `startAt`/`endAt` and finding timestamps.

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Reads exactly `n` ASCII digits at `*i`.
fn digits(b: &[u8], i: &mut usize, n: usize) -> Option<i64> {
    let s = b.get(*i..*i + n)?;
    if !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    *i += n;
    Some(s.iter().fold(0, |acc, d| acc * 10 + i64::from(d - b'0')))
}

fn expect(b: &[u8], i: &mut usize, c: u8) -> Option<()> {
    (b.get(*i) == Some(&c)).then(|| *i += 1)
}

/// Milliseconds since the epoch of `YYYY-MM-DD[(T| )HH:MM[:SS[.fff…]]][Z|±HH[:]MM|±HH]`
/// (no zone = UTC). `None` when it is not one.
pub(crate) fn parse_iso8601_ms(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    let mut i = 0;
    let year = digits(b, &mut i, 4)?;
    expect(b, &mut i, b'-')?;
    let month = digits(b, &mut i, 2)?;
    expect(b, &mut i, b'-')?;
    let day = digits(b, &mut i, 2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut ms = days_from_civil(year, month, day) * 86_400_000;
    if i == b.len() {
        return Some(ms);
    }
    if !matches!(b[i], b'T' | b't' | b' ') {
        return None;
    }
    i += 1;
    let hour = digits(b, &mut i, 2)?;
    expect(b, &mut i, b':')?;
    let minute = digits(b, &mut i, 2)?;
    let mut second = 0;
    let mut millis = 0;
    if b.get(i) == Some(&b':') {
        i += 1;
        second = digits(b, &mut i, 2)?;
        if matches!(b.get(i), Some(b'.' | b',')) {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return None;
            }
            // Milliseconds from the first three fraction digits.
            let frac: String = b[start..i].iter().take(3).map(|&d| d as char).collect();
            millis = format!("{frac:0<3}").parse::<i64>().ok()?;
        }
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    ms += ((hour * 60 + minute) * 60 + second) * 1000 + millis;
    let offset_min = match b.get(i) {
        None => 0,
        Some(b'Z' | b'z') => {
            i += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            i += 1;
            let oh = digits(b, &mut i, 2)?;
            if b.get(i) == Some(&b':') {
                i += 1;
            }
            let om = if i < b.len() {
                digits(b, &mut i, 2)?
            } else {
                0
            };
            if oh > 23 || om > 59 {
                return None;
            }
            let total = oh * 60 + om;
            if sign == b'-' { -total } else { total }
        }
        Some(_) => return None,
    };
    if i != b.len() {
        return None;
    }
    Some(ms - offset_min * 60_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601() {
        assert_eq!(parse_iso8601_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_iso8601_ms("1970-01-01"), Some(0));
        assert_eq!(
            parse_iso8601_ms("2025-01-27T08:54:41.396Z"),
            Some(1_737_968_081_396)
        );
        assert_eq!(
            parse_iso8601_ms("2025-01-27T09:54:41.396+01:00"),
            Some(1_737_968_081_396)
        );
        assert_eq!(
            parse_iso8601_ms("2025-01-27T03:54:41.3961234-0500"),
            Some(1_737_968_081_396)
        );
        assert_eq!(
            parse_iso8601_ms("2025-01-27T08:54:41.4Z"),
            Some(1_737_968_081_400)
        );
        assert_eq!(
            parse_iso8601_ms("2024-02-29T00:00Z"),
            Some(1_709_164_800_000)
        );
        assert_eq!(
            parse_iso8601_ms("2025-05-28T23:59:59.999Z"),
            Some(1_748_476_799_999)
        );
        for bad in [
            "",
            "yesterday",
            "2025-13-01",
            "2023-02-29",
            "2025-01-27T25:00:00Z",
            "2025-01-27T08:54:41Zjunk",
            "2025-01-27T08:54:41.",
        ] {
            assert_eq!(parse_iso8601_ms(bad), None, "{bad}");
        }
    }
}
