//! Azure: the subscription's container groups, container apps and container app jobs, from
//! Resource Manager's subscription-wide list endpoints, every `nextLink` page (followed only on
//! the same endpoint and list path; a throttled or failing page is asked again, after its
//! `Retry-After`, up to [`super::PAGE_ATTEMPTS`] times). Images are read as
//! ScanOnDeploy reads one resource (init containers included). Place: `aci:<resource group>/<group>/<container>` for a container
//! group, `aca:<resource group>/<app or job>` for a container app or job.
//!
//! A resource whose ID is not a plain `/subscriptions/<this subscription>/resourceGroups/<rg>/
//! providers/<namespace>/<type>/<name>` (odd segments, another subscription) is not trusted:
//! its containers are listed as unresolved, with the reason.

use super::error::{ListError, check_size};
use super::paging::retrying;
use super::seen::Seen;
use crate::azure::{ArmListKind, resource_containers};
use crate::resolve::Resolver;
use serde_json::Value;

/// The containers of every container group, container app and job in `subscription_id`.
pub(crate) async fn list(
    resolver: &Resolver,
    subscription_id: &str,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Vec<Seen>, ListError> {
    let azure = resolver
        .azure()
        .map_err(|_| ListError::Unsupported("azure"))?;
    let mut seen = Vec::new();
    for kind in [
        ArmListKind::ContainerGroups,
        ArmListKind::ContainerApps,
        ArmListKind::Jobs,
    ] {
        let mut next: Option<String> = None;
        loop {
            let (items, link) = retrying(|| async {
                Ok(azure
                    .list_page(subscription_id, kind, next.as_deref())
                    .await?)
            })
            .await?;
            for item in &items {
                containers_of(subscription_id, kind, item, &mut seen);
            }
            check_size(seen.len())?;
            progress(seen.len() as u64);
            match link {
                Some(link) => next = Some(link),
                None => break,
            }
        }
    }
    Ok(seen)
}

/// The containers of one listed resource.
pub(crate) fn containers_of(
    subscription_id: &str,
    kind: ArmListKind,
    item: &Value,
    out: &mut Vec<Seen>,
) {
    let id = item["id"].as_str().unwrap_or_default();
    let prefix = if kind.is_aci() { "aci" } else { "aca" };
    let (where_, refused) = match resource_group_and_name(subscription_id, id) {
        Ok((group, name)) => (format!("{group}/{name}"), None),
        Err(why) => ("(refused resource ID)".to_string(), Some(why)),
    };
    for (container, image) in resource_containers(item, kind.is_aci()) {
        let place = if kind.is_aci() {
            format!("{prefix}:{where_}/{container}")
        } else {
            format!("{prefix}:{where_}")
        };
        out.push(Seen {
            image,
            place,
            reported: None,
            refused: refused.clone(),
        });
    }
}

/// The resource group and name in a resource ID of `subscription_id`, or why it is refused.
fn resource_group_and_name(subscription_id: &str, id: &str) -> Result<(String, String), String> {
    let quoted = || id.chars().take(120).collect::<String>();
    qflows_workflows::scan::check_arm_resource_id("id", id)
        .map_err(|e| format!("resource ID refused: {}", e.problem))?;
    let parts: Vec<&str> = id.trim_matches('/').split('/').collect();
    let plain = parts.len() == 8
        && parts[0].eq_ignore_ascii_case("subscriptions")
        && parts[2].eq_ignore_ascii_case("resourceGroups")
        && parts[4].eq_ignore_ascii_case("providers");
    if !plain {
        return Err(format!(
            "resource ID refused: `{}` is not /subscriptions/<id>/resourceGroups/<group>/\
             providers/<namespace>/<type>/<name>",
            quoted()
        ));
    }
    if !parts[1].eq_ignore_ascii_case(subscription_id) {
        return Err(format!(
            "resource ID refused: `{}` is in another subscription",
            quoted()
        ));
    }
    Ok((parts[3].to_string(), parts[7].to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SUB: &str = "00000000-1111-2222-3333-444444444444";

    #[test]
    fn places_and_refused_ids() {
        let group = json!({
            "id": format!("/subscriptions/{SUB}/resourceGroups/shop/providers/Microsoft.ContainerInstance/containerGroups/web"),
            "properties": {"containers": [{"name": "c1", "properties": {"image": "nginx:1.27"}}]}
        });
        let mut out = Vec::new();
        containers_of(SUB, ArmListKind::ContainerGroups, &group, &mut out);
        assert_eq!(out[0].place, "aci:shop/web/c1");
        assert_eq!(out[0].refused, None);

        let app = json!({
            "id": format!("/subscriptions/{SUB}/resourceGroups/shop/providers/Microsoft.App/containerApps/api"),
            "properties": {"template": {"containers": [{"name": "api", "image": "api:2"}]}}
        });
        containers_of(SUB, ArmListKind::ContainerApps, &app, &mut out);
        assert_eq!(out[1].place, "aca:shop/api");

        for bad in [
            format!("/subscriptions/{SUB}/resourceGroups/../providers/Microsoft.App/jobs/x"),
            format!("/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.App/jobs/x/y/z"),
            "/subscriptions/99999999-1111-2222-3333-444444444444/resourceGroups/rg/providers/Microsoft.App/jobs/x".to_string(),
            String::new(),
        ] {
            let job = json!({"id": bad,
                "properties": {"template": {"containers": [{"name": "j", "image": "job:1"}]}}});
            let mut out = Vec::new();
            containers_of(SUB, ArmListKind::Jobs, &job, &mut out);
            assert_eq!(out.len(), 1, "{bad}");
            assert!(
                out[0]
                    .refused
                    .as_deref()
                    .is_some_and(|r| r.starts_with("resource ID refused")),
                "{bad}: {:?}",
                out[0]
            );
            assert_eq!(out[0].place, "aca:(refused resource ID)");
        }
    }
}
