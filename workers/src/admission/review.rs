//! `admission.k8s.io/v1` AdmissionReview in and out, and what the webhook reads from the object:
//! its images, namespace, labels and break-glass annotation.
//!
//! Everything here comes from whoever creates the object: sizes are bounded (images, labels,
//! strings), nothing is logged raw, and nothing read here picks a host to connect to beyond what
//! image resolution already allows.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The annotation that admits a denied image: `qflows.io/break-glass: "<reason>"`.
pub const BREAK_GLASS: &str = "qflows.io/break-glass";

/// Distinct images judged per object; the rest get their profile's `unscanned` rule (never a
/// free pass). A pod spec rarely has more than a dozen.
pub const MAX_IMAGES: usize = 64;
/// Labels taken into the gate scope (Kubernetes allows any number; selectors need few).
pub const MAX_LABELS: usize = 64;
/// Longest label key or value kept (Kubernetes: 253 + 63 for a key, 63 for a value).
pub const MAX_LABEL_LEN: usize = 317;
/// Longest break-glass reason or user name recorded.
pub const MAX_RECORDED_LEN: usize = 256;

/// An AdmissionReview as the API server sends it (only the fields the webhook reads).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    /// `admission.k8s.io/v1`.
    pub api_version: String,
    /// `AdmissionReview`.
    pub kind: String,
    /// The request.
    pub request: Option<AdmissionRequest>,
}

/// `AdmissionReview.request`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// Echoed in the response.
    pub uid: String,
    /// The object's kind (`{group, version, kind}`).
    pub kind: GroupVersionKind,
    /// `CREATE`, `UPDATE`, …
    #[serde(default)]
    pub operation: String,
    /// The object's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The object's name (empty for `generateName` creates).
    #[serde(default)]
    pub name: Option<String>,
    /// `pods/ephemeralcontainers` updates name their subresource.
    #[serde(default)]
    pub sub_resource: Option<String>,
    /// Who asks.
    #[serde(default)]
    pub user_info: UserInfo,
    /// The object being admitted (absent on DELETE).
    #[serde(default)]
    pub object: Option<Value>,
    /// The object before an UPDATE.
    #[serde(default)]
    pub old_object: Option<Value>,
    /// A dry run: nothing is persisted (the webhook has no side effects it must skip).
    #[serde(default)]
    pub dry_run: Option<bool>,
}

/// `{group, version, kind}`.
#[derive(Debug, Default, Deserialize)]
pub struct GroupVersionKind {
    /// The API group (`""` for core).
    #[serde(default)]
    pub group: String,
    /// Its version.
    #[serde(default)]
    pub version: String,
    /// The kind.
    #[serde(default)]
    pub kind: String,
}

/// `request.userInfo`.
#[derive(Debug, Default, Deserialize)]
pub struct UserInfo {
    /// The user name.
    #[serde(default)]
    pub username: String,
}

/// What the webhook judges in one object.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The object's namespace.
    pub namespace: Option<String>,
    /// Labels of the object and of its pod template (the template's win), bounded.
    pub labels: BTreeMap<String, String>,
    /// Distinct image references, in order of appearance, at most [`MAX_IMAGES`].
    pub images: Vec<String>,
    /// Distinct images beyond [`MAX_IMAGES`] (judged without lookups).
    pub images_over_limit: Vec<String>,
    /// The break-glass reason, from the object or its pod template (bounded, printable).
    pub break_glass: Option<String>,
}

/// The object's kind, when the webhook judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `v1/Pod`.
    Pod,
    /// `apps/v1` Deployment, StatefulSet, DaemonSet, ReplicaSet; `batch/v1` Job: a pod template
    /// at `spec.template`.
    Template,
    /// `batch/v1` CronJob: at `spec.jobTemplate.spec.template`.
    CronJob,
}

impl Kind {
    /// The kind of a request, or `None` for kinds the webhook does not judge.
    pub fn of(gvk: &GroupVersionKind) -> Option<Kind> {
        match (gvk.group.as_str(), gvk.kind.as_str()) {
            ("", "Pod") => Some(Kind::Pod),
            ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
            | ("batch", "Job") => Some(Kind::Template),
            ("batch", "CronJob") => Some(Kind::CronJob),
            _ => None,
        }
    }
}

/// Keeps at most `max` characters, control characters replaced: for values that are logged or
/// put into a message.
pub fn printable(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

fn string_map(value: &Value) -> impl Iterator<Item = (&str, &str)> {
    value
        .as_object()
        .into_iter()
        .flat_map(|m| m.iter())
        .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v)))
}

impl Subject {
    /// What to judge in `object` of `kind`.
    pub fn read(kind: Kind, namespace: Option<&str>, object: &Value) -> Subject {
        let (template, pod_spec) = match kind {
            Kind::Pod => (None, &object["spec"]),
            Kind::Template => (
                Some(&object["spec"]["template"]),
                &object["spec"]["template"]["spec"],
            ),
            Kind::CronJob => {
                let template = &object["spec"]["jobTemplate"]["spec"]["template"];
                (Some(template), &template["spec"])
            }
        };
        let metadata = [Some(&object["metadata"]), template.map(|t| &t["metadata"])];
        let mut labels = BTreeMap::new();
        let mut break_glass = None;
        for meta in metadata.into_iter().flatten() {
            for (k, v) in string_map(&meta["labels"]) {
                if k.len() <= MAX_LABEL_LEN
                    && v.len() <= MAX_LABEL_LEN
                    && (labels.len() < MAX_LABELS || labels.contains_key(k))
                {
                    labels.insert(k.to_string(), v.to_string());
                }
            }
            if let Some(reason) = meta["annotations"][BREAK_GLASS].as_str()
                && !reason.trim().is_empty()
            {
                break_glass = Some(printable(reason.trim(), MAX_RECORDED_LEN));
            }
        }
        let mut images: Vec<String> = Vec::new();
        let mut over: Vec<String> = Vec::new();
        for list in ["initContainers", "containers", "ephemeralContainers"] {
            for container in pod_spec[list]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let Some(image) = container["image"].as_str() else {
                    continue;
                };
                if images.iter().chain(&over).any(|i| i == image) {
                    continue;
                }
                if images.len() < MAX_IMAGES {
                    images.push(image.to_string());
                } else if over.len() < MAX_IMAGES {
                    over.push(image.to_string());
                }
            }
        }
        Subject {
            namespace: namespace
                .or_else(|| object["metadata"]["namespace"].as_str())
                .filter(|n| !n.is_empty() && n.len() <= 253)
                .map(str::to_string),
            labels,
            images,
            images_over_limit: over,
            break_glass,
        }
    }
}

/// The webhook's answer to one request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// Admit?
    pub allowed: bool,
    /// Why not (with `allowed: false`).
    pub message: Option<String>,
    /// Shown to the user by kubectl (with `allowed: true` too).
    pub warnings: Vec<String>,
}

/// Warnings the API server passes on are at most this long each (it truncates longer ones).
const MAX_WARNING_LEN: usize = 250;
/// Warnings per answer.
const MAX_WARNINGS: usize = 16;

impl Answer {
    /// The AdmissionReview response for request `uid`.
    pub fn review(&self, uid: &str) -> Value {
        let mut response = json!({ "uid": uid, "allowed": self.allowed });
        if let Some(message) = &self.message {
            response["status"] = json!({ "code": 403, "reason": "Forbidden", "message": message });
        }
        if !self.warnings.is_empty() {
            response["warnings"] = json!(
                self.warnings
                    .iter()
                    .take(MAX_WARNINGS)
                    .map(|w| printable(w, MAX_WARNING_LEN))
                    .collect::<Vec<_>>()
            );
        }
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": response,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_list_of_every_kind_is_read_with_template_labels() {
        let pod = json!({
            "metadata": {"labels": {"app": "web"}, "annotations": {BREAK_GLASS: " incident 42 \n"}},
            "spec": {
                "initContainers": [{"image": "init:1"}],
                "containers": [{"image": "web:1"}, {"image": "web:1"}, {"name": "no-image"}],
                "ephemeralContainers": [{"image": "debug:1"}],
            }
        });
        let s = Subject::read(Kind::Pod, Some("prod"), &pod);
        assert_eq!(s.images, ["init:1", "web:1", "debug:1"]);
        assert_eq!(s.namespace.as_deref(), Some("prod"));
        assert_eq!(s.labels["app"], "web");
        assert_eq!(s.break_glass.as_deref(), Some("incident 42"));

        let deployment = json!({
            "metadata": {"labels": {"app": "outer", "team": "a"}},
            "spec": {"template": {
                "metadata": {"labels": {"app": "inner"}},
                "spec": {"containers": [{"image": "web:2"}]}
            }}
        });
        let s = Subject::read(Kind::Template, Some("prod"), &deployment);
        assert_eq!(s.images, ["web:2"]);
        assert_eq!(s.labels["app"], "inner");
        assert_eq!(s.labels["team"], "a");
        assert_eq!(s.break_glass, None);

        let cron = json!({"spec": {"jobTemplate": {"spec": {"template": {
            "metadata": {"annotations": {BREAK_GLASS: "x"}},
            "spec": {"containers": [{"image": "job:3"}]}
        }}}}});
        let s = Subject::read(Kind::CronJob, None, &cron);
        assert_eq!(s.images, ["job:3"]);
        assert_eq!(s.break_glass.as_deref(), Some("x"));
    }

    #[test]
    fn sizes_are_bounded() {
        let containers: Vec<Value> = (0..200)
            .map(|i| json!({"image": format!("i:{i}")}))
            .collect();
        let labels: serde_json::Map<String, Value> =
            (0..200).map(|i| (format!("k{i}"), json!("v"))).collect();
        let pod = json!({
            "metadata": {"labels": labels, "annotations": {BREAK_GLASS: "r".repeat(10_000)}},
            "spec": {"containers": containers}
        });
        let s = Subject::read(Kind::Pod, Some("n"), &pod);
        assert_eq!(s.images.len(), MAX_IMAGES);
        assert_eq!(s.images_over_limit.len(), MAX_IMAGES);
        assert_eq!(s.labels.len(), MAX_LABELS);
        assert_eq!(s.break_glass.unwrap().chars().count(), MAX_RECORDED_LEN + 1);
    }

    #[test]
    fn kinds_outside_the_list_are_not_judged() {
        let gvk = |group: &str, kind: &str| GroupVersionKind {
            group: group.into(),
            version: "v1".into(),
            kind: kind.into(),
        };
        assert_eq!(Kind::of(&gvk("", "Pod")), Some(Kind::Pod));
        assert_eq!(Kind::of(&gvk("apps", "StatefulSet")), Some(Kind::Template));
        assert_eq!(Kind::of(&gvk("batch", "CronJob")), Some(Kind::CronJob));
        assert_eq!(Kind::of(&gvk("", "ConfigMap")), None);
        assert_eq!(Kind::of(&gvk("example.com", "Deployment")), None);
    }

    #[test]
    fn answers_are_admission_reviews_with_bounded_warnings() {
        let denied = Answer {
            allowed: false,
            message: Some("no".into()),
            warnings: vec!["w\u{7}".repeat(300)],
        }
        .review("u-1");
        assert_eq!(denied["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(denied["response"]["uid"], "u-1");
        assert_eq!(denied["response"]["allowed"], false);
        assert_eq!(denied["response"]["status"]["code"], 403);
        assert_eq!(denied["response"]["status"]["message"], "no");
        let warning = denied["response"]["warnings"][0].as_str().unwrap();
        assert!(warning.chars().count() <= MAX_WARNING_LEN + 1 && !warning.contains('\u{7}'));
        let allowed = Answer {
            allowed: true,
            ..Default::default()
        }
        .review("u-2");
        assert!(allowed["response"].get("status").is_none());
        assert!(allowed["response"].get("warnings").is_none());
    }
}
