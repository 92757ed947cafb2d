//! `qflows sensor render` and `qflows sensor deploy`: the Qualys registry sensor, printed for
//! GitOps or rolled out by the `DeploySensor` workflow.

use crate::config::TemporalArgs;
use crate::temporal;
use clap::{Args, Subcommand, ValueEnum};
use qflows_activities::sensor::render;
use qflows_workflows::DeploySensor;
use qflows_workflows::input::parse;
use qflows_workflows::sensor::model::{
    DeploySensorInput, SensorScope, SensorTarget, legacy_workflow_id, sensor_workflow_id,
};
use temporalio_client::{WorkflowGetResultOptions, WorkflowIdConflictPolicy, WorkflowStartOptions};

/// `qflows sensor …`.
#[allow(missing_docs)] // the fields are flag groups, documented where they are defined
#[derive(Debug, Subcommand)]
pub enum SensorCommand {
    /// Print the task definition or manifests DeploySensor applies (for GitOps), offline.
    Render {
        #[command(flatten)]
        args: SensorArgs,
    },
    /// Roll the sensor out and wait: converge, verify with Qualys, or roll back.
    Deploy {
        #[command(flatten)]
        temporal: TemporalArgs,
        #[command(flatten)]
        args: SensorArgs,
        #[command(flatten)]
        deploy: DeployArgs,
    },
}

/// `qflows sensor …`: render the sensor's deployment offline, or deploy it (DeploySensor).
pub async fn run(command: SensorCommand) -> anyhow::Result<()> {
    match command {
        SensorCommand::Render { args } => render(&args),
        SensorCommand::Deploy {
            temporal,
            args,
            deploy: flags,
        } => deploy(&temporal, &args, flags).await,
    }
}

/// `--target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// Amazon ECS.
    Ecs,
    /// Amazon EKS.
    Eks,
    /// Azure AKS.
    Aks,
    /// Google GKE.
    Gke,
}

/// What the sensor looks like: the workflow input, as flags.
#[derive(Debug, Clone, Args)]
pub struct SensorArgs {
    /// Where the sensor runs.
    #[arg(long, value_enum)]
    pub target: Target,
    /// ECS cluster, or the Kubernetes cluster's name.
    #[arg(long)]
    pub cluster: String,
    /// AWS region (ECS).
    #[arg(long)]
    pub region: Option<String>,
    /// kubeconfig context (Kubernetes).
    #[arg(long)]
    pub kube_context: Option<String>,
    /// kubeconfig path (Kubernetes; default `$KUBECONFIG` or `~/.kube/config`).
    #[arg(long)]
    pub kubeconfig: Option<String>,
    /// Sensor image.
    #[arg(long)]
    pub image: Option<String>,
    /// Reference to the activation ID (a Secrets Manager ARN on ECS), never the value.
    #[arg(long)]
    pub activation_id_ref: String,
    /// Reference to the customer ID (a Secrets Manager ARN on ECS), never the value.
    #[arg(long)]
    pub customer_id_ref: String,
    /// The Qualys CMS QAG URL (`POD_URL`).
    #[arg(long)]
    pub pod_url: Option<String>,
    /// ECS task execution role.
    #[arg(long)]
    pub execution_role_arn: Option<String>,
    /// ECS service name.
    #[arg(long)]
    pub service_name: Option<String>,
    /// Extra egress ports of the sensor's NetworkPolicy (Kubernetes), e.g. `5000`, `8443/TCP`,
    /// `3128`: private registries or a proxy.
    #[arg(long = "extra-egress-port", value_name = "PORT[/PROTOCOL]")]
    pub extra_egress_ports: Vec<String>,
    /// The AWS account of the ECS cluster (part of the workflow ID); asked of STS when absent.
    #[arg(long)]
    pub account_id: Option<String>,
}

impl SensorArgs {
    fn input(&self, timeouts: Option<&DeployArgs>) -> serde_json::Value {
        let target = match self.target {
            Target::Ecs => "ecs",
            Target::Eks => "eks",
            Target::Aks => "aks",
            Target::Gke => "gke",
        };
        let mut input = serde_json::json!({
            "target": target,
            "cluster": self.cluster,
            "region": self.region,
            "kubeContext": self.kube_context,
            "kubeconfig": self.kubeconfig,
            "image": self.image,
            "activationIdRef": self.activation_id_ref,
            "customerIdRef": self.customer_id_ref,
            "podUrl": self.pod_url,
            "executionRoleArn": self.execution_role_arn,
            "serviceName": self.service_name,
        });
        if !self.extra_egress_ports.is_empty() {
            let ports: Vec<serde_json::Value> = self
                .extra_egress_ports
                .iter()
                .map(|p| {
                    let (port, protocol) = p.split_once('/').unwrap_or((p, "TCP"));
                    serde_json::json!({
                        "port": port.trim().parse::<u32>().unwrap_or(0),
                        "protocol": protocol.trim().to_ascii_uppercase(),
                    })
                })
                .collect();
            input["extraEgressPorts"] = ports.into();
        }
        if let Some(d) = timeouts {
            input["rolloutTimeoutSecs"] = d.rollout_timeout_secs.into();
            input["verifyTimeoutSecs"] = d.verify_timeout_secs.into();
            input["pollIntervalSecs"] = d.poll_interval_secs.into();
        }
        // Absent options are left out rather than sent as nulls.
        if let Some(map) = input.as_object_mut() {
            map.retain(|_, v| !v.is_null());
        }
        input
    }
}

/// Flags of `qflows sensor deploy` besides the sensor's.
#[derive(Debug, Clone, Args)]
pub struct DeployArgs {
    /// How long the roll-out may take before it is rolled back.
    #[arg(long, default_value_t = 900)]
    pub rollout_timeout_secs: u64,
    /// How long the sensor may take to register with Qualys.
    #[arg(long, default_value_t = 600)]
    pub verify_timeout_secs: u64,
    /// Time between status polls.
    #[arg(long, default_value_t = 15)]
    pub poll_interval_secs: u64,
    /// Task queue of the workers.
    #[arg(long, env = "QFLOWS_TASK_QUEUE", default_value = qflows_workflows::DEFAULT_TASK_QUEUE)]
    pub task_queue: String,
}

/// Prints what `DeploySensor` would apply (ECS task definition JSON, or Kubernetes YAML).
pub fn render(args: &SensorArgs) -> anyhow::Result<()> {
    let input: DeploySensorInput = parse(args.input(None))?;
    println!("{}", render::render(&input)?);
    Ok(())
}

/// The workflow ID of the input's real target ([`sensor_workflow_id`]): the account (from
/// `--account-id`, else STS) and region of an ECS cluster, the API server URL of a kube context.
async fn workflow_id(args: &SensorArgs, input: &DeploySensorInput) -> anyhow::Result<String> {
    let scope = match input.target {
        SensorTarget::Ecs => {
            let region = input.region.clone().unwrap_or_default();
            let account_id = match &args.account_id {
                Some(a) => a.clone(),
                None => {
                    let aws = qflows_activities::aws::Aws::new();
                    let sts = aws_sdk_sts::Client::new(&aws.config(&region).await);
                    sts.get_caller_identity()
                        .send()
                        .await
                        .map_err(|e| {
                            anyhow::anyhow!(
                                "the AWS account of the cluster is part of the workflow ID: pass                                  --account-id, or AWS credentials for sts:GetCallerIdentity ({})",
                                aws_sdk_sts::error::DisplayErrorContext(&e)
                            )
                        })?
                        .account()
                        .map(str::to_string)
                        .ok_or_else(|| anyhow::anyhow!("STS answered without an account"))?
                }
            };
            SensorScope::Ecs {
                account_id,
                region,
                cluster: input.cluster.clone(),
            }
        }
        _ => {
            let kubeconfig = match &input.kubeconfig {
                Some(path) => kube::config::Kubeconfig::read_from(path)?,
                None => kube::config::Kubeconfig::read()?,
            };
            let context_name = input
                .kube_context
                .clone()
                .or_else(|| kubeconfig.current_context.clone())
                .ok_or_else(|| anyhow::anyhow!("the kubeconfig has no current context"))?;
            let context = kubeconfig
                .contexts
                .iter()
                .find(|c| c.name == context_name)
                .and_then(|c| c.context.as_ref())
                .ok_or_else(|| anyhow::anyhow!("no context `{context_name}` in the kubeconfig"))?;
            let server = kubeconfig
                .clusters
                .iter()
                .find(|c| c.name == context.cluster)
                .and_then(|c| c.cluster.as_ref())
                .and_then(|c| c.server.clone())
                .ok_or_else(|| {
                    anyhow::anyhow!("context `{context_name}` names no cluster with a server URL")
                })?;
            SensorScope::Kube { server }
        }
    };
    Ok(sensor_workflow_id(&scope))
}

/// The input of the workflow `id`, when a run of it is running.
async fn running_input(
    client: &temporalio_client::Client,
    id: &str,
) -> anyhow::Result<Option<serde_json::Value>> {
    use base64::Engine;
    let handle = client.get_workflow_handle::<DeploySensor>(id);
    let Ok(description) = handle.describe(Default::default()).await else {
        return Ok(None);
    };
    if description.status() != temporalio_client::WorkflowExecutionStatus::Running {
        return Ok(None);
    }
    let history: serde_json::Value =
        serde_json::from_slice(&handle.fetch_history(Default::default()).to_json().await?)?;
    // The SDK's history JSON nests the event's attributes under `attributes.<type>`; the
    // protobuf JSON form (the `temporal` CLI's) names them directly.
    let first = &history["events"][0];
    let started = first
        .get("workflowExecutionStartedEventAttributes")
        .or_else(|| first["attributes"].get("WorkflowExecutionStartedEventAttributes"))
        .ok_or_else(|| anyhow::anyhow!("workflow {id}: its first event is not its start"))?;
    let data = started["input"]["payloads"][0]["data"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("workflow {id}: its start holds no input"))?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(data)?;
    let input = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow::anyhow!("workflow {id}: its input is not JSON: {e}"))?;
    Ok(Some(input))
}

/// Why a running deployment is not the one asked for.
fn refuse(id: &str, running: &serde_json::Value, wanted: &DeploySensorInput) -> anyhow::Error {
    let image = running["image"]
        .as_str()
        .unwrap_or(qflows_workflows::sensor::model::DEFAULT_SENSOR_IMAGE);
    anyhow::anyhow!(
        "DeploySensor {id} is already running for this target with a different input (image {image}; you asked for {}). Wait for it (`temporal workflow result -w {id}`) or cancel it (`temporal workflow cancel -w {id}`), then deploy again",
        wanted.image()
    )
}

/// Starts `DeploySensor` under the target's workflow ID ([`sensor_workflow_id`]) and prints its
/// result. A run for the same target with the same input (under this ID or the ID of earlier
/// versions, `sensor-<target>-<cluster>`) is waited for; one with a different input is refused.
pub async fn deploy(
    temporal: &TemporalArgs,
    args: &SensorArgs,
    deploy: DeployArgs,
) -> anyhow::Result<()> {
    let input = args.input(Some(&deploy));
    let typed: DeploySensorInput = parse(input.clone())?;
    let workflow_id = workflow_id(args, &typed).await?;
    let client = temporal::connect(temporal, "qflows-cli").await?;
    let same = |running: &serde_json::Value| {
        serde_json::from_value::<DeploySensorInput>(running.clone())
            .ok()
            .as_ref()
            == Some(&typed)
    };
    let legacy = legacy_workflow_id(&typed);
    let mut attach = None;
    if let Some(running) = running_input(&client, &legacy).await? {
        if !same(&running) {
            return Err(refuse(&legacy, &running, &typed));
        }
        attach = Some(legacy);
    }
    let id = match attach {
        Some(id) => id,
        None => {
            let started = client
                .start_workflow(
                    DeploySensor::run,
                    input,
                    WorkflowStartOptions::new(deploy.task_queue, workflow_id.clone())
                        .id_conflict_policy(WorkflowIdConflictPolicy::Fail)
                        .build(),
                )
                .await;
            match started {
                Ok(_) => eprintln!("workflow {workflow_id} started"),
                Err(temporalio_client::errors::WorkflowStartError::AlreadyStarted { .. }) => {
                    match running_input(&client, &workflow_id).await? {
                        Some(running) if !same(&running) => {
                            return Err(refuse(&workflow_id, &running, &typed));
                        }
                        _ => eprintln!("workflow {workflow_id} already running: waiting for it"),
                    }
                }
                Err(e) => return Err(e.into()),
            }
            workflow_id
        }
    };
    let output = client
        .get_workflow_handle::<DeploySensor>(&id)
        .get_result(WorkflowGetResultOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!("DeploySensor {id} failed: {e:?}"))?;
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}
