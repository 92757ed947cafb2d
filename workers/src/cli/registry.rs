//! `qflows registry list` and `qflows registry ensure`: the Qualys subscription's registry
//! connectors, listed through the one Qualys client (no credential field is printed), or found
//! or created for an AWS account and region by `EnsureRegistry` (inputs are checked here, before
//! anything is started).

use super::output::{OutputFormat, QualysOutputArgs, clean, table};
use super::start::start_or_join;
use crate::config::{QualysArgs, TemporalArgs};
use crate::temporal;
use clap::{Args, Subcommand};
use qflows_activities::qualys::{QualysClient, Registry};
use qflows_workflows::EnsureRegistry;
use qflows_workflows::input::parse;
use qflows_workflows::registry::model::EnsureRegistryInput;
use serde_json::{Map, Value};
use std::time::{Duration, UNIX_EPOCH};

/// `qflows registry …`.
#[allow(missing_docs)] // the fields are flag groups, documented where they are defined
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Every registry of the Qualys subscription.
    List {
        #[command(flatten)]
        qualys: QualysArgs,
        #[command(flatten)]
        args: QualysOutputArgs,
    },
    /// Find or create the registry for an AWS account and region (runs EnsureRegistry).
    Ensure {
        #[command(flatten)]
        temporal: TemporalArgs,
        #[command(flatten)]
        args: EnsureRegistryArgs,
    },
}

/// `qflows registry …`: list the subscription's registries, or find or create one
/// (EnsureRegistry).
pub async fn run(command: RegistryCommand) -> anyhow::Result<()> {
    match command {
        RegistryCommand::List { qualys, args } => {
            registry_list(&qualys.with_env_secrets(), args).await
        }
        RegistryCommand::Ensure { temporal, args } => ensure_registry(&temporal, args).await,
    }
}

/// Keys of a registry record that may hold credentials (Docker Hub and private registries
/// carry them): left out of the JSON output.
fn is_sensitive(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "credential",
        "apikey",
        "accesskey",
    ]
    .iter()
    .any(|s| key.contains(s))
}

fn without_secrets(value: Value) -> Value {
    match value {
        Value::Object(o) => Value::Object(
            o.into_iter()
                .filter(|(k, _)| !is_sensitive(k))
                .map(|(k, v)| (k, without_secrets(v)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(without_secrets).collect()),
        other => other,
    }
}

fn field(r: &Registry, keys: &[&str]) -> String {
    keys.iter()
        .find_map(|k| match r.extra.get(*k) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::Bool(b)) => Some(b.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| "-".into())
}

/// An epoch-milliseconds value (a number or a string of one) as RFC 3339; other text as is.
fn when(value: &str) -> String {
    match value.parse::<u64>() {
        Ok(ms) if ms > 0 => {
            qflows_workflows::clock::rfc3339(UNIX_EPOCH + Duration::from_millis(ms))
        }
        _ => value.to_string(),
    }
}

/// `qflows registry list`: every registry of the subscription.
pub async fn registry_list(qualys: &QualysArgs, args: QualysOutputArgs) -> anyhow::Result<()> {
    let client = QualysClient::new(qualys.to_config()?)?;
    let registries = client.registries().await?;
    match args.format {
        OutputFormat::Json => {
            let value = without_secrets(serde_json::to_value(&registries)?);
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        OutputFormat::Table => print!("{}", render_registries(&registries)),
    }
    Ok(())
}

/// The registries as a plain-text table.
pub fn render_registries(registries: &[Registry]) -> String {
    let header = [
        "UUID",
        "NAME",
        "URI",
        "TYPE",
        "ACCOUNT",
        "REGION",
        "REPOS",
        "IMAGES",
        "SCANNED",
        "VULNERABLE",
        "LAST SCANNED",
    ];
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = registries
        .iter()
        .map(|r| {
            vec![
                clean(&r.registry_uuid, 40),
                r.registry_name
                    .as_deref()
                    .map_or_else(dash, |v| clean(v, 40)),
                r.registry_uri
                    .as_deref()
                    .map_or_else(dash, |v| clean(v, 80)),
                clean(&field(r, &["registryType", "providerType"]), 20),
                r.aws_account_id
                    .as_deref()
                    .map_or_else(dash, |v| clean(v, 20)),
                r.aws_region.as_deref().map_or_else(dash, |v| clean(v, 20)),
                clean(&field(r, &["repoCount"]), 10),
                clean(&field(r, &["totalImages"]), 10),
                clean(&field(r, &["totalScannedImages"]), 10),
                clean(&field(r, &["totalVulnerableImages"]), 10),
                clean(&when(&field(r, &["lastScanned"])), 30),
            ]
        })
        .collect();
    let mut out = table(&header, &rows);
    let noun = if registries.len() == 1 {
        "registry"
    } else {
        "registries"
    };
    out.push_str(&format!("{} {noun}\n", registries.len()));
    out
}

/// Flags of `qflows registry ensure`.
#[derive(Debug, Clone, Args)]
pub struct EnsureRegistryArgs {
    /// AWS account ID (12 digits).
    #[arg(long)]
    pub account_id: String,
    /// AWS region, e.g. us-east-1.
    #[arg(long)]
    pub region: String,
    /// Role Qualys assumes (default: the worker's QFLOWS_SCAN_ROLE_NAME in the account).
    #[arg(long)]
    pub role_arn: Option<String>,
    /// Create or update that IAM role.
    #[arg(long)]
    pub create_role: bool,
    /// Task queue of the workers.
    #[arg(long, env = "QFLOWS_TASK_QUEUE", default_value = qflows_workflows::DEFAULT_TASK_QUEUE)]
    pub task_queue: String,
    /// Start and return at once instead of waiting for the result.
    #[arg(long)]
    pub no_wait: bool,
}

/// Starts (or attaches to) `EnsureRegistry` for an account and region and prints its result.
pub async fn ensure_registry(
    temporal: &TemporalArgs,
    args: EnsureRegistryArgs,
) -> anyhow::Result<()> {
    let input = serde_json::json!({
        "accountId": args.account_id,
        "region": args.region,
        "roleArn": args.role_arn,
        "createRole": args.create_role,
    });
    // Reject bad input before starting anything, with the same message the workflow would give.
    let typed: EnsureRegistryInput = parse(input.clone())?;
    let workflow_id = typed.workflow_id();
    let client = temporal::connect(temporal, "qflows-cli").await?;
    let (queue, no_wait) = (args.task_queue, args.no_wait);
    let run = EnsureRegistry::run;
    start_or_join(
        &client,
        run,
        input,
        queue,
        workflow_id,
        no_wait,
        "EnsureRegistry",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_json_drops_credential_fields() {
        let value = without_secrets(serde_json::json!([{"registryUuid": "u",
            "credential": {"password": "p"}, "dockerHubToken": "t", "registryUri": "x"}]));
        assert_eq!(
            value,
            serde_json::json!([{"registryUuid": "u", "registryUri": "x"}])
        );
    }
}
