//! A histogram read back from a Prometheus text exposition, for benchmarks that check what a
//! worker's `/metrics` says against what they measured themselves.

/// One histogram series: its cumulative buckets, count and sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScrapedHistogram {
    /// `(upper bound, cumulative count)`, in exposition order (ascending, `+Inf` last).
    pub buckets: Vec<(f64, f64)>,
    /// Observations.
    pub count: f64,
    /// Their sum.
    pub sum: f64,
}

impl ScrapedHistogram {
    /// Finds histogram `name` among `text`'s lines, in the series whose labels contain
    /// `label` (e.g. `backend="registry"`). `None` when it has no `_count` yet.
    pub fn parse(text: &str, name: &str, label: &str) -> Option<Self> {
        let series = |suffix: &str| {
            let prefix = format!("{name}{suffix}");
            text.lines().filter(move |l| {
                l.strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                    && l.contains(label)
            })
        };
        let value = |line: &str| line.rsplit(' ').next()?.parse::<f64>().ok();
        let buckets = series("_bucket")
            .filter_map(|l| {
                let le = l.split("le=\"").nth(1)?.split('"').next()?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((bound, value(l)?))
            })
            .collect();
        Some(Self {
            buckets,
            count: series("_count").next().and_then(value)?,
            sum: series("_sum").next().and_then(value).unwrap_or(0.0),
        })
    }

    /// The upper bound of the bucket that holds quantile `q` (0–1): the true quantile is at
    /// most this. `None` without observations.
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = (q * self.count).ceil().max(1.0);
        self.buckets
            .iter()
            .find(|(_, cumulative)| *cumulative >= rank)
            .map(|(bound, _)| *bound)
    }

    /// The mean observation, if any.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP lat_seconds latency
# TYPE lat_seconds histogram
lat_seconds_bucket{backend="registry",le="1"} 2
lat_seconds_bucket{backend="registry",le="5"} 9
lat_seconds_bucket{backend="registry",le="+Inf"} 10
lat_seconds_sum{backend="registry"} 31.5
lat_seconds_count{backend="registry"} 10
lat_seconds_bucket{backend="qscanner",le="1"} 0
lat_seconds_bucket{backend="qscanner",le="5"} 0
lat_seconds_bucket{backend="qscanner",le="+Inf"} 1
lat_seconds_sum{backend="qscanner"} 40
lat_seconds_count{backend="qscanner"} 1
lat_seconds_other_count{backend="registry"} 99
"#;

    #[test]
    fn reads_one_series_and_bounds_its_quantiles() {
        let h = ScrapedHistogram::parse(TEXT, "lat_seconds", "backend=\"registry\"").unwrap();
        assert_eq!(h.count, 10.0);
        assert_eq!(h.sum, 31.5);
        assert_eq!(h.buckets.len(), 3);
        assert_eq!(h.quantile_bound(0.2), Some(1.0));
        assert_eq!(h.quantile_bound(0.5), Some(5.0));
        assert_eq!(h.quantile_bound(0.99), Some(f64::INFINITY));
        assert_eq!(h.mean(), Some(3.15));
    }

    #[test]
    fn other_series_and_absent_ones_are_told_apart() {
        let q = ScrapedHistogram::parse(TEXT, "lat_seconds", "backend=\"qscanner\"").unwrap();
        assert_eq!((q.count, q.quantile_bound(0.5)), (1.0, Some(f64::INFINITY)));
        assert_eq!(
            ScrapedHistogram::parse(TEXT, "lat_seconds", "backend=\"x\""),
            None
        );
        assert_eq!(ScrapedHistogram::parse(TEXT, "nothing", ""), None);
    }
}
