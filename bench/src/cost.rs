//! `qflows-bench cost`: what one deploy event costs on the Temporal side, read from the
//! histories of real runs.
//!
//! One in-memory dev server, the Qualys emulator and the worker in this process. It runs one
//! event of each kind and reads every history it caused (its `ScanOnDeploy`, and the share of
//! the digest's `ImageScan` entity, over all of its runs):
//!
//! - an ignored event (an ECR `DELETE`);
//! - the first event of a new digest (a registry scan, with the polls it took);
//! - a duplicate that arrives while that digest is being scanned;
//! - a duplicate of a digest already scanned;
//! - with `--qscanner-bin`, the first event of a digest QScanner scans.
//!
//! **Actions** are counted as Temporal Cloud bills them (docs/evaluate/cloud/actions): a
//! workflow start (client, signal-with-start as one, continue-as-new, child), a signal sent (by
//! a client or a workflow), an activity start and each retry, a timer, a search-attribute
//! upsert, an accepted update, and the local activities of one workflow task together; plus the
//! queries the worker's activities made (not in any history: counted by the worker). Heartbeats
//! that reach the server are not counted. Beside them: the Fargate scanner's Step Functions
//! state transitions for the same case (5 for a cache hit, 7 + 3·polls for a scan).

use crate::scan::{BenchEnv, event};
use clap::Args;
use qflows::worker;
use qflows_workflows::ScanOnDeploy;
use qflows_workflows::scan::model::image_scan_id;
use qualys_emulator::EmulatorConfig;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use temporalio_client::{Client, NamespacedClient, WorkflowGetResultOptions, WorkflowStartOptions};
use temporalio_common::protos::temporal::api::common::v1::WorkflowExecution;
use temporalio_common::protos::temporal::api::history::v1::HistoryEvent;
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
use temporalio_common::protos::temporal::api::workflowservice::v1::GetWorkflowExecutionHistoryRequest;

/// Flags of `qflows-bench cost`.
#[derive(Debug, Clone, Args)]
pub struct CostArgs {
    /// How long the emulator takes to scan an image (more polls with a longer scan).
    #[arg(long, default_value_t = 5000)]
    pub scan_delay_ms: u64,
    /// The `temporal` CLI (default: PATH, then .venv).
    #[arg(long, env = "QFLOWS_TEMPORAL_BIN")]
    pub temporal_bin: Option<PathBuf>,
    /// Also list each case's history events (what the actions are).
    #[arg(long)]
    pub verbose: bool,
}

const TASK_QUEUE: &str = "qflows-bench";

/// `--verbose`: histories are listed as they are read.
static VERBOSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// History events and actions of some histories.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// History events.
    pub events: i64,
    /// Billed actions (see the module docs).
    pub actions: i64,
    /// Polls of a registry scan: attempts of `qualys.AwaitScan`, or (first design) timers.
    pub polls: i64,
}

impl std::ops::Add for Tally {
    type Output = Tally;
    fn add(self, o: Tally) -> Tally {
        Tally {
            events: self.events + o.events,
            actions: self.actions + o.actions,
            polls: self.polls + o.polls,
        }
    }
}

impl std::ops::Sub for Tally {
    type Output = Tally;
    fn sub(self, o: Tally) -> Tally {
        Tally {
            events: self.events - o.events,
            actions: self.actions - o.actions,
            polls: self.polls - o.polls,
        }
    }
}

/// What one history costs.
pub fn tally(events: &[HistoryEvent]) -> Tally {
    let mut t = Tally {
        events: events.len() as i64,
        ..Tally::default()
    };
    // All local activities of one workflow task count as one action.
    let mut local_activity_tasks = BTreeSet::new();
    let mut await_scans = BTreeSet::new();
    for e in events {
        match &e.attributes {
            Some(Attributes::WorkflowExecutionStartedEventAttributes(_))
            | Some(Attributes::TimerStartedEventAttributes(_))
            | Some(Attributes::UpsertWorkflowSearchAttributesEventAttributes(_))
            | Some(Attributes::SignalExternalWorkflowExecutionInitiatedEventAttributes(_))
            | Some(Attributes::RequestCancelExternalWorkflowExecutionInitiatedEventAttributes(_))
            | Some(Attributes::WorkflowExecutionUpdateAcceptedEventAttributes(_)) => t.actions += 1,
            Some(Attributes::TimerFiredEventAttributes(_)) => {}
            // A client's signal; not one a workflow sent (counted where it was sent), nor the
            // signal of a signal-with-start (event 2: one action with the start).
            Some(Attributes::WorkflowExecutionSignaledEventAttributes(a))
                if a.external_workflow_execution.is_none() && e.event_id != 2 =>
            {
                t.actions += 1
            }
            Some(Attributes::ActivityTaskScheduledEventAttributes(a)) => {
                t.actions += 1;
                if a.activity_type.as_ref().is_some_and(|ty| {
                    matches!(
                        ty.name.as_str(),
                        "qualys.AwaitScan" | "qualys.AwaitScanResults"
                    )
                }) {
                    await_scans.insert(e.event_id);
                }
            }
            // Each retry is an activity start too.
            Some(Attributes::ActivityTaskStartedEventAttributes(a)) => {
                let retries = i64::from(a.attempt.max(1) - 1);
                t.actions += retries;
                if await_scans.contains(&a.scheduled_event_id) {
                    t.polls += i64::from(a.attempt.max(1));
                }
            }
            Some(Attributes::MarkerRecordedEventAttributes(a))
                if a.marker_name == "core_local_activity" =>
            {
                local_activity_tasks.insert(a.workflow_task_completed_event_id);
            }
            _ => {}
        }
    }
    // The first design polled with a timer and a lookup per poll.
    let timers = events
        .iter()
        .filter(|e| {
            matches!(
                e.attributes,
                Some(Attributes::TimerStartedEventAttributes(_))
            )
        })
        .count() as i64;
    if await_scans.is_empty() {
        t.polls = timers;
    }
    t.actions += local_activity_tasks.len() as i64;
    t
}

/// Every event of one run (`run_id` empty: the latest), and the run it continued, if any.
async fn run_history(
    client: &Client,
    workflow_id: &str,
    run_id: &str,
) -> anyhow::Result<(Vec<HistoryEvent>, Option<String>)> {
    let (mut events, mut token) = (Vec::new(), Vec::new());
    loop {
        let request = GetWorkflowExecutionHistoryRequest {
            namespace: client.namespace(),
            execution: Some(WorkflowExecution {
                workflow_id: workflow_id.to_string(),
                run_id: run_id.to_string(),
            }),
            maximum_page_size: 1000,
            next_page_token: token,
            ..Default::default()
        };
        let page = client
            .connection()
            .workflow_service()
            .get_workflow_execution_history(temporalio_client::tonic::Request::new(request))
            .await?
            .into_inner();
        events.extend(page.history.unwrap_or_default().events);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let previous = events.iter().find_map(|e| match &e.attributes {
        Some(Attributes::WorkflowExecutionStartedEventAttributes(a)) => {
            Some(a.continued_execution_run_id.clone()).filter(|r| !r.is_empty())
        }
        _ => None,
    });
    Ok((events, previous))
}

/// The cost of a workflow ID over all of its runs (a continue-as-new chain).
pub async fn workflow_tally(client: &Client, workflow_id: &str) -> anyhow::Result<Tally> {
    let mut total = Tally::default();
    let mut run = String::new();
    loop {
        let (events, previous) = run_history(client, workflow_id, &run).await?;
        if VERBOSE.load(std::sync::atomic::Ordering::Relaxed) {
            let kinds: Vec<String> = events
                .iter()
                .map(|e| {
                    let name = format!("{:?}", e.event_type());
                    let name = name.trim_start_matches("WorkflowExecution").to_string();
                    match &e.attributes {
                        Some(Attributes::ActivityTaskScheduledEventAttributes(a)) => format!(
                            "{name}({})",
                            a.activity_type.as_ref().map_or("", |t| t.name.as_str())
                        ),
                        Some(Attributes::ActivityTaskStartedEventAttributes(a))
                            if a.attempt > 1 =>
                        {
                            format!("{name}(attempt {})", a.attempt)
                        }
                        _ => name,
                    }
                })
                .collect();
            println!("    {workflow_id}: {}", kinds.join(" "));
        }
        total = total + tally(&events);
        match previous {
            Some(p) => run = p,
            None => return Ok(total),
        }
    }
}

/// Where the first run of `workflow_id` spent its time until an activity whose type ends with `until`
/// completed: each activity's wait in its task queue and its run, and the workflow tasks'
/// waits in theirs, in seconds from the run's start.
pub async fn timeline(client: &Client, workflow_id: &str, until: &str) -> anyhow::Result<String> {
    let (events, _) = run_history(client, workflow_id, "").await?;
    let at = |e: &HistoryEvent| {
        e.event_time
            .as_ref()
            .map_or(0.0, |t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
    };
    let start = events.first().map(at).unwrap_or_default();
    let by_id = |id: i64| events.iter().find(|e| e.event_id == id);
    let (mut steps, mut task_waits, mut tasks) = (Vec::new(), 0.0, 0);
    for e in &events {
        match &e.attributes {
            Some(Attributes::WorkflowTaskStartedEventAttributes(a)) => {
                if let Some(scheduled) = by_id(a.scheduled_event_id) {
                    task_waits += at(e) - at(scheduled);
                    tasks += 1;
                }
            }
            Some(Attributes::ActivityTaskCompletedEventAttributes(a)) => {
                let Some(scheduled) = by_id(a.scheduled_event_id) else {
                    continue;
                };
                let name = match &scheduled.attributes {
                    Some(Attributes::ActivityTaskScheduledEventAttributes(s)) => {
                        s.activity_type.as_ref().map_or("?", |t| t.name.as_str())
                    }
                    _ => "?",
                };
                let started = by_id(a.started_event_id).map_or(at(scheduled), at);
                steps.push(format!(
                    "{name} at +{:.1} s (queued {:.1} s, ran {:.1} s)",
                    at(scheduled) - start,
                    started - at(scheduled),
                    at(e) - started
                ));
                if name.ends_with(until) {
                    break;
                }
            }
            _ => {}
        }
    }
    Ok(format!(
        "{}; its {tasks} workflow tasks before that queued {task_waits:.1} s in all",
        steps.join(", ")
    ))
}

/// The worker's query count (its activities' queries are actions too).
fn queries() -> i64 {
    qflows_activities::metrics::entity_queries() as i64
}

/// One measured case.
struct Case {
    name: String,
    deploy: Tally,
    entity: Tally,
    queries: i64,
    fargate: Option<i64>,
}

impl Case {
    fn total(&self) -> Tally {
        self.deploy + self.entity
    }
}

/// Runs the cases and prints them.
pub async fn run(args: CostArgs) -> anyhow::Result<()> {
    VERBOSE.store(args.verbose, std::sync::atomic::Ordering::Relaxed);
    let env = BenchEnv::start(
        args.temporal_bin.as_deref(),
        EmulatorConfig {
            scan_delay_ms: args.scan_delay_ms,
            ..EmulatorConfig::default()
        },
    )
    .await?;
    crate::scan::push_all(&env.emulator, 4);
    let BenchEnv {
        temporal,
        emulator,
        config,
        results,
        _server,
    } = env;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = worker::run(config, async move {
        let _ = stop_rx.await;
    });
    let load = async {
        let client = qflows::temporal::connect(&temporal, "qflows-bench").await?;
        measure(&client).await
    };
    let (worker_result, cases) = tokio::join!(worker, async {
        let r = load.await;
        let _ = stop_tx.send(());
        r
    });
    worker_result?;
    let cases = cases?;
    emulator.shutdown().await;
    let _ = std::fs::remove_dir_all(&results);
    print(&cases);
    Ok(())
}

/// Starts one `ScanOnDeploy` as the bridge does and waits for it.
async fn deploy(client: &Client, id: &str, event: Value) -> anyhow::Result<()> {
    let options = match qflows_workflows::scan::classify(&event) {
        Ok(qflows_workflows::scan::Classified::Scan(request)) => {
            let attributes = qflows::temporal::missing_search_attributes(client)
                .await
                .is_ok_and(|m| m.is_empty());
            qflows::bridge::starter::start_options(TASK_QUEUE, id, &request, attributes)
        }
        _ => WorkflowStartOptions::new(TASK_QUEUE, id).build(),
    };
    let handle = client
        .start_workflow(ScanOnDeploy::run, event, options)
        .await?;
    handle
        .get_result(WorkflowGetResultOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!("{id}: {e:?}"))?;
    Ok(())
}

fn digest_of(event: &Value) -> String {
    event["detail"]["image-digest"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn measure(client: &Client) -> anyhow::Result<Vec<Case>> {
    let mut cases = Vec::new();
    // Warm-up (not measured): the registry and the connector exist afterwards.
    deploy(client, "cost-warm", event(3, 4)).await?;

    let mut delete = event(0, 4);
    delete["detail"]["action-type"] = "DELETE".into();
    deploy(client, "cost-ignored", delete).await?;
    cases.push(Case {
        name: "ignored event (ECR DELETE)".into(),
        deploy: workflow_tally(client, "cost-ignored").await?,
        entity: Tally::default(),
        queries: 0,
        fargate: None,
    });

    // The first event of a new digest, alone.
    let first = event(0, 4);
    let q = queries();
    deploy(client, "cost-first", first.clone()).await?;
    let entity_id = image_scan_id(&digest_of(&first));
    let scan = workflow_tally(client, &entity_id).await?;
    cases.push(Case {
        name: format!("first event of a new digest ({} polls)", scan.polls),
        deploy: workflow_tally(client, "cost-first").await?,
        entity: scan,
        queries: queries() - q,
        fargate: Some(7 + 3 * scan.polls),
    });

    // A duplicate of that digest, now scanned.
    let before = workflow_tally(client, &entity_id).await?;
    let q = queries();
    let mut again = first.clone();
    again["id"] = "cost-cached".into();
    deploy(client, "cost-cached", again).await?;
    cases.push(Case {
        name: "duplicate of a scanned digest".into(),
        deploy: workflow_tally(client, "cost-cached").await?,
        entity: workflow_tally(client, &entity_id).await? - before,
        queries: queries() - q,
        fargate: Some(5),
    });

    // A second new digest, with a duplicate arriving while it is scanned: its share of the
    // entity is what the entity cost beyond the single-event case above.
    let second = event(1, 4);
    let mut during = second.clone();
    during["id"] = "cost-during".into();
    let q = queries();
    let (a, b) = tokio::join!(deploy(client, "cost-second", second.clone()), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        deploy(client, "cost-during", during).await
    });
    a?;
    b?;
    let both = workflow_tally(client, &image_scan_id(&digest_of(&second))).await?;
    let second_alone = cases[1].entity;
    cases.push(Case {
        name: "duplicate while the digest is scanned".into(),
        deploy: workflow_tally(client, "cost-during").await?,
        entity: both - second_alone,
        queries: (queries() - q) / 2,
        fargate: Some(5),
    });
    Ok(cases)
}

fn print(cases: &[Case]) {
    println!("qflows-bench cost (per deploy event; actions as Temporal Cloud bills them)");
    println!(
        "  {:<46} {:>7} {:>8}   {:>17} {:>17}   {:>8}",
        "case", "events", "actions", "ScanOnDeploy", "ImageScan", "Fargate"
    );
    for c in cases {
        let t = c.total();
        println!(
            "  {:<46} {:>7} {:>8}   {:>8} ev {:>3} ac {:>8} ev {:>3} ac   {:>8}",
            c.name,
            t.events,
            t.actions + c.queries,
            c.deploy.events,
            c.deploy.actions + c.queries,
            c.entity.events,
            c.entity.actions,
            c.fargate.map_or("-".into(), |f| f.to_string()),
        );
    }
    println!(
        "  (Fargate: the Fargate scanner's Step Functions state transitions for the same case; \
         queries are in ScanOnDeploy's actions)"
    );
}
