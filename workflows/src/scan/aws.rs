//! AWS deploy and push events: the EventBridge events users already route (native and via
//! CloudTrail), and the manual `{"images": […]}` request. [`super::classify`] hands them here;
//! they become a [`ScanRequest`], an [`Classified::Ignored`] event with a reason, or an
//! [`InputError`] naming the malformed field.
//!
//! | Event | Images | Task definition / service |
//! |---|---|---|
//! | `ECR Image Action` PUSH SUCCESS (`aws.ecr`) | `<ecr host>/<repository-name>@<image-digest>` | — |
//! | `ECR Replication Action` SUCCESS | same, in the destination (envelope) account/region | — |
//! | CloudTrail ECR `PutImage` | `<ecr host>/<repositoryName>@<imageId.imageDigest>` | — |
//! | CloudTrail ECS `RegisterTaskDefinition` | `requestParameters.containerDefinitions[].image` (else the response's) | `taskDefinition.taskDefinitionArn` |
//! | CloudTrail ECS `RunTask` / `StartTask` | `responseElements.tasks[].containers[].image` (+`imageDigest`) | `tasks[0].taskDefinitionArn`, else the request's |
//! | CloudTrail ECS `CreateService` / `UpdateService` | — | `responseElements.service.taskDefinition`, else the request's; UpdateService without either: the service |
//! | CloudTrail ECS `CreateTaskSet` | — | `responseElements.taskSet.taskDefinition`, else the request's |
//! | `ECS Task State Change` (`aws.ecs`), not stopping | `detail.containers[].image` (+`imageDigest`) | `detail.taskDefinitionArn` |
//!
//! ECR scan results, other ECR/ECS notifications, failed calls (`errorCode`) and CloudTrail calls
//! that deploy nothing are [ignored](Classified::Ignored); anything else is an [`InputError`].

use super::image_ref::{ImageRef, check_digest, check_repository, check_tag};
use super::request::{
    Classified, EcsServiceRef, EventSource, Rules, ScanRequest, ignored, type_name,
};
use crate::input::{InputError, Validate, parse};
use crate::registry::model::{ecr_host, partition, validate_account_id, validate_region};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeSet;

const SUPPORTED: &str = "`ECR Image Action` and `ECR Replication Action` (source aws.ecr), \
                         `ECS Task State Change` (aws.ecs), and `AWS API Call via CloudTrail` for \
                         ECR PutImage and ECS RegisterTaskDefinition, RunTask, StartTask, \
                         CreateService, UpdateService and CreateTaskSet";

/// An EventBridge event (anything with `source`, `detail-type` or `detail`).
pub(super) fn eventbridge(event: &Value, rules: Rules) -> Result<Classified, InputError> {
    let root = &At::root(event);
    let source = root.key("source")?.str()?;
    let detail_type = root.key("detail-type")?.str()?;
    let detail = root.key("detail")?;
    detail.object()?;
    let id = root.key("id")?.opt_str()?;
    match (source, detail_type) {
        ("aws.ecr", "ECR Image Action") => ecr_action(root, &detail, id, EventSource::EcrImagePush),
        ("aws.ecr", "ECR Replication Action") => {
            ecr_action(root, &detail, id, EventSource::EcrReplication)
        }
        ("aws.ecr", "ECR Image Scan") => ignored("ECR Image Scan: a scan-result event, not a push"),
        ("aws.ecr", "ECR Scan Resource Change") => {
            ignored("ECR Scan Resource Change: a scanning-configuration event, not a push")
        }
        ("aws.ecr", "ECR Referrer Action") => {
            ignored("ECR Referrer Action: a referrer (signature, SBOM) was pushed, not an image")
        }
        ("aws.ecr", "ECR Pull Through Cache Action") => {
            ignored("ECR Pull Through Cache Action: a cache sync, not a push")
        }
        ("aws.ecs", "ECS Task State Change") => task_state_change(root, &detail, id, rules),
        (
            "aws.ecs",
            "ECS Container Instance State Change"
            | "ECS Service Action"
            | "ECS Deployment State Change",
        ) => ignored(format!("{detail_type}: names no image or task definition")),
        (_, "AWS API Call via CloudTrail") => cloudtrail(root, &detail, id),
        _ => Err(InputError::field(
            "detail-type",
            format!("unsupported event `{detail_type}` from `{source}`; supported: {SUPPORTED}"),
        )),
    }
}

/// `ECR Image Action` and `ECR Replication Action`.
fn ecr_action(
    root: &At,
    detail: &At,
    id: Option<&str>,
    source: EventSource,
) -> Result<Classified, InputError> {
    let replication = source == EventSource::EcrReplication;
    let what = if replication { "replication" } else { "push" };
    match detail.key("action-type")?.str()? {
        "DELETE" => return ignored("ECR DELETE action: nothing to scan"),
        "PUSH" => {}
        "REPLICATE" if replication => {}
        other => return ignored(format!("ECR action-type {other}: nothing to scan")),
    }
    match detail.key("result")?.str()? {
        "SUCCESS" => {}
        "FAILURE" => return ignored(format!("failed {what}")),
        other => return ignored(format!("{what} result {other}: nothing to scan")),
    }
    let (account, region) = envelope_owner(root)?;
    let repository = required(&[detail.key("repository-name")?], check_repository)?;
    let digest = required(&[detail.key("image-digest")?], check_digest)?;
    let tag = optional(&[detail.key("image-tag")?], check_tag)?;
    let mut request = Builder::new(source, id, Some(account), Some(region));
    request.push(ecr_image(account, region, repository, tag, digest));
    request.finish(detail)
}

/// Native `ECS Task State Change`. A task sends one per state on its way to RUNNING; only the
/// RUNNING one is a deployment to scan (with the digests the containers run).
fn task_state_change(
    root: &At,
    detail: &At,
    id: Option<&str>,
    rules: Rules,
) -> Result<Classified, InputError> {
    let status = detail.key("lastStatus")?.str()?;
    match status {
        "RUNNING" => {}
        "PROVISIONING" | "PENDING" | "ACTIVATING" if rules.scan_tasks_before_running => {}
        "PROVISIONING" | "PENDING" | "ACTIVATING" => {
            return ignored(format!(
                "task {}: scanned once, when it is running",
                status.to_ascii_lowercase()
            ));
        }
        _ => return ignored(format!("task {}", status.to_ascii_lowercase())),
    }
    let (account, region) = envelope_owner(root)?;
    let mut request = Builder::new(
        EventSource::EcsTaskStateChange,
        id,
        Some(account),
        Some(region),
    );
    for container in detail.key("containers")?.items()? {
        request.push_container(&container)?;
    }
    request.req.task_definition =
        task_definition(&[detail.key("taskDefinitionArn")?], account, region)?;
    request.req.cluster = optional(&[detail.key("clusterArn")?], any)?.map(str::to_string);
    request.finish(detail)
}

/// `AWS API Call via CloudTrail`.
fn cloudtrail(root: &At, detail: &At, id: Option<&str>) -> Result<Classified, InputError> {
    let event_source = detail.key("eventSource")?.str()?;
    let event_name = detail.key("eventName")?.str()?;
    if let Some(code) = detail.key("errorCode")?.opt_str()? {
        return ignored(format!("the API call failed: {code}"));
    }
    let id = match id {
        Some(id) => Some(id),
        None => detail.key("eventID")?.opt_str()?,
    };
    let source = match (event_source, event_name) {
        ("ecr.amazonaws.com", "PutImage") => return put_image(root, detail, id),
        ("ecr.amazonaws.com", _) => return ignored(format!("ECR {event_name}: not an image push")),
        ("ecs.amazonaws.com", "RegisterTaskDefinition") => EventSource::EcsRegisterTaskDefinition,
        ("ecs.amazonaws.com", "RunTask") => EventSource::EcsRunTask,
        ("ecs.amazonaws.com", "StartTask") => EventSource::EcsStartTask,
        ("ecs.amazonaws.com", "CreateService") => EventSource::EcsCreateService,
        ("ecs.amazonaws.com", "UpdateService") => EventSource::EcsUpdateService,
        ("ecs.amazonaws.com", "CreateTaskSet") => EventSource::EcsCreateTaskSet,
        ("ecs.amazonaws.com", _) => return ignored(format!("ECS {event_name}: not a deployment")),
        _ => return ignored(format!("{event_source} {event_name}: not a deployment")),
    };
    let (account, region) = cloudtrail_owner(root, detail, &[])?;
    let mut request = Builder::new(source, id, Some(account), Some(region));
    let call = CloudTrailCall {
        req: detail.key("requestParameters")?,
        resp: detail.key("responseElements")?,
        account,
        region,
    };
    match source {
        EventSource::EcsRegisterTaskDefinition => call.register_task_definition(&mut request)?,
        EventSource::EcsRunTask | EventSource::EcsStartTask => call.run_task(&mut request)?,
        EventSource::EcsCreateService | EventSource::EcsUpdateService => {
            call.create_or_update_service(&mut request, source)?
        }
        EventSource::EcsCreateTaskSet => call.create_task_set(&mut request)?,
        _ => unreachable!("only ECS sources reach here"),
    }
    request.finish(detail)
}

/// An ECS API call recorded by CloudTrail: its request and response, and whose it is.
struct CloudTrailCall<'a> {
    req: At<'a>,
    resp: At<'a>,
    account: &'a str,
    region: &'a str,
}

impl CloudTrailCall<'_> {
    /// `RegisterTaskDefinition`: the images of the request's container definitions (or, when it
    /// names none, of the registered ones) and the task definition registered.
    fn register_task_definition(&self, request: &mut Builder) -> Result<(), InputError> {
        let (req, resp) = (&self.req, &self.resp);
        for container in req.key("containerDefinitions")?.items()? {
            request.push_container(&container)?;
        }
        let registered = resp.key("taskDefinition")?;
        if request.req.images.is_empty() {
            for container in registered.key("containerDefinitions")?.items()? {
                request.push_container(&container)?;
            }
        }
        request.req.task_definition = task_definition(
            &[registered.key("taskDefinitionArn")?, req.key("family")?],
            self.account,
            self.region,
        )?;
        Ok(())
    }

    /// `RunTask` / `StartTask`: the images the started tasks' containers run, their task
    /// definition and cluster.
    fn run_task(&self, request: &mut Builder) -> Result<(), InputError> {
        let (req, resp) = (&self.req, &self.resp);
        let tasks = resp.key("tasks")?.items()?;
        for task in &tasks {
            for container in task.key("containers")?.items()? {
                request.push_container(&container)?;
            }
        }
        let mut definitions = Vec::new();
        let mut clusters = vec![req.key("cluster")?];
        if let Some(first) = tasks.first() {
            definitions.push(first.key("taskDefinitionArn")?);
            clusters.push(first.key("clusterArn")?);
        }
        definitions.push(req.key("taskDefinition")?);
        request.req.task_definition = task_definition(&definitions, self.account, self.region)?;
        request.req.cluster = optional(&clusters, any)?.map(str::to_string);
        Ok(())
    }

    /// `CreateService` / `UpdateService`: the service's task definition and cluster; an update
    /// that names no task definition names the service (its images are resolved from it).
    fn create_or_update_service(
        &self,
        request: &mut Builder,
        source: EventSource,
    ) -> Result<(), InputError> {
        let req = &self.req;
        let service = self.resp.key("service")?;
        self.definition_and_cluster(request, &service)?;
        if source == EventSource::EcsUpdateService && request.req.task_definition.is_none() {
            let name = required(&[req.key("service")?, service.key("serviceArn")?], any)?;
            request.req.service = Some(EcsServiceRef {
                cluster: optional(&[req.key("cluster")?], any)?.map(str::to_string),
                service: name.to_string(),
            });
        }
        Ok(())
    }

    /// `CreateTaskSet`: the task set's task definition and cluster.
    fn create_task_set(&self, request: &mut Builder) -> Result<(), InputError> {
        let task_set = self.resp.key("taskSet")?;
        self.definition_and_cluster(request, &task_set)
    }

    /// The task definition and cluster of the service or task set the response describes
    /// (`created`): its task definition, else the request's; the request's cluster, else its.
    fn definition_and_cluster(
        &self,
        request: &mut Builder,
        created: &At,
    ) -> Result<(), InputError> {
        let req = &self.req;
        request.req.task_definition = task_definition(
            &[created.key("taskDefinition")?, req.key("taskDefinition")?],
            self.account,
            self.region,
        )?;
        let cluster = optional(&[req.key("cluster")?, created.key("clusterArn")?], any)?;
        request.req.cluster = cluster.map(str::to_string);
        Ok(())
    }
}

/// CloudTrail `PutImage` on `ecr.amazonaws.com`.
fn put_image(root: &At, detail: &At, id: Option<&str>) -> Result<Classified, InputError> {
    let req = detail.key("requestParameters")?;
    let image = detail.key("responseElements")?.key("image")?;
    let image_id = image.key("imageId")?;
    let (account, region) = cloudtrail_owner(
        root,
        detail,
        &[req.key("registryId")?, image.key("registryId")?],
    )?;
    let repository = required(
        &[req.key("repositoryName")?, image.key("repositoryName")?],
        check_repository,
    )?;
    let digest = required(&[image_id.key("imageDigest")?], check_digest)?;
    let tag = optional(
        &[image_id.key("imageTag")?, req.key("imageTag")?],
        check_tag,
    )?;
    let mut request = Builder::new(EventSource::EcrPutImage, id, Some(account), Some(region));
    request.push(ecr_image(account, region, repository, tag, digest));
    request.finish(detail)
}

/// The image an ECR push names: `<ecr host>/<repository>[:<tag>]@<digest>`.
fn ecr_image(
    account: &str,
    region: &str,
    repository: &str,
    tag: Option<&str>,
    digest: &str,
) -> ImageRef {
    ImageRef {
        registry: ecr_host(account, region),
        repository: repository.to_string(),
        tag: tag.map(str::to_string),
        digest: Some(digest.to_string()),
    }
}

/// The manual form, `{"images": […], "account"?: …, "region"?: …}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManualInput {
    images: Vec<String>,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    region: Option<String>,
}

impl ManualInput {
    fn images(&self) -> Result<Vec<ImageRef>, InputError> {
        self.images
            .iter()
            .enumerate()
            .map(|(i, image)| {
                ImageRef::parse(image)
                    .map_err(|e| InputError::field(format!("images[{i}]"), e.to_string()))
            })
            .collect()
    }
}

impl Validate for ManualInput {
    fn validate(&self) -> Result<(), InputError> {
        if self.images.is_empty() {
            return Err(InputError::field("images", "must list at least one image"));
        }
        self.images()?;
        if let Some(account) = &self.account {
            validate_account_id("account", account)?;
        }
        if let Some(region) = &self.region {
            validate_region("region", region)?;
        }
        Ok(())
    }
}

/// The manual form `{"images": […], "account"?: …, "region"?: …}`.
pub(super) fn manual(event: &Value) -> Result<Classified, InputError> {
    let input: ManualInput = parse(event.clone())?;
    let mut request = Builder::new(
        EventSource::Manual,
        None,
        input.account.as_deref(),
        input.region.as_deref(),
    );
    for image in input.images()? {
        request.push(image);
    }
    Ok(Classified::Scan(request.req))
}

/// The envelope's `account` and `region`, validated.
fn envelope_owner<'a>(root: &At<'a>) -> Result<(&'a str, &'a str), InputError> {
    let account = required(&[root.key("account")?], account_id)?;
    let region = required(&[root.key("region")?], region_name)?;
    Ok((account, region))
}

/// A CloudTrail record's resource owner: `recipientAccountId` (then `more_accounts`, then the
/// envelope's `account`) and `awsRegion` (then the envelope's `region`).
fn cloudtrail_owner<'a>(
    root: &At<'a>,
    detail: &At<'a>,
    more_accounts: &[At<'a>],
) -> Result<(&'a str, &'a str), InputError> {
    let mut accounts = vec![detail.key("recipientAccountId")?];
    accounts.extend(more_accounts.iter().cloned());
    accounts.push(root.key("account")?);
    let account = required(&accounts, account_id)?;
    let region = required(
        &[detail.key("awsRegion")?, root.key("region")?],
        region_name,
    )?;
    Ok((account, region))
}

fn account_id(value: &str) -> Result<(), String> {
    validate_account_id("", value).map_err(|e| e.problem)
}

fn region_name(value: &str) -> Result<(), String> {
    validate_region("", value).map_err(|e| e.problem)
}

fn any(_: &str) -> Result<(), String> {
    Ok(())
}

/// The first present, non-empty string among `candidates`, checked (errors name its path).
fn optional<'a>(
    candidates: &[At<'a>],
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<Option<&'a str>, InputError> {
    for at in candidates {
        if let Some(value) = at.opt_str()? {
            check(value).map_err(|problem| at.error(problem))?;
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// Like [`optional`], but missing everywhere is an error at the first candidate.
fn required<'a>(
    candidates: &[At<'a>],
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<&'a str, InputError> {
    optional(candidates, check)?.ok_or_else(|| candidates[0].error("is missing"))
}

/// The first task definition among `candidates`; `family:revision` becomes a full ARN.
fn task_definition(
    candidates: &[At],
    account: &str,
    region: &str,
) -> Result<Option<String>, InputError> {
    for at in candidates {
        if let Some(value) = at.opt_str()? {
            return normalise_task_definition(value, account, region)
                .map(Some)
                .map_err(|problem| at.error(problem));
        }
    }
    Ok(None)
}

/// `arn:<partition>:ecs:<region>:<account>:task-definition/<family>:<revision>` as given;
/// `family:revision` expanded to that ARN; a bare `family` (the latest ACTIVE revision) as given.
fn normalise_task_definition(value: &str, account: &str, region: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "`{value}` is not a task definition ARN, `family` or `family:revision` \
             (family: up to 255 letters, digits, `-` and `_`)"
        )
    };
    if value.starts_with("arn:") {
        let parts: Vec<&str> = value.splitn(6, ':').collect();
        let ok = parts.len() == 6
            && parts[2] == "ecs"
            && parts[5]
                .strip_prefix("task-definition/")
                .is_some_and(|rest| family_revision(rest).is_some());
        return if ok {
            Ok(value.to_string())
        } else {
            Err(bad())
        };
    }
    match family_revision(value).ok_or_else(bad)? {
        (_, Some(_)) => Ok(format!(
            "arn:{}:ecs:{region}:{account}:task-definition/{value}",
            partition(region)
        )),
        (_, None) => Ok(value.to_string()),
    }
}

/// Splits `family[:revision]`, checking both parts.
fn family_revision(value: &str) -> Option<(&str, Option<&str>)> {
    let (family, revision) = match value.split_once(':') {
        Some((family, revision)) => (family, Some(revision)),
        None => (value, None),
    };
    let family_ok = !family.is_empty()
        && family.len() <= 255
        && family
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let revision_ok = revision
        .is_none_or(|r| !r.is_empty() && r.len() <= 10 && r.bytes().all(|b| b.is_ascii_digit()));
    (family_ok && revision_ok).then_some((family, revision))
}

/// Collects a [`ScanRequest`], deduplicating images.
struct Builder {
    req: ScanRequest,
    seen: BTreeSet<String>,
}

impl Builder {
    fn new(
        source: EventSource,
        event_id: Option<&str>,
        account_id: Option<&str>,
        region: Option<&str>,
    ) -> Self {
        Self {
            req: ScanRequest {
                source,
                event_id: event_id.map(str::to_string),
                account_id: account_id.map(str::to_string),
                region: region.map(str::to_string),
                images: Vec::new(),
                task_definition: None,
                service: None,
                cluster: None,
                azure_resource: None,
            },
            seen: BTreeSet::new(),
        }
    }

    fn push(&mut self, image: ImageRef) {
        if self.seen.insert(image.canonical()) {
            self.req.images.push(image);
        }
    }

    /// A container's `image`, pinned to its `imageDigest` when it has one and the image names
    /// no digest of its own. A container without an image is skipped.
    fn push_container(&mut self, container: &At) -> Result<(), InputError> {
        let image_at = container.key("image")?;
        let Some(image) = image_at.opt_str()? else {
            return Ok(());
        };
        let mut image = ImageRef::parse(image).map_err(|e| image_at.error(e.to_string()))?;
        if let Some(digest) = optional(&[container.key("imageDigest")?], check_digest)?
            && image.digest.is_none()
        {
            image.digest = Some(digest.to_string());
        }
        self.push(image);
        Ok(())
    }

    fn finish(self, detail: &At) -> Result<Classified, InputError> {
        let req = self.req;
        if req.images.is_empty() && req.task_definition.is_none() && req.service.is_none() {
            return Err(detail.error("names no image, task definition or service to scan"));
        }
        Ok(Classified::Scan(req))
    }
}

/// A place in the event: the value there (absent or `null` is `None`) and its JSON path.
#[derive(Debug, Clone)]
struct At<'a> {
    value: Option<&'a Value>,
    path: String,
}

impl<'a> At<'a> {
    fn root(value: &'a Value) -> Self {
        Self {
            value: Some(value),
            path: String::new(),
        }
    }

    fn field(&self) -> &str {
        if self.path.is_empty() {
            "."
        } else {
            &self.path
        }
    }

    fn error(&self, problem: impl Into<String>) -> InputError {
        InputError::field(self.field(), problem)
    }

    fn wrong_type(&self, expected: &str) -> InputError {
        let found = self.value.map_or("nothing", type_name);
        self.error(format!("expected {expected}, found {found}"))
    }

    /// The member `key` of this object (absent if this is absent); an error if this is not one.
    fn key(&self, key: &str) -> Result<At<'a>, InputError> {
        let path = if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        };
        match self.value {
            None => Ok(At { value: None, path }),
            Some(Value::Object(map)) => Ok(At {
                value: map.get(key).filter(|v| !v.is_null()),
                path,
            }),
            Some(_) => Err(self.wrong_type("an object")),
        }
    }

    fn object(&self) -> Result<(), InputError> {
        match self.value {
            Some(Value::Object(_)) => Ok(()),
            None => Err(self.error("is missing")),
            Some(_) => Err(self.wrong_type("an object")),
        }
    }

    /// A string; absent, `null` and `""` are `None`.
    fn opt_str(&self) -> Result<Option<&'a str>, InputError> {
        match self.value {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str()).filter(|s| !s.is_empty())),
            Some(_) => Err(self.wrong_type("a string")),
        }
    }

    fn str(&self) -> Result<&'a str, InputError> {
        self.opt_str()?.ok_or_else(|| self.error("is missing"))
    }

    /// The elements of an array (none if absent).
    fn items(&self) -> Result<Vec<At<'a>>, InputError> {
        match self.value {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, v)| At {
                    value: Some(v).filter(|v| !v.is_null()),
                    path: format!("{}[{i}]", self.path),
                })
                .collect()),
            Some(_) => Err(self.wrong_type("an array")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_definitions_normalise() {
        let norm = |v: &str| normalise_task_definition(v, "111122223333", "us-gov-west-1");
        assert_eq!(
            norm("web:3").unwrap(),
            "arn:aws-us-gov:ecs:us-gov-west-1:111122223333:task-definition/web:3"
        );
        assert_eq!(norm("web_api-2").unwrap(), "web_api-2");
        let arn = "arn:aws:ecs:us-east-1:111122223333:task-definition/web:3";
        assert_eq!(norm(arn).unwrap(), arn);
        for bad in [
            "web:",
            "web:x",
            ":3",
            "a/b",
            "web:3:4",
            "arn:aws:ecs:us-east-1:111122223333:service/prod/web",
            "arn:aws:iam::111122223333:task-definition/web:3",
            "arn:aws:ecs",
        ] {
            let err = norm(bad).unwrap_err();
            assert!(err.contains("is not a task definition ARN"), "{bad}: {err}");
        }
        assert!(norm(&"f".repeat(256)).is_err());
    }

    #[test]
    fn paths_are_json_paths() {
        let value = serde_json::json!({"a": {"b": [null, {"c": 1}]}});
        let root = At::root(&value);
        let items = root.key("a").unwrap().key("b").unwrap().items().unwrap();
        assert_eq!(items[0].path, "a.b[0]");
        assert_eq!(items[0].value, None);
        let c = items[1].key("c").unwrap();
        assert_eq!(c.str().unwrap_err().field, "a.b[1].c");
        assert_eq!(
            c.key("d").unwrap_err().problem,
            "expected an object, found a number"
        );
        assert_eq!(root.field(), ".");
        assert_eq!(
            root.key("x").unwrap().key("y").unwrap().opt_str().unwrap(),
            None
        );
    }
}
