//! Kubernetes: every pod in every namespace, a page at a time (`limit` and `continue`), pods in
//! phase `Succeeded` or `Failed` left out (by field selector, and checked again). Each
//! container, init container and ephemeral container counts; its digest is read from the
//! matching `status.containerStatuses[]` / `initContainerStatuses[]` /
//! `ephemeralContainerStatuses[]` entry's `imageID` (`docker-pullable://repo@sha256:…`,
//! `repo@sha256:…`). An `imageID` without `@` (`sha256:…` alone is the image's config ID, not
//! its manifest digest) is not used. Place: `k8s:<namespace>/<pod>/<container>`.
//!
//! A page that fails with 429, a 5xx or a network error is asked again (up to
//! [`super::PAGE_ATTEMPTS`] times, backing off); an expired `continue` token (410) starts the
//! listing over once.

use super::error::{ListError, check_size};
use super::paging::retrying;
use super::seen::Seen;
use super::settings::ListerSettings;
use crate::kube::KubeError;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, ListParams};
use qflows_workflows::FailureType;
use qflows_workflows::cdr::model::KubeTarget;

/// Pods that have finished are not running anything.
const NOT_FINISHED: &str = "status.phase!=Succeeded,status.phase!=Failed";

/// The containers of every pod not finished, through `context` (default: the current one).
pub(crate) async fn list(
    settings: &ListerSettings,
    context: Option<&str>,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Vec<Seen>, ListError> {
    let client = crate::kube::client(&KubeTarget {
        context: context.map(str::to_string),
        kubeconfig: settings.kubeconfig.clone(),
    })
    .await
    .map_err(|e| match e {
        KubeError::Config(message) => ListError::KubeConfig(message),
        other => ListError::KubeConfig(other.to_string()),
    })?;
    let pods: Api<Pod> = Api::all(client);
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut restarted = false;
    loop {
        let mut params = ListParams::default()
            .fields(NOT_FINISHED)
            .limit(settings.kube_page_size.max(1));
        if let Some(t) = token.take() {
            params = params.continue_token(&t);
        }
        let page = match retrying(|| async {
            pods.list(&params).await.map_err(|source| ListError::Kube {
                what: "list pods",
                source,
            })
        })
        .await
        {
            Ok(page) => page,
            // The `continue` token expired (the listing took longer than etcd keeps its
            // revision): start over once, from the first page.
            Err(e) if e.type_name() == FailureType::KubeListExpired && !restarted => {
                tracing::info!(error = %e, "inventory: pod listing expired; starting over");
                restarted = true;
                seen.clear();
                continue;
            }
            Err(e) => return Err(e),
        };
        for pod in &page.items {
            containers_of(pod, &mut seen);
        }
        check_size(seen.len())?;
        progress(seen.len() as u64);
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => break,
        }
    }
    Ok(seen)
}

/// The containers of `pod`, unless it has finished.
pub(crate) fn containers_of(pod: &Pod, out: &mut Vec<Seen>) {
    let status = pod.status.as_ref();
    if status
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed")
    {
        return;
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let Some(spec) = pod.spec.as_ref() else {
        return;
    };
    let regular = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let init = status
        .and_then(|s| s.init_container_statuses.as_deref())
        .unwrap_or_default();
    let ephemeral = status
        .and_then(|s| s.ephemeral_container_statuses.as_deref())
        .unwrap_or_default();

    let mut push = |container: &str, image: Option<&str>, statuses: &[ContainerStatus]| {
        let status = statuses.iter().find(|s| s.name == container);
        out.push(Seen {
            image: image
                .filter(|i| !i.is_empty())
                .or(status.map(|s| s.image.as_str()))
                .unwrap_or_default()
                .to_string(),
            place: format!("k8s:{namespace}/{name}/{container}"),
            reported: status.and_then(|s| digest_of_image_id(&s.image_id)),
            refused: None,
        });
    };
    for c in spec.init_containers.iter().flatten() {
        push(&c.name, c.image.as_deref(), init);
    }
    for c in &spec.containers {
        push(&c.name, c.image.as_deref(), regular);
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        push(&c.name, c.image.as_deref(), ephemeral);
    }
}

/// The manifest digest in an `imageID`: what follows its last `@` (checked later).
fn digest_of_image_id(image_id: &str) -> Option<String> {
    image_id
        .rsplit_once('@')
        .map(|(_, digest)| digest.to_string())
        .filter(|d| !d.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const D: &str = "sha256:47f8581563aecdd7339e97469826ab59e92e83aab4c274d48370251de95dfdc9";

    #[test]
    fn image_ids_give_digests_only_after_an_at() {
        assert_eq!(
            digest_of_image_id(&format!("docker-pullable://nginx@{D}")).as_deref(),
            Some(D)
        );
        assert_eq!(
            digest_of_image_id(&format!("docker.io/library/nginx@{D}")).as_deref(),
            Some(D)
        );
        // The image's config ID, not a manifest digest.
        assert_eq!(digest_of_image_id(D), None);
        assert_eq!(digest_of_image_id(""), None);
    }

    #[test]
    fn every_kind_of_container_is_listed_and_finished_pods_are_not() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"namespace": "shop", "name": "web-1"},
            "spec": {
                "initContainers": [{"name": "migrate", "image": "migrate:1"}],
                "containers": [{"name": "web", "image": "nginx:1.27"},
                               {"name": "side", "image": "envoy:1"}],
                "ephemeralContainers": [{"name": "debug", "image": "busybox"}]
            },
            "status": {
                "phase": "Running",
                "containerStatuses": [{"name": "web", "image": "nginx:1.27",
                    "imageID": format!("docker-pullable://nginx@{D}"), "ready": true,
                    "restartCount": 0}],
                "initContainerStatuses": [{"name": "migrate", "image": "migrate:1",
                    "imageID": D, "ready": true, "restartCount": 0}]
            }
        }))
        .unwrap();
        let mut out = Vec::new();
        containers_of(&pod, &mut out);
        let places: Vec<&str> = out.iter().map(|s| s.place.as_str()).collect();
        assert_eq!(
            places,
            [
                "k8s:shop/web-1/migrate",
                "k8s:shop/web-1/web",
                "k8s:shop/web-1/side",
                "k8s:shop/web-1/debug"
            ]
        );
        assert_eq!(out[0].reported, None, "a config ID is not a digest");
        assert_eq!(out[1].reported.as_deref(), Some(D));
        assert_eq!(out[2].reported, None);
        assert_eq!(out[3].image, "busybox");

        let mut done = pod.clone();
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let mut out = Vec::new();
        containers_of(&done, &mut out);
        assert!(out.is_empty());
    }
}
