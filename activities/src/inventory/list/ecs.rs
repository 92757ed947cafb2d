//! ECS: every cluster of an account and region (`ListClusters`, paged), the tasks ECS wants
//! running in each (`ListTasks` with `desiredStatus=RUNNING`, paged, 100 a page), described
//! 100 at a time (`DescribeTasks`, a few batches in flight), each container with its
//! `imageDigest` and `image`. Place: `ecs:<cluster>/<group>` (`service:web`,
//! `family:batch`), or `ecs:<cluster>/<task ID>` for a task without a group.
//!
//! Calls run in the scope's account through its `roleArn`, else as ScanOnDeploy's resolver
//! reaches that account (checked first with `sts:GetCallerIdentity`: credentials of another
//! account would list that account's tasks), with the SDK's standard retry mode (throttling and 5xx retried with
//! backoff).

use super::error::{ListError, check_size};
use super::seen::Seen;
use super::settings::ListerSettings;
use crate::aws::AwsError;
use crate::resolve::Resolver;
use aws_sdk_ecs::types::{DesiredStatus, Task};
use aws_smithy_types::retry::RetryConfig;
use futures::{StreamExt, TryStreamExt};

/// Task ARNs per `ListTasks` page and per `DescribeTasks` call (ECS' maximum for both).
const BATCH: usize = 100;

/// The containers of every task ECS wants running in `account`/`region`.
pub(crate) async fn list(
    resolver: &Resolver,
    settings: &ListerSettings,
    account: &str,
    region: &str,
    role_arn: Option<&str>,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Vec<Seen>, ListError> {
    let ecs = account_client(resolver, account, region, role_arn).await?;
    let clusters = cluster_arns(&ecs).await?;
    let mut seen: Vec<Seen> = Vec::new();
    for cluster_arn in &clusters {
        let batches = running_task_batches(&ecs, cluster_arn).await?;
        let ecs = &ecs;
        let mut described = futures::stream::iter(batches)
            .map(|arns| async move {
                ecs.describe_tasks()
                    .cluster(cluster_arn)
                    .set_tasks(Some(arns))
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("ecs:DescribeTasks", e))
            })
            .buffer_unordered(settings.concurrency.max(1));
        while let Some(page) = described.try_next().await? {
            containers_of(cluster_name(cluster_arn), page.tasks(), &mut seen);
            check_size(seen.len())?;
            progress(seen.len() as u64);
        }
    }
    Ok(seen)
}

/// An ECS client in `account` (through `role_arn`, else as the resolver reaches it), once the
/// credentials are checked to belong to that account.
async fn account_client(
    resolver: &Resolver,
    account: &str,
    region: &str,
    role_arn: Option<&str>,
) -> Result<aws_sdk_ecs::Client, ListError> {
    let config = resolver.account_config(account, region, role_arn).await?;
    // ECS lists whatever account the credentials belong to: make sure it is the scope's.
    let identity = aws_sdk_sts::Client::new(&config)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("sts:GetCallerIdentity", e))?;
    let reached = identity.account().unwrap_or_default();
    if reached != account {
        return Err(ListError::WrongAccount {
            scope: account.to_string(),
            reached: reached.to_string(),
        });
    }
    Ok(aws_sdk_ecs::Client::from_conf(
        aws_sdk_ecs::config::Builder::from(&config)
            .retry_config(RetryConfig::standard().with_max_attempts(5))
            .build(),
    ))
}

/// Every cluster ARN of the account and region (`ListClusters`, all pages).
async fn cluster_arns(ecs: &aws_sdk_ecs::Client) -> Result<Vec<String>, ListError> {
    let mut clusters: Vec<String> = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = ecs
            .list_clusters()
            .max_results(BATCH as i32)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ecs:ListClusters", e))?;
        clusters.extend(page.cluster_arns().iter().cloned());
        check_size(clusters.len())?;
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok(clusters)
}

/// The ARNs of the tasks ECS wants running in `cluster_arn` (`ListTasks`, all pages), in
/// batches of at most [`BATCH`] for `DescribeTasks`.
async fn running_task_batches(
    ecs: &aws_sdk_ecs::Client,
    cluster_arn: &str,
) -> Result<Vec<Vec<String>>, ListError> {
    let mut batches: Vec<Vec<String>> = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = ecs
            .list_tasks()
            .cluster(cluster_arn)
            .desired_status(DesiredStatus::Running)
            .max_results(BATCH as i32)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ecs:ListTasks", e))?;
        // A page may hold up to 100 ARNs; a server that sends more is cut into batches.
        for chunk in page.task_arns().chunks(BATCH) {
            batches.push(chunk.to_vec());
        }
        check_size(batches.len() * BATCH)?;
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok(batches)
}

/// The containers of the described `tasks` of `cluster` still running, into `seen`.
fn containers_of(cluster: &str, tasks: &[Task], seen: &mut Vec<Seen>) {
    for task in tasks {
        // Listed as wanted running, stopped since: not running any more.
        let stopping = task
            .desired_status()
            .is_some_and(|s| !s.eq_ignore_ascii_case("RUNNING"));
        let stopped = task
            .last_status()
            .is_some_and(|s| s.eq_ignore_ascii_case("STOPPED"));
        if stopping || stopped {
            continue;
        }
        let group = match task.group().filter(|g| !g.is_empty()) {
            Some(g) => g.to_string(),
            None => task_id(task.task_arn().unwrap_or_default()).to_string(),
        };
        let place = format!("ecs:{cluster}/{group}");
        for container in task.containers() {
            seen.push(Seen {
                image: container.image().unwrap_or_default().to_string(),
                place: place.clone(),
                reported: container.image_digest().map(str::to_string),
                refused: None,
            });
        }
    }
}

/// `prod` of `arn:aws:ecs:eu-west-1:123456789012:cluster/prod` (the ARN itself when it has
/// no `cluster/` part).
fn cluster_name(arn: &str) -> &str {
    arn.rsplit_once(":cluster/").map_or(arn, |(_, name)| name)
}

/// The task ID: the last segment of its ARN (`…:task/<cluster>/<id>` or `…:task/<id>`).
fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_arns() {
        assert_eq!(
            cluster_name("arn:aws:ecs:eu-west-1:123456789012:cluster/prod"),
            "prod"
        );
        assert_eq!(cluster_name("odd"), "odd");
        assert_eq!(
            task_id("arn:aws:ecs:eu-west-1:123456789012:task/prod/0f1e2d3c"),
            "0f1e2d3c"
        );
        assert_eq!(
            task_id("arn:aws:ecs:eu-west-1:123456789012:task/0f1e2d3c"),
            "0f1e2d3c"
        );
    }
}
