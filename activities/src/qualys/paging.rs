//! Paging (docs/qualys-api.md §2.3 csapi, §3.1 CDR).
//!
//! - csapi: 1-based `pageNumber` (configurable name) + `pageSize`, answers `{"data":[…],"count":N}`
//!   (a bare array is accepted; 204 = nothing). Stop on an empty or short page, or once `count`
//!   items were seen.
//! - CDR: `offSet` + `limit`, answers `{"content":[…],"totalElements":N}`. Stop once
//!   `totalElements` were fetched, or on an empty (or, without a total, short) page.
//!
//! Both stop with an error after [`MAX_PAGES`] pages, so a lying server cannot loop us forever.

use super::client::{Answer, Call, QualysClient};
use super::error::QualysError;
use super::types::CdrQuery;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Most pages read by one listing.
pub(crate) const MAX_PAGES: u32 = 10_000;

/// Items of one page, and the total the server announced.
pub(crate) struct Page {
    pub(crate) items: Vec<Value>,
    pub(crate) total: Option<u64>,
}

/// Reads a page with its items under one of `keys` (or a bare array). `Err` is a decode message.
pub(crate) fn parse_page(
    answer: &Answer,
    keys: &[&str],
    total_keys: &[&str],
) -> Result<Page, String> {
    if answer.is_empty() {
        return Ok(Page {
            items: Vec::new(),
            total: Some(0),
        });
    }
    let value: Value = serde_json::from_slice(&answer.body).map_err(|e| e.to_string())?;
    match value {
        Value::Array(items) => Ok(Page { items, total: None }),
        Value::Object(mut obj) => {
            let total = total_keys
                .iter()
                .find_map(|k| obj.get(*k).and_then(Value::as_u64));
            match keys
                .iter()
                .find_map(|k| obj.remove(*k).filter(|v| !v.is_null()))
            {
                Some(Value::Array(items)) => Ok(Page { items, total }),
                Some(_) => Err(format!("`{}` is not an array", keys.join("`/`"))),
                None if total.is_some() || obj.is_empty() => Ok(Page {
                    items: Vec::new(),
                    total,
                }),
                None => Err(format!("expected an object with `{}`", keys.join("`/`"))),
            }
        }
        _ => Err(format!("expected an object with `{}`", keys.join("`/`"))),
    }
}

impl QualysClient {
    /// Items that deserialize as `T`; others are skipped with a warning.
    pub(crate) fn convert<T: DeserializeOwned>(&self, endpoint: &str, items: Vec<Value>) -> Vec<T> {
        items
            .into_iter()
            .filter_map(|item| match serde_json::from_value(item) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(endpoint, error = %self.redact(&e.to_string()), "skipping an unreadable item");
                    None
                }
            })
            .collect()
    }

    /// All items of a csapi listing (`filter` is a QQL filter, `sort` a sort token such as
    /// `created:desc`), stopping early after the page where `found` is true for an item.
    pub(crate) async fn cs_list<T: DeserializeOwned>(
        &self,
        template: &'static str,
        filter: Option<&str>,
        sort: Option<&str>,
        mut found: impl FnMut(&T) -> bool,
    ) -> Result<Vec<T>, QualysError> {
        let page_size = self.config().page_size;
        let page_param = self.config().page_param.clone();
        let mut out = Vec::new();
        let mut seen: u64 = 0;
        for page in 1..=MAX_PAGES {
            let mut call = Call::get(template, &[]);
            if let Some(filter) = filter {
                call = call.query("filter", filter);
            }
            if let Some(sort) = sort {
                call = call.query("sort", sort);
            }
            let call = call
                .query(&page_param, page.to_string())
                .query("pageSize", page_size.to_string());
            let endpoint = call.endpoint();
            let answer = self.execute(&call).await?;
            let page = parse_page(&answer, &["data"], &["count"])
                .map_err(|m| self.decode_error(&endpoint, m))?;
            let n = page.items.len() as u64;
            seen += n;
            let items: Vec<T> = self.convert(&endpoint, page.items);
            let stop = items.iter().any(&mut found);
            out.extend(items);
            let short = n < u64::from(page_size);
            if stop || n == 0 || short || page.total.is_some_and(|t| seen >= t) {
                return Ok(out);
            }
        }
        Err(self.decode_error(
            &format!("GET {template}"),
            format!("the listing did not end after {MAX_PAGES} pages"),
        ))
    }

    /// All findings of a CDR query.
    pub(crate) async fn cdr_list<T: DeserializeOwned>(
        &self,
        q: &CdrQuery,
    ) -> Result<Vec<T>, QualysError> {
        let mut out = Vec::new();
        let mut offset: u64 = 0;
        for _ in 0..MAX_PAGES {
            let page = self.cdr_page::<T>(q, offset).await?;
            offset += page.read;
            out.extend(page.items);
            if page.last {
                return Ok(out);
            }
        }
        Err(self.decode_error(
            "GET /cdr-api/rest/v1/findings/",
            format!("the listing did not end after {MAX_PAGES} pages"),
        ))
    }

    /// One page of a CDR query, `offset` findings in.
    pub(crate) async fn cdr_page<T: DeserializeOwned>(
        &self,
        q: &CdrQuery,
        offset: u64,
    ) -> Result<CdrPage<T>, QualysError> {
        const TEMPLATE: &str = "/cdr-api/rest/v1/findings/";
        let limit = if q.limit == 0 { 100 } else { q.limit };
        let mut call = Call::get(TEMPLATE, &[])
            .query("startAt", q.start_at.as_str())
            .query("endAt", q.end_at.as_str())
            .query("offSet", offset.to_string())
            .query("limit", limit.to_string());
        for (key, value) in [
            ("cloudProvider", &q.cloud_provider),
            ("severity", &q.severity),
            ("query", &q.query),
            ("resourceType", &q.resource_type),
        ] {
            if let Some(value) = value {
                call = call.query(key, value.as_str());
            }
        }
        let endpoint = call.endpoint();
        let answer = self.execute(&call).await?;
        let page = parse_page(&answer, &["content", "data"], &["totalElements", "count"])
            .map_err(|m| self.decode_error(&endpoint, m))?;
        let n = page.items.len() as u64;
        let last = n == 0
            || match page.total {
                Some(total) => offset + n >= total,
                None => n < u64::from(limit),
            };
        Ok(CdrPage {
            items: self.convert::<T>(&endpoint, page.items),
            read: n,
            total: page.total,
            last,
        })
    }
}

/// One page of CDR findings.
pub struct CdrPage<T> {
    /// The findings that could be read.
    pub items: Vec<T>,
    /// Findings on the page (readable or not): the next page's offset moves by this much.
    pub read: u64,
    /// The total the server announced.
    pub total: Option<u64>,
    /// Whether this was the last page.
    pub last: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn page_shapes() {
        let p = parse_page(
            &answer(200, r#"{"data":[{"a":1}],"count":7}"#),
            &["data"],
            &["count"],
        )
        .unwrap();
        assert_eq!((p.items.len(), p.total), (1, Some(7)));
        let p = parse_page(&answer(204, ""), &["data"], &["count"]).unwrap();
        assert!(p.items.is_empty());
        let p = parse_page(&answer(200, "[1,2]"), &["data"], &["count"]).unwrap();
        assert_eq!((p.items.len(), p.total), (2, None));
        let p = parse_page(
            &answer(200, r#"{"data":null,"count":0}"#),
            &["data"],
            &["count"],
        )
        .unwrap();
        assert!(p.items.is_empty());
        let p = parse_page(
            &answer(200, r#"{"content":[1],"totalElements":1}"#),
            &["content", "data"],
            &["totalElements"],
        )
        .unwrap();
        assert_eq!((p.items.len(), p.total), (1, Some(1)));
        assert!(parse_page(&answer(200, r#"{"data":{"x":1}}"#), &["data"], &["count"]).is_err());
        assert!(parse_page(&answer(200, r#"{"other":1}"#), &["data"], &["count"]).is_err());
        assert!(parse_page(&answer(200, r#"{"data":[{"#), &["data"], &["count"]).is_err());
        assert!(parse_page(&answer(200, "\"text\""), &["data"], &["count"]).is_err());
    }
}
