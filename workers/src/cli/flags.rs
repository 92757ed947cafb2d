//! Values of flags that several commands take: durations and intervals. A leaf: it imports no
//! other command.

use std::time::Duration;

/// Parses `90s`, `30m`, `1h`, `1h30m`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(format!("{s:?}: use a duration like 30m, 1h or 1h30m")),
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?}: a number must come before {c}"))?;
        total += n * unit;
        num.clear();
    }
    if !num.is_empty() || total == 0 {
        return Err(format!("{s:?}: use a duration like 30s, 30m, 1h30m or 2d"));
    }
    Ok(Duration::from_secs(total))
}

/// [`parse_duration`], at least a minute.
pub fn parse_every(s: &str) -> Result<Duration, String> {
    let every = parse_duration(s)?;
    if every < Duration::from_secs(60) {
        return Err(format!(
            "{s:?}: use a duration of at least 1m like 30m, 1h or 1h30m"
        ));
    }
    Ok(every)
}
