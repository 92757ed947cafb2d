//! `qflows inventory run` and `qflows report`: what runs where, and its verdict (`qflows schedule
//! inventory` is in `schedule.rs`).
//!
//! The report reads no database of its own: the scopes are the `Inventory` runs Temporal's
//! visibility lists, what runs in each is its latest record in the results store, and each
//! digest's verdict is its `ImageScan` entity's `result` query — or, for an entity that has
//! ended, the verdict record the results store keeps.

use super::flags::parse_duration;
use super::start::start_or_join;
use crate::config::{ResultsArgs, TemporalArgs};
use crate::temporal;
use clap::{Args, Subcommand, ValueEnum};
use futures::StreamExt;
use qflows_activities::results::ResultsStore;
use qflows_workflows::inventory::{InventoryInput, InventoryRecord, InventoryScope};
use qflows_workflows::scan::model::{ImageResult, ImageStatus, Verdict, image_scan_id};
use qflows_workflows::{ImageScan, Inventory};
use serde::Serialize;
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use temporalio_client::{WorkflowListOptions, WorkflowQueryOptions};

/// `qflows inventory …`.
#[allow(missing_docs)] // the fields are flag groups, documented where they are defined
#[derive(Debug, Subcommand)]
pub enum InventoryCommand {
    /// Take one scope's inventory now (or join the one under way) and print its summary.
    Run {
        #[command(flatten)]
        temporal: TemporalArgs,
        #[command(flatten)]
        args: InventoryRunArgs,
    },
}

/// Which scope: one AWS account and region, one Kubernetes cluster, or one Azure subscription.
#[derive(Debug, Clone, Args)]
pub struct ScopeArgs {
    /// AWS account ID (with --region): every ECS cluster there.
    #[arg(long, requires = "region", conflicts_with_all = ["kube_cluster", "azure_subscription"])]
    pub aws_account: Option<String>,
    /// AWS region of --aws-account.
    #[arg(long)]
    pub region: Option<String>,
    /// A role to assume in the account (default: the worker's cross-account role).
    #[arg(long, requires = "aws_account")]
    pub role_arn: Option<String>,
    /// A Kubernetes cluster, by the name it is reported under (lowercase letters, digits, '-').
    #[arg(long, conflicts_with = "azure_subscription")]
    pub kube_cluster: Option<String>,
    /// The kubeconfig context the worker uses for it (default: its current context).
    #[arg(long)]
    pub kube_context: Option<String>,
    /// An Azure subscription ID: its container groups, container apps and jobs.
    #[arg(long)]
    pub azure_subscription: Option<String>,
}

impl ScopeArgs {
    /// The scope the flags name, checked as the workflow checks it.
    pub fn scope(&self) -> anyhow::Result<InventoryScope> {
        let scope = match (
            &self.aws_account,
            &self.kube_cluster,
            &self.kube_context,
            &self.azure_subscription,
        ) {
            (Some(account), None, None, None) => InventoryScope::Aws {
                account_id: account.clone(),
                region: self.region.clone().unwrap_or_default(),
                role_arn: self.role_arn.clone(),
            },
            (None, cluster, context, None) if cluster.is_some() || context.is_some() => {
                InventoryScope::Kubernetes {
                    cluster: match cluster {
                        Some(c) => c.clone(),
                        None => cluster_name(context.as_deref().unwrap_or_default()),
                    },
                    context: context.clone(),
                }
            }
            (None, None, None, Some(subscription)) => InventoryScope::Azure {
                subscription_id: subscription.clone(),
            },
            _ => anyhow::bail!(
                "name one scope: --aws-account with --region, --kube-cluster (and/or \
                 --kube-context), or --azure-subscription"
            ),
        };
        scope.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(scope)
    }
}

/// A cluster name from a kubeconfig context: lowercase letters, digits and '-', at most 63
/// (EKS contexts are ARNs, GKE ones `gke_<project>_<zone>_<name>`).
fn cluster_name(context: &str) -> String {
    let last = context.rsplit('/').next().unwrap_or(context);
    let last = match last.strip_prefix("gke_") {
        Some(gke) => gke.rsplit('_').next().unwrap_or(gke),
        None => last,
    };
    let mut name: String = last
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name.truncate(63);
    name.trim_matches('-').to_string()
}

/// The workflow ID of a scope's inventory (a Schedule appends the time of each run).
pub fn workflow_id(scope: &InventoryScope) -> String {
    format!("inventory-{}", scope.id())
}

/// Flags of `qflows inventory run`.
#[derive(Debug, Clone, Args)]
pub struct InventoryRunArgs {
    /// The scope.
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// How long what this run sees counts as running without being seen again (default 2d).
    #[arg(long, value_parser = parse_duration)]
    pub stale_after: Option<Duration>,
    /// Task queue of the workers.
    #[arg(long, env = "QFLOWS_TASK_QUEUE", default_value = qflows_workflows::DEFAULT_TASK_QUEUE)]
    pub task_queue: String,
    /// Start and return at once instead of waiting for the summary.
    #[arg(long)]
    pub no_wait: bool,
}

/// Runs `Inventory` for a scope once (or joins the run under way) and prints its summary.
pub async fn run(temporal: &TemporalArgs, args: InventoryRunArgs) -> anyhow::Result<()> {
    let scope = args.scope.scope()?;
    let input = InventoryInput {
        scope: scope.clone(),
        stale_after_secs: args.stale_after.map(|d| d.as_secs().max(1)),
    };
    let client = temporal::connect(temporal, "qflows-cli").await?;
    let id = workflow_id(&scope);
    let input = serde_json::to_value(&input)?;
    let (queue, no_wait) = (args.task_queue, args.no_wait);
    start_or_join(
        &client,
        Inventory::run,
        input,
        queue,
        id,
        no_wait,
        "Inventory",
    )
    .await
}

/// Output formats of `qflows report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Aligned columns.
    Table,
    /// One JSON document.
    Json,
    /// RFC 4180 CSV with a header row.
    Csv,
    /// A Markdown table.
    Markdown,
}

/// Flags of `qflows report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Only these scopes (`aws-<account>-<region>`, `k8s-<cluster>`, `azure-<subscription>`);
    /// default: every scope an inventory ran for.
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: ReportFormat,
    /// Only images whose verdict is `fail`, or that have no verdict.
    #[arg(long)]
    pub failing: bool,
    /// The results store the worker writes (where the inventories are).
    #[command(flatten)]
    pub results: ResultsArgs,
}

/// One running digest in one scope, with its verdict.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportRow {
    /// The scope.
    pub scope: String,
    /// `sha256:…`.
    pub digest: String,
    /// The image (registry/repository:tag).
    pub image: String,
    /// Containers running it.
    pub running: u64,
    /// A sample of where.
    pub places: Vec<String>,
    /// `pass`, `audit`, `fail`; `None`: no verdict yet (not scanned, or failing to scan).
    pub verdict: Option<Verdict>,
    /// `scanned`, `failed`, `timed_out`, `skipped`, or `unknown` (no result anywhere).
    pub status: String,
    /// The worst severity found (`critical` … `low`, `none`).
    pub worst: Option<String>,
    /// Critical findings.
    pub critical: Option<u64>,
    /// High findings.
    pub high: Option<u64>,
    /// When the verdict's scan finished.
    pub scanned_at: Option<String>,
    /// Its age in hours.
    pub age_hours: Option<u64>,
    /// Where the answer came from: `entity` (the running `ImageScan`) or `store` (the last
    /// verdict the results store keeps) or `none`.
    pub source: String,
    /// When the scope's inventory was taken.
    pub inventory_at: String,
}

/// `qflows report`: what runs where, with digest, verdict, severity counts and age, failing
/// first.
pub async fn report(temporal: &TemporalArgs, args: ReportArgs) -> anyhow::Result<()> {
    let client = temporal::connect(temporal, "qflows-cli").await?;
    let results = args.results.store().await?;
    let scopes = if args.scopes.is_empty() {
        inventoried_scopes(&client).await?
    } else {
        args.scopes.iter().cloned().collect()
    };
    let mut records = Vec::new();
    for scope in &scopes {
        match results.latest_inventory(scope).await? {
            Some(record) => records.push(record),
            None => eprintln!("{scope}: no inventory stored yet (run `qflows inventory run`)"),
        }
    }
    let mut rows = rows(&client, &results, &records).await;
    if args.failing {
        rows.retain(|r| r.verdict != Some(Verdict::Pass) && r.verdict != Some(Verdict::Audit));
    }
    rows.sort_by_key(|r| {
        (
            rank(r),
            std::cmp::Reverse(r.critical.unwrap_or(0)),
            r.scope.clone(),
            r.image.clone(),
        )
    });
    print!("{}", render(&rows, args.format)?);
    Ok(())
}

/// Failing first, then no verdict, then audit, then pass.
fn rank(row: &ReportRow) -> u8 {
    match row.verdict {
        Some(Verdict::Fail) => 0,
        None => 1,
        Some(Verdict::Audit) => 2,
        Some(Verdict::Pass) => 3,
    }
}

/// The scopes `Inventory` ran for, from the workflow IDs visibility lists.
pub async fn inventoried_scopes(
    client: &temporalio_client::Client,
) -> anyhow::Result<BTreeSet<String>> {
    let mut listed =
        client.list_workflows("WorkflowType = 'Inventory'", WorkflowListOptions::default());
    let mut scopes = BTreeSet::new();
    while let Some(execution) = listed.next().await {
        let execution =
            execution.map_err(|e| anyhow::anyhow!("cannot list Inventory runs: {e}"))?;
        if let Some(scope) = scope_of_workflow_id(execution.id()) {
            scopes.insert(scope);
        }
    }
    Ok(scopes)
}

/// `inventory-<scope>` or, started by a Schedule, `inventory-<scope>-<RFC 3339 time>`.
fn scope_of_workflow_id(id: &str) -> Option<String> {
    let rest = id.strip_prefix("inventory-")?;
    // A Schedule appends `-2026-12-01T06:00:00Z`: 21 characters with a 'T' and a 'Z'.
    let scope = match rest.len().checked_sub(21).map(|i| rest.split_at(i)) {
        Some((scope, stamp))
            if stamp.starts_with('-') && stamp.ends_with('Z') && stamp.as_bytes()[11] == b'T' =>
        {
            scope
        }
        _ => rest,
    };
    (!scope.is_empty()).then(|| scope.to_string())
}

/// Each record's digests with their verdicts (entity queries, 16 at a time).
async fn rows(
    client: &temporalio_client::Client,
    results: &ResultsStore,
    records: &[InventoryRecord],
) -> Vec<ReportRow> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let items = records
        .iter()
        .flat_map(|r| r.digests.iter().map(move |d| (r, d)));
    futures::stream::iter(items.map(|(record, d)| async move {
        let (result, source) = verdict_of(client, results, &d.digest).await;
        let summary = result.as_ref().and_then(|r| r.summary);
        let scanned_at = result.as_ref().and_then(|r| r.scanned_at.clone());
        ReportRow {
            scope: record.scope_id.clone(),
            digest: d.digest.clone(),
            image: d.image.to_string(),
            running: d.count,
            places: d.places.clone(),
            verdict: result.as_ref().and_then(|r| r.verdict),
            status: result
                .as_ref()
                .map_or("unknown".into(), |r| status_word(r.status).to_string()),
            worst: summary.map(|s| {
                let worst = if s.critical > 0 {
                    "critical"
                } else if s.high > 0 {
                    "high"
                } else if s.medium > 0 {
                    "medium"
                } else if s.low > 0 {
                    "low"
                } else {
                    "none"
                };
                worst.to_string()
            }),
            critical: summary.map(|s| s.critical),
            high: summary.map(|s| s.high),
            age_hours: scanned_at
                .as_deref()
                .and_then(rfc3339_secs)
                .map(|t| now.saturating_sub(t) / 3600),
            scanned_at,
            source: source.to_string(),
            inventory_at: record.taken_at.clone(),
        }
    }))
    .buffered(16)
    .collect()
    .await
}

/// The digest's verdict: its entity's `result`, else the results store's last verdict.
async fn verdict_of(
    client: &temporalio_client::Client,
    results: &ResultsStore,
    digest: &str,
) -> (Option<ImageResult>, &'static str) {
    let asked = client
        .get_workflow_handle::<ImageScan>(image_scan_id(digest))
        .query(ImageScan::result, (), WorkflowQueryOptions::default())
        .await;
    if let Ok(Some(result)) = asked {
        return (Some(result), "entity");
    }
    match results.last_scan(digest).await {
        Ok(Some(record)) => (Some(record.into_result()), "store"),
        _ => (None, "none"),
    }
}

/// Seconds since the epoch of an RFC 3339 time.
fn rfc3339_secs(text: &str) -> Option<u64> {
    let t: jiff::Timestamp = text.parse().ok()?;
    u64::try_from(t.as_second()).ok()
}

fn status_word(status: ImageStatus) -> &'static str {
    match status {
        ImageStatus::Scanned => "scanned",
        ImageStatus::Failed => "failed",
        ImageStatus::TimedOut => "timed_out",
        ImageStatus::Skipped => "skipped",
    }
}

fn verdict_word(v: Option<Verdict>) -> &'static str {
    match v {
        Some(Verdict::Pass) => "pass",
        Some(Verdict::Audit) => "audit",
        Some(Verdict::Fail) => "fail",
        None => "-",
    }
}

/// The report in `format`.
pub fn render(rows: &[ReportRow], format: ReportFormat) -> anyhow::Result<String> {
    const HEADER: [&str; 11] = [
        "SCOPE", "IMAGE", "DIGEST", "RUNNING", "VERDICT", "STATUS", "WORST", "CRITICAL", "HIGH",
        "SCANNED", "AGE",
    ];
    let cells = |r: &ReportRow| -> [String; 11] {
        let opt = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
        [
            r.scope.clone(),
            r.image.clone(),
            short(&r.digest),
            r.running.to_string(),
            verdict_word(r.verdict).to_string(),
            r.status.clone(),
            r.worst.clone().unwrap_or_else(|| "-".into()),
            opt(r.critical),
            opt(r.high),
            r.scanned_at.clone().unwrap_or_else(|| "-".into()),
            r.age_hours.map_or("-".into(), |h| format!("{h}h")),
        ]
    };
    Ok(match format {
        ReportFormat::Json => format!("{}\n", serde_json::to_string_pretty(rows)?),
        ReportFormat::Csv => {
            let mut out = String::new();
            let mut line = |fields: &[String]| {
                let quoted: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
                out.push_str(&quoted.join(","));
                out.push_str("\r\n");
            };
            let mut header: Vec<String> = HEADER.iter().map(|h| h.to_lowercase()).collect();
            header[2] = "digest".into();
            line(&header);
            for r in rows {
                let mut c = cells(r).to_vec();
                c[2] = r.digest.clone();
                line(&c);
            }
            out
        }
        ReportFormat::Markdown => {
            let mut out = format!(
                "| {} |\n|{}\n",
                HEADER.join(" | "),
                "---|".repeat(HEADER.len())
            );
            for r in rows {
                let c: Vec<String> = cells(r).iter().map(|f| markdown_cell(f)).collect();
                out.push_str(&format!("| {} |\n", c.join(" | ")));
            }
            out
        }
        ReportFormat::Table => {
            let table: Vec<[String; 11]> = rows.iter().map(cells).collect();
            let mut widths: Vec<usize> = HEADER.iter().map(|h| h.len()).collect();
            for row in &table {
                for (w, c) in widths.iter_mut().zip(row) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let mut out = String::new();
            let line = |fields: Vec<String>, out: &mut String| {
                let padded: Vec<String> = fields
                    .iter()
                    .zip(&widths)
                    .map(|(f, w)| format!("{f:<w$}"))
                    .collect();
                out.push_str(padded.join("  ").trim_end());
                out.push('\n');
            };
            line(HEADER.iter().map(|h| h.to_string()).collect(), &mut out);
            for row in table {
                line(row.to_vec(), &mut out);
            }
            out
        }
    })
}

/// `sha256:0123456789ab…`
fn short(digest: &str) -> String {
    match digest.get(..19) {
        Some(head) if digest.len() > 19 => format!("{head}…"),
        _ => digest.to_string(),
    }
}

/// A CSV field, quoted when it must be; a leading `=`, `+`, `-` or `@` is prefixed with `'` so
/// a spreadsheet never runs an image name as a formula (the names come from the platforms).
fn csv_field(field: &str) -> String {
    let field = if field.starts_with(['=', '+', '-', '@']) {
        format!("'{field}")
    } else {
        field.to_string()
    };
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}

/// A Markdown table cell: pipes and line breaks escaped, HTML neutralised.
fn markdown_cell(field: &str) -> String {
    field
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scope: &str, verdict: Option<Verdict>, critical: Option<u64>) -> ReportRow {
        ReportRow {
            scope: scope.into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            image: "123456789012.dkr.ecr.us-east-1.amazonaws.com/web:1.0".into(),
            running: 3,
            places: vec!["ecs:prod/service:web".into()],
            verdict,
            status: "scanned".into(),
            worst: Some("critical".into()),
            critical,
            high: Some(1),
            scanned_at: Some("2026-12-01T00:00:00Z".into()),
            age_hours: Some(5),
            source: "entity".into(),
            inventory_at: "2026-12-01T05:00:00Z".into(),
        }
    }

    #[test]
    fn rfc3339_reads_back_what_the_clock_writes() {
        for secs in [0u64, 951_782_400, 1_796_083_200, 4_102_444_799] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(
                rfc3339_secs(&qflows_workflows::clock::rfc3339(t)),
                Some(secs)
            );
        }
        assert_eq!(
            rfc3339_secs("2026-12-01T00:00:00.123Z"),
            Some(1_796_083_200)
        );
        assert_eq!(rfc3339_secs("yesterday"), None);
    }

    #[test]
    fn scheduled_workflow_ids_name_their_scope() {
        assert_eq!(
            scope_of_workflow_id("inventory-aws-123456789012-us-east-1").as_deref(),
            Some("aws-123456789012-us-east-1")
        );
        assert_eq!(
            scope_of_workflow_id("inventory-k8s-prod-2026-12-01T06:00:00Z").as_deref(),
            Some("k8s-prod")
        );
        assert_eq!(scope_of_workflow_id("deploy-1"), None);
    }

    #[test]
    fn scopes_come_from_one_set_of_flags() {
        let mut args = ScopeArgs {
            aws_account: None,
            region: None,
            role_arn: None,
            kube_cluster: None,
            kube_context: Some("arn:aws:eks:eu-west-1:123456789012:cluster/Prod_EU".into()),
            azure_subscription: None,
        };
        assert_eq!(args.scope().unwrap().id(), "k8s-prod-eu");
        args.kube_context = Some("gke_acme-prod_europe-west1_shop".into());
        assert_eq!(args.scope().unwrap().id(), "k8s-shop");
        args.kube_context = None;
        assert!(
            args.scope()
                .unwrap_err()
                .to_string()
                .contains("name one scope")
        );
        args.aws_account = Some("1234".into());
        args.region = Some("us-east-1".into());
        assert!(
            args.scope()
                .unwrap_err()
                .to_string()
                .contains("scope.accountId")
        );
    }

    #[test]
    fn every_format_renders_and_nothing_in_a_name_escapes_its_cell() {
        let mut hostile = row("k8s-prod", Some(Verdict::Fail), Some(2));
        hostile.image = "=HYPERLINK(\"http://x\")|<b>".into();
        let rows = vec![hostile, row("aws-1", None, None)];
        let table = render(&rows, ReportFormat::Table).unwrap();
        assert!(table.starts_with("SCOPE"), "{table}");
        assert_eq!(table.lines().count(), 3);
        let csv = render(&rows, ReportFormat::Csv).unwrap();
        assert!(
            csv.contains("\"'=HYPERLINK(\"\"http://x\"\")|<b>\""),
            "{csv}"
        );
        let md = render(&rows, ReportFormat::Markdown).unwrap();
        assert!(md.contains("\\|&lt;b&gt;"), "{md}");
        let json: serde_json::Value =
            serde_json::from_str(&render(&rows, ReportFormat::Json).unwrap()).unwrap();
        assert_eq!(json[0]["verdict"], "fail");
        assert!(json[1]["verdict"].is_null());
    }
}
