//! `qflows sensor render` and `qflows sensor deploy`: the Qualys registry sensor, printed for
//! GitOps or rolled out by the `DeploySensor` workflow.

use crate::config::TemporalArgs;
use crate::temporal;
use clap::{Args, ValueEnum};
use qflows_activities::sensor::render;
use qflows_workflows::DeploySensor;
use qflows_workflows::input::parse;
use qflows_workflows::sensor::DeploySensorInput;
use temporalio_client::{WorkflowGetResultOptions, WorkflowIdConflictPolicy, WorkflowStartOptions};

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

/// Starts `DeploySensor` (workflow ID `sensor-<target>-<cluster>`) and prints its result.
pub async fn deploy(
    temporal: &TemporalArgs,
    args: &SensorArgs,
    deploy: DeployArgs,
) -> anyhow::Result<()> {
    let input = args.input(Some(&deploy));
    let typed: DeploySensorInput = parse(input.clone())?;
    let workflow_id = format!("sensor-{}-{}", typed.target.as_str(), typed.cluster);
    let client = temporal::connect(temporal, "qflows-cli").await?;
    let handle = client
        .start_workflow(
            DeploySensor::run,
            input,
            WorkflowStartOptions::new(deploy.task_queue, workflow_id.clone())
                .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
                .build(),
        )
        .await?;
    eprintln!("workflow {workflow_id} started (or already running)");
    let output = handle
        .get_result(WorkflowGetResultOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!("DeploySensor {workflow_id} failed: {e:?}"))?;
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}
