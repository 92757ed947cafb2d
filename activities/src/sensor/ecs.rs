//! The sensor on ECS: a task definition revision and a DAEMON service.
//!
//! Apply compares the rendered spec's digest (a docker label) with the service's current task
//! definition, so a repeated run registers nothing and updates nothing.

use super::render::{self, SPEC_LABEL, TaskDefinition};
use crate::aws::AwsError;
use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, DeploymentConfiguration, HostVolumeProperties,
    KeyValuePair, LaunchType, LogConfiguration, LogDriver, MountPoint, NetworkMode,
    SchedulingStrategy, Secret, Service, Volume,
};
use qflows_workflows::sensor::model::{
    DeploySensorInput, RolloutStatus, SensorApplied, SensorDeployment,
};
use tracing::info;

fn invalid(operation: &'static str, message: impl Into<String>) -> AwsError {
    AwsError::Invalid {
        operation,
        code: "Invalid".into(),
        message: message.into(),
    }
}

/// The service, unless it does not exist (or is being deleted).
pub async fn find_service(
    client: &Client,
    cluster: &str,
    name: &str,
) -> Result<Option<Service>, AwsError> {
    let out = client
        .describe_services()
        .cluster(cluster)
        .services(name)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ecs:DescribeServices", e))?;
    Ok(out
        .services()
        .iter()
        .find(|s| s.status() == Some("ACTIVE"))
        .cloned())
}

async fn spec_digest(client: &Client, arn: &str) -> Result<Option<String>, AwsError> {
    let out = client
        .describe_task_definition()
        .task_definition(arn)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ecs:DescribeTaskDefinition", e))?;
    Ok(out
        .task_definition()
        .and_then(|td| td.container_definitions().first())
        .and_then(|c| c.docker_labels())
        .and_then(|labels| labels.get(SPEC_LABEL))
        .cloned())
}

/// Registers `td` as a new revision; returns its ARN.
pub async fn register(client: &Client, td: &TaskDefinition) -> Result<String, AwsError> {
    const OP: &str = "ecs:RegisterTaskDefinition";
    let mut request = client
        .register_task_definition()
        .family(&td.family)
        .network_mode(NetworkMode::from(td.network_mode.as_str()))
        .cpu(&td.cpu)
        .memory(&td.memory)
        .set_execution_role_arn(td.execution_role_arn.clone());
    for c in &td.requires_compatibilities {
        request = request.requires_compatibilities(Compatibility::from(c.as_str()));
    }
    for v in &td.volumes {
        request = request.volumes(
            Volume::builder()
                .name(&v.name)
                .host(
                    HostVolumeProperties::builder()
                        .source_path(&v.host.source_path)
                        .build(),
                )
                .build(),
        );
    }
    for c in &td.container_definitions {
        let mut log = LogConfiguration::builder()
            .log_driver(LogDriver::from(c.log_configuration.log_driver.as_str()));
        for (k, v) in &c.log_configuration.options {
            log = log.options(k, v);
        }
        let mut container = ContainerDefinition::builder()
            .name(&c.name)
            .image(&c.image)
            .essential(c.essential)
            .cpu(c.cpu)
            .memory(c.memory)
            .set_command(Some(c.command.clone()))
            .log_configuration(log.build().map_err(|e| invalid(OP, e.to_string()))?);
        for e in &c.environment {
            container = container.environment(
                KeyValuePair::builder()
                    .name(&e.name)
                    .value(&e.value)
                    .build(),
            );
        }
        for s in &c.secrets {
            container = container.secrets(
                Secret::builder()
                    .name(&s.name)
                    .value_from(&s.value_from)
                    .build()
                    .map_err(|e| invalid(OP, e.to_string()))?,
            );
        }
        for m in &c.mount_points {
            container = container.mount_points(
                MountPoint::builder()
                    .source_volume(&m.source_volume)
                    .container_path(&m.container_path)
                    .read_only(m.read_only)
                    .build(),
            );
        }
        for (k, v) in &c.docker_labels {
            container = container.docker_labels(k, v);
        }
        request = request.container_definitions(container.build());
    }
    let out = request
        .send()
        .await
        .map_err(|e| AwsError::from_sdk(OP, e))?;
    out.task_definition()
        .and_then(|td| td.task_definition_arn())
        .map(str::to_string)
        .ok_or_else(|| invalid(OP, "the response has no task definition ARN"))
}

/// Points the sensor's daemon service at `arn`: updated when it `exists`, created otherwise.
async fn run_task_definition(
    client: &Client,
    cluster: &str,
    name: &str,
    exists: bool,
    arn: &str,
) -> Result<(), AwsError> {
    if exists {
        client
            .update_service()
            .cluster(cluster)
            .service(name)
            .task_definition(arn)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ecs:UpdateService", e))?;
    } else {
        client
            .create_service()
            .cluster(cluster)
            .service_name(name)
            .task_definition(arn)
            .launch_type(LaunchType::Ec2)
            .scheduling_strategy(SchedulingStrategy::Daemon)
            .deployment_configuration(
                DeploymentConfiguration::builder()
                    .maximum_percent(100)
                    .minimum_healthy_percent(0)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ecs:CreateService", e))?;
    }
    Ok(())
}

/// Registers the task definition (unless the service already runs this spec) and creates or
/// updates the DAEMON service.
pub async fn apply(client: &Client, input: &DeploySensorInput) -> Result<SensorApplied, AwsError> {
    let td = render::ecs_task_definition(input);
    let wanted = td.container_definitions[0].docker_labels[SPEC_LABEL].clone();
    let (cluster, name) = (input.cluster.as_str(), input.service_name());
    let service = find_service(client, cluster, name).await?;
    let previous = service
        .as_ref()
        .and_then(|s| s.task_definition())
        .map(str::to_string);
    if let Some(current) = &previous
        && spec_digest(client, current).await?.as_deref() == Some(wanted.as_str())
    {
        info!(%cluster, service = %name, task_definition = %current, "sensor unchanged");
        return Ok(SensorApplied {
            changed: false,
            applied: current.clone(),
            previous: previous.clone(),
            created: false,
        });
    }
    let arn = register(client, &td).await?;
    run_task_definition(client, cluster, name, service.is_some(), &arn).await?;
    info!(%cluster, service = %name, task_definition = %arn, "sensor applied");
    Ok(SensorApplied {
        changed: true,
        applied: arn,
        previous,
        created: service.is_none(),
    })
}

/// The service's roll-out: done when its one deployment is complete and runs the applied
/// task definition with every desired task running. (A DAEMON service on a cluster without
/// instances wants 0 tasks and is "done" at once; verification with Qualys then catches it.)
pub async fn rollout_status(
    client: &Client,
    deployment: &SensorDeployment,
) -> Result<RolloutStatus, AwsError> {
    let input = &deployment.input;
    let Some(service) = find_service(client, &input.cluster, input.service_name()).await? else {
        return Err(invalid(
            "ecs:DescribeServices",
            format!("service {} is gone", input.service_name()),
        ));
    };
    let deployments = service.deployments();
    let primary = deployments.iter().find(|d| d.status() == Some("PRIMARY"));
    let desired = i64::from(service.desired_count());
    let ready = i64::from(service.running_count());
    let updated = primary.map(|d| i64::from(d.running_count())).unwrap_or(0);
    let done = deployments.len() == 1
        && service.task_definition() == Some(deployment.applied.applied.as_str())
        && primary.is_some_and(|d| d.rollout_state().is_none_or(|s| s.as_str() == "COMPLETED"))
        && ready == desired
        && updated == desired
        && service.pending_count() == 0;
    Ok(RolloutStatus {
        desired,
        ready,
        updated,
        done,
    })
}

/// Deletes the service, stopping its tasks (`force`: a DAEMON service cannot be scaled to zero
/// first).
async fn delete_service(client: &Client, cluster: &str, name: &str) -> Result<(), AwsError> {
    client
        .delete_service()
        .cluster(cluster)
        .service(name)
        .force(true)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ecs:DeleteService", e))?;
    Ok(())
}

/// Deregisters a task definition revision this run registered.
async fn deregister(client: &Client, task_definition: &str) -> Result<(), AwsError> {
    client
        .deregister_task_definition()
        .task_definition(task_definition)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("ecs:DeregisterTaskDefinition", e))?;
    Ok(())
}

/// Puts the previous task definition back, or deletes the service this run created.
pub async fn rollback(client: &Client, deployment: &SensorDeployment) -> Result<String, AwsError> {
    let input = &deployment.input;
    let (cluster, name) = (input.cluster.as_str(), input.service_name());
    let applied = &deployment.applied;
    let report = match (&applied.previous, applied.created) {
        (Some(previous), _) if previous != &applied.applied => {
            run_task_definition(client, cluster, name, true, previous).await?;
            format!(
                "service {name} restored to task definition {previous} (was {})",
                applied.applied
            )
        }
        (_, true) => {
            if find_service(client, cluster, name).await?.is_some() {
                delete_service(client, cluster, name).await?;
            }
            format!("service {name} deleted (it did not exist before)")
        }
        _ => format!(
            "nothing to restore: service {name} already ran task definition {}",
            applied.applied
        ),
    };
    if applied.changed {
        deregister(client, &applied.applied).await?;
    }
    info!(%cluster, service = %name, %report, "sensor rolled back");
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// The planned design (`sensor-real-clusters`): the previous task definition is recorded before
// any change, and the roll-back restores it only when the service still runs what this run
// applied.

use qflows_workflows::sensor::model::{EcsSnapshot, RollbackReport, SensorRun};

/// The service as it is before the run.
pub async fn snapshot(client: &Client, input: &DeploySensorInput) -> Result<EcsSnapshot, AwsError> {
    let service = find_service(client, &input.cluster, input.service_name()).await?;
    Ok(EcsSnapshot {
        service_existed: service.is_some(),
        previous_task_definition: service
            .as_ref()
            .and_then(|s| s.task_definition())
            .map(str::to_string),
    })
}

/// Registers and rolls out the rendered task definition (comparing first).
pub async fn apply_planned(client: &Client, run: &SensorRun) -> Result<SensorApplied, AwsError> {
    let input = &run.input;
    let td = render::ecs_task_definition(input);
    let wanted = td.container_definitions[0].docker_labels[SPEC_LABEL].clone();
    let (cluster, name) = (input.cluster.as_str(), input.service_name());
    let service = find_service(client, cluster, name).await?;
    let previous = run
        .plan
        .ecs
        .as_ref()
        .and_then(|e| e.previous_task_definition.clone());
    let created = run.plan.ecs.as_ref().is_some_and(|e| !e.service_existed);
    if let Some(current) = service.as_ref().and_then(|s| s.task_definition())
        && spec_digest(client, current).await?.as_deref() == Some(wanted.as_str())
    {
        info!(%cluster, service = %name, task_definition = %current, "sensor unchanged");
        return Ok(SensorApplied {
            changed: previous.as_deref() != Some(current),
            applied: current.to_string(),
            previous,
            created,
        });
    }
    let arn = register(client, &td).await?;
    run_task_definition(client, cluster, name, service.is_some(), &arn).await?;
    super::fault::fault_point("sensor-ecs-service-updated");
    info!(%cluster, service = %name, task_definition = %arn, "sensor applied");
    Ok(SensorApplied {
        changed: true,
        applied: arn,
        previous,
        created,
    })
}

/// Puts the task definition of the plan back (or deletes the service the run created), unless
/// the service runs something this run did not apply; deregisters what the run registered.
pub async fn rollback_planned(client: &Client, run: &SensorRun) -> RollbackReport {
    let mut report = RollbackReport::default();
    let input = &run.input;
    let (cluster, name) = (input.cluster.as_str(), input.service_name());
    let snapshot = run.plan.ecs.clone().unwrap_or(EcsSnapshot {
        service_existed: false,
        previous_task_definition: None,
    });
    let wanted = render::ecs_task_definition(input).container_definitions[0].docker_labels
        [SPEC_LABEL]
        .clone();
    let result: Result<(), AwsError> = async {
        let Some(service) = find_service(client, cluster, name).await? else {
            if snapshot.service_existed {
                report.remaining.push(format!(
                    "service {name}: deleted since the apply; not re-created"
                ));
            }
            return Ok(());
        };
        let current = service.task_definition().unwrap_or_default().to_string();
        if snapshot.previous_task_definition.as_deref() == Some(current.as_str()) {
            return Ok(());
        }
        if spec_digest(client, &current).await?.as_deref() != Some(wanted.as_str()) {
            report.remaining.push(format!(
                "service {name}: runs task definition {current}, which this run did not apply \
                 (changed since); left as it is"
            ));
            return Ok(());
        }
        match &snapshot.previous_task_definition {
            Some(previous) if snapshot.service_existed => {
                run_task_definition(client, cluster, name, true, previous).await?;
                report.restored.push(format!(
                    "service {name} restored to task definition {previous} (was {current})"
                ));
            }
            _ => {
                delete_service(client, cluster, name).await?;
                report
                    .restored
                    .push(format!("service {name} deleted (it did not exist before)"));
            }
        }
        deregister(client, &current).await?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        report.remaining.push(format!("service {name}: {e}"));
    }
    info!(%cluster, service = %name, restored = ?report.restored, remaining = ?report.remaining,
        "sensor rolled back");
    report
}
