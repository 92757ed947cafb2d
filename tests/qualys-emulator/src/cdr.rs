//! `GET /cdr-api/rest/v1/findings/` (docs/qualys-api.md §3.1, §3.2): findings between `startAt`
//! and `endAt`, paged by `offSet`/`limit`, in the `{"content","totalElements"}` envelope; 403 while
//! [`crate::RunningEmulator::set_cdr_forbidden`] is on, and one 503 for the page
//! [`crate::RunningEmulator::fail_cdr_page_once`] names.

use crate::http::{ApiError, Query, Reply, bad_request, ok};
use crate::state::Shared;
use crate::time::parse_iso8601_ms;
use serde_json::{Value, json};

/// Severity names of the query parameter and the integers findings carry (1 = LOW,
/// 2 = MEDIUM, 3 = HIGH, 4 and 5 = CRITICAL).
fn severity_name(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => match n.as_u64()? {
            1 => Some("LOW".into()),
            2 => Some("MEDIUM".into()),
            3 => Some("HIGH".into()),
            4 | 5 => Some("CRITICAL".into()),
            _ => None,
        },
        Value::String(s) => match s.trim().parse::<u64>() {
            Ok(n) => severity_name(&json!(n)),
            Err(_) => Some(s.trim().to_ascii_uppercase()),
        },
        _ => None,
    }
}

/// A finding's time: `timestamp` as ISO-8601 (or epoch milliseconds).
fn finding_time(f: &Value) -> Option<i64> {
    match f.get("timestamp")? {
        Value::String(s) => parse_iso8601_ms(s),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// Whether field `name` of `f` equals `wanted` case-insensitively; a finding without the field
/// matches (the seed data does not carry every field a filter can name).
fn field_matches(f: &Value, name: &str, wanted: &str) -> bool {
    match f.get(name) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.eq_ignore_ascii_case(wanted),
        Some(other) => other.to_string().eq_ignore_ascii_case(wanted),
    }
}

/// `tc.findings.<field>: <value>` terms of a `query` (other terms are ignored).
fn query_terms(query: &str) -> Result<Vec<(String, String)>, String> {
    Ok(crate::qql::parse(query)?
        .into_iter()
        .filter_map(|(k, v)| {
            let field = k
                .strip_prefix("tc.findings.")
                .or_else(|| k.strip_prefix("findings."))
                .unwrap_or(&k);
            (field != "severity").then(|| (field.to_string(), v))
        })
        .collect())
}

/// The endpoint.
pub(crate) fn findings(shared: &Shared, q: &Query) -> Reply {
    let time = |name: &str| -> Result<i64, ApiError> {
        let raw = q.get(name).map(str::trim).filter(|s| !s.is_empty());
        let raw = raw.ok_or_else(|| {
            bad_request(format!(
                "{name} is mandatory (ISO-8601, e.g. 2025-01-27T08:54:41.396Z)"
            ))
        })?;
        parse_iso8601_ms(raw)
            .ok_or_else(|| bad_request(format!("{name} is not an ISO-8601 date-time: {raw}")))
    };
    let (start, end) = (time("startAt")?, time("endAt")?);
    if start > end {
        return Err(bad_request("startAt must not be after endAt"));
    }
    let offset = q.number("offSet")?.unwrap_or(0);
    if offset < 0 {
        return Err(bad_request("offSet must be 0 or more"));
    }
    let limit = q.number("limit")?.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(bad_request("limit must be between 1 and 1000"));
    }
    let severities: Option<Vec<String>> = q
        .get("severity")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.split(',')
                .map(|p| p.trim().to_ascii_uppercase())
                .collect()
        });
    if let Some(bad) = severities
        .iter()
        .flatten()
        .find(|s| !matches!(s.as_str(), "LOW" | "MEDIUM" | "HIGH" | "CRITICAL"))
    {
        return Err(bad_request(format!(
            "severity must be LOW, MEDIUM, HIGH or CRITICAL, not {bad}"
        )));
    }
    let provider = q
        .get("cloudProvider")
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let terms = match q
        .get("query")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(query_terms)
        .transpose()
    {
        Ok(t) => t.unwrap_or_default(),
        Err(e) => return Err(bad_request(format!("Invalid query: {e}"))),
    };
    let mut world = shared.world.lock();
    if world.cdr_fail_once_at == Some(offset) {
        world.cdr_fail_once_at = None;
        return Err(ApiError {
            status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
            message: "CDR findings currently unavailable".into(),
        });
    }
    if world.cdr_forbidden {
        return Err(ApiError {
            status: axum::http::StatusCode::FORBIDDEN,
            message: "The user does not have the CDR permission".into(),
        });
    }
    let matching: Vec<&Value> = world
        .cdr_findings
        .iter()
        .filter(|f| finding_time(f).is_some_and(|t| (start..=end).contains(&t)))
        .filter(|f| match &severities {
            None => true,
            Some(wanted) => f
                .get("severity")
                .and_then(severity_name)
                .is_some_and(|s| wanted.contains(&s)),
        })
        .filter(|f| provider.is_none_or(|p| field_matches(f, "cloudProvider", p)))
        .filter(|f| terms.iter().all(|(k, v)| field_matches(f, k, v)))
        .collect();
    let content: Vec<&Value> = matching
        .iter()
        .skip(offset as usize)
        .take(limit as usize)
        .copied()
        .collect();
    ok(&json!({
        "content": content,
        "totalElements": matching.len(),
        "size": limit,
        "number": offset / limit,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_and_fields() {
        assert_eq!(severity_name(&json!(4)).as_deref(), Some("CRITICAL"));
        assert_eq!(severity_name(&json!("3")).as_deref(), Some("HIGH"));
        assert_eq!(severity_name(&json!("low")).as_deref(), Some("LOW"));
        let f = json!({"cloudProvider": "AWS", "timestamp": "2026-01-10T16:41:07.123Z"});
        assert!(field_matches(&f, "cloudProvider", "aws"));
        assert!(!field_matches(&f, "cloudProvider", "GCP"));
        assert!(field_matches(&f, "absent", "x"));
        assert_eq!(
            finding_time(&f),
            parse_iso8601_ms("2026-01-10T16:41:07.123Z")
        );
        assert_eq!(
            query_terms("tc.findings.cloudProvider: AWS").unwrap(),
            vec![("cloudProvider".to_string(), "AWS".to_string())]
        );
    }
}
