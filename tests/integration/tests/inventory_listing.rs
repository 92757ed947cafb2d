//! The inventory's listing against real servers, at the sizes: moto (3 ECS clusters, 40
//! services, 2,000 RUNNING tasks over 60 digests), kube-apiserver (3,000 pods over 80 digests,
//! status written through the status subresource), and the Resource Manager contract fake
//! (subscription-wide lists with `nextLink` paging).
//!
//! Each test builds the platform's state, works out what the listing must return from what it
//! built (every container's place and digest), and compares the whole multiset: nothing lost,
//! nothing invented. Sizes: `QFLOWS_INVENTORY_ECS_TASKS` (default 2000) and
//! `QFLOWS_INVENTORY_PODS` (default 3000). Times are printed, not asserted.

use aws_sdk_ecs::types::{ContainerDefinition, LaunchType};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use qflows_activities::aws::Aws;
use qflows_activities::azure::{Azure, AzureSettings};
use qflows_activities::inventory::list::{Lister, ListerSettings};
use qflows_activities::resolve::{Resolver, ResolverSettings};
use qflows_integration::azure::{ACR_AUDIENCE, ARM_PUBLIC, AzureFake};
use qflows_integration::kube::KubeApiServer;
use qflows_integration::{MOTO_ACCOUNT, Moto};
use qflows_workflows::inventory::InventoryScope;
use qflows_workflows::inventory::model::RunningContainer;
use serde_json::json;
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const REGION: &str = "us-east-1";

fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A digest of `seed`'s content: `sha256:<64 hex>`.
fn digest(seed: &str) -> String {
    let hash = sha2::Sha256::digest(seed.as_bytes());
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// `(place, digest)` of each container, sorted: what must match exactly.
fn multiset(listed: &[RunningContainer]) -> Vec<(String, Option<String>)> {
    let mut v: Vec<_> = listed
        .iter()
        .map(|c| (c.place.clone(), c.digest.clone()))
        .collect();
    v.sort();
    v
}

/// Containers per digest.
fn per_digest(listed: &[RunningContainer]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for c in listed {
        if let Some(d) = &c.digest {
            *counts.entry(d.clone()).or_default() += 1;
        }
    }
    counts
}

/// A progress callback that remembers how often it was called and the highest count.
fn progress() -> (Arc<(AtomicU64, AtomicU64)>, impl Fn(u64) + Send + Sync) {
    let seen = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let s = seen.clone();
    (seen, move |n: u64| {
        s.0.fetch_add(1, Ordering::SeqCst);
        s.1.fetch_max(n, Ordering::SeqCst);
    })
}

async fn moto_resolver(moto: &Moto) -> Resolver {
    Resolver::new(
        Arc::new(Aws::with_config(moto.sdk_config().await)),
        ResolverSettings::default(),
    )
}

/// Puts one image per tag into a moto ECR repository; returns moto's digests, in order.
async fn push_images(
    moto: &Moto,
    repository: &str,
    tags: &[String],
) -> anyhow::Result<Vec<String>> {
    let ecr = aws_sdk_ecr::Client::new(&moto.sdk_config().await);
    ecr.create_repository()
        .repository_name(repository)
        .send()
        .await?;
    let mut digests = Vec::new();
    for tag in tags {
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7023,
                       "digest": digest(&format!("{repository}:{tag}:config"))},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "size": 32654, "digest": digest(&format!("{repository}:{tag}:layer"))}]
        });
        let put = ecr
            .put_image()
            .repository_name(repository)
            .image_manifest(manifest.to_string())
            .image_tag(tag)
            .send()
            .await?;
        // moto's digest is not sha256(manifest): read it from the answer.
        let d = put
            .image()
            .and_then(|i| i.image_id())
            .and_then(|i| i.image_digest())
            .ok_or_else(|| anyhow::anyhow!("moto returned no digest for {repository}:{tag}"))?;
        digests.push(d.to_string());
    }
    Ok(digests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_tasks_in_moto_are_listed_with_their_digests() -> anyhow::Result<()> {
    let tasks = size("QFLOWS_INVENTORY_ECS_TASKS", 2000);
    let (clusters, services, digests) = (3usize, 40usize, 60usize);
    let moto = Moto::start().await?;
    let setup = Instant::now();
    let registry = format!("{MOTO_ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com");
    let tags: Vec<String> = (0..digests).map(|i| format!("v{i}")).collect();
    let image_digests = push_images(&moto, "inv-ecs", &tags).await?;

    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config().await);
    // One task definition per image: every third by digest, the others by tag (moto reports
    // no imageDigest, so those need ECR's DescribeImages).
    let mut definitions = Vec::new();
    for (i, d) in image_digests.iter().enumerate() {
        let image = if i % 3 == 0 {
            format!("{registry}/inv-ecs@{d}")
        } else {
            format!("{registry}/inv-ecs:v{i}")
        };
        definitions.push(register(&ecs, &format!("inv-d{i}"), &image).await?);
    }
    let nginx = register(&ecs, "inv-nginx", "nginx:1.27").await?;
    let missing = register(&ecs, "inv-missing", &format!("{registry}/inv-ecs:gone")).await?;

    let cluster_names: Vec<String> = (0..clusters).map(|c| format!("inv-{c}")).collect();
    for name in &cluster_names {
        ecs.create_cluster().cluster_name(name).send().await?;
    }
    for s in 0..services {
        ecs.create_service()
            .cluster(&cluster_names[s % clusters])
            .service_name(format!("svc-{s}"))
            .task_definition(&definitions[s % digests])
            .desired_count((tasks / services) as i32)
            .launch_type(LaunchType::Fargate)
            .send()
            .await?;
    }

    // moto's CreateService starts no tasks: run them as the services' deployments would, with
    // the service's group. Task j runs in service j % 40 with image j % 60.
    let mut groups: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for j in 0..tasks {
        *groups.entry((j % services, j % digests)).or_default() += 1;
    }
    let mut expected: Vec<(String, Option<String>)> = Vec::new();
    let mut runs = Vec::new();
    for (&(s, d), &n) in &groups {
        let cluster = &cluster_names[s % clusters];
        for _ in 0..n {
            expected.push((
                format!("ecs:{cluster}/service:svc-{s}"),
                Some(image_digests[d].clone()),
            ));
        }
        let mut left = n;
        while left > 0 {
            let count = left.min(10);
            left -= count;
            runs.push((
                cluster.clone(),
                definitions[d].clone(),
                format!("service:svc-{s}"),
                count,
            ));
        }
    }
    // Not resolvable: a Docker Hub tag, and an ECR tag that does not exist.
    for (definition, group, n) in [
        (&nginx, "family:inv-nginx", 5),
        (&missing, "family:inv-missing", 3),
    ] {
        runs.push((
            cluster_names[0].clone(),
            definition.clone(),
            group.to_string(),
            n,
        ));
        for _ in 0..n {
            expected.push((format!("ecs:{}/{group}", cluster_names[0]), None));
        }
    }
    let ecs_ref = &ecs;
    futures::stream::iter(runs)
        .map(|(cluster, definition, group, count)| async move {
            ecs_ref
                .run_task()
                .cluster(cluster)
                .task_definition(definition)
                .group(group)
                .count(count as i32)
                .launch_type(LaunchType::Fargate)
                .send()
                .await
                .map(|_| ())
        })
        .buffer_unordered(4)
        .try_collect::<Vec<()>>()
        .await?;
    // Stopped tasks are not running.
    let stopped = ecs
        .run_task()
        .cluster(&cluster_names[1])
        .task_definition(&definitions[0])
        .group("service:svc-stopped")
        .count(10)
        .launch_type(LaunchType::Fargate)
        .send()
        .await?;
    for task in stopped.tasks() {
        ecs.stop_task()
            .cluster(&cluster_names[1])
            .task(task.task_arn().unwrap_or_default())
            .send()
            .await?;
    }
    let setup_secs = setup.elapsed().as_secs_f64();

    // What moto reports for a running container's digest: nothing (a real ECS reports
    // `imageDigest` once the image is pulled), so tags are resolved with DescribeImages.
    let some_task = ecs
        .list_tasks()
        .cluster(&cluster_names[0])
        .max_results(1)
        .send()
        .await?;
    let described = ecs
        .describe_tasks()
        .cluster(&cluster_names[0])
        .set_tasks(Some(some_task.task_arns().to_vec()))
        .send()
        .await?;
    let moto_digest = described.tasks()[0].containers()[0]
        .image_digest()
        .map(str::to_string);
    println!("moto's DescribeTasks imageDigest for a RUNNING task's container: {moto_digest:?}");
    assert_eq!(
        moto_digest, None,
        "moto now reports imageDigest: the DescribeImages fill is no longer what this test exercises"
    );

    let lister = Lister::new(
        Arc::new(moto_resolver(&moto).await),
        ListerSettings::default(),
    );
    let scope = InventoryScope::Aws {
        account_id: MOTO_ACCOUNT.into(),
        region: REGION.into(),
        role_arn: None,
    };
    let (calls, report) = progress();
    let started = Instant::now();
    let listed = lister.list(&scope, &report).await?;
    let list_secs = started.elapsed().as_secs_f64();
    println!(
        "ECS: {clusters} clusters, {services} services, {tasks} RUNNING tasks over {digests} digests \
         (+8 unresolvable, 10 stopped): set up in moto in {setup_secs:.1} s, listed {} containers \
         in {list_secs:.2} s ({} progress calls)",
        listed.len(),
        calls.0.load(Ordering::SeqCst)
    );

    expected.sort();
    assert_eq!(
        multiset(&listed),
        expected,
        "every container, once, with its digest"
    );
    let counts = per_digest(&listed);
    assert_eq!(counts.len(), digests);
    let mut want = BTreeMap::new();
    for j in 0..tasks {
        *want
            .entry(image_digests[j % digests].clone())
            .or_insert(0u64) += 1;
    }
    assert_eq!(counts, want);
    let unresolved: Vec<_> = listed.iter().filter(|c| c.digest.is_none()).collect();
    assert!(
        unresolved
            .iter()
            .filter(|c| c.image == "nginx:1.27")
            .all(|c| c
                .unresolved
                .as_deref()
                .is_some_and(|r| r.contains("only ECR and ACR"))),
        "{unresolved:?}"
    );
    assert!(
        unresolved
            .iter()
            .filter(|c| c.image.ends_with(":gone"))
            .all(|c| c.unresolved.as_deref() == Some("tag not found in ECR")),
        "{unresolved:?}"
    );
    assert_eq!(calls.1.load(Ordering::SeqCst), listed.len() as u64);
    // One call per DescribeTasks batch (at least one per cluster) and one at the end.
    assert!(calls.0.load(Ordering::SeqCst) as usize > tasks / 100);
    Ok(())
}

async fn register(ecs: &aws_sdk_ecs::Client, family: &str, image: &str) -> anyhow::Result<String> {
    let registered = ecs
        .register_task_definition()
        .family(family)
        .container_definitions(
            ContainerDefinition::builder()
                .name("app")
                .image(image)
                .memory(128)
                .build(),
        )
        .send()
        .await?;
    Ok(registered
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .unwrap_or_default()
        .to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_scope_is_listed_through_its_role() -> anyhow::Result<()> {
    const SPOKE: &str = "210987654321";
    let moto = Moto::start().await?;
    let base = moto.sdk_config().await;
    // The spoke account's cluster and task, created with the spoke's (assumed) credentials.
    let assumed = aws_sdk_sts::Client::new(&base)
        .assume_role()
        .role_arn(format!("arn:aws:iam::{SPOKE}:role/qflows-inventory"))
        .role_session_name("setup")
        .send()
        .await?;
    let c = assumed.credentials().expect("credentials");
    let spoke_config = base
        .to_builder()
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new(
                    c.access_key_id(),
                    c.secret_access_key(),
                    Some(c.session_token().to_string()),
                    None,
                    "test",
                ),
            ),
        )
        .build();
    let spoke = aws_sdk_ecs::Client::new(&spoke_config);
    spoke.create_cluster().cluster_name("spoke").send().await?;
    let definition = register(&spoke, "spoke-app", &format!("redis@{}", digest("redis"))).await?;
    spoke
        .run_task()
        .cluster("spoke")
        .task_definition(&definition)
        .launch_type(LaunchType::Fargate)
        .send()
        .await?;
    // And one in the worker's own account, which the spoke's listing must not show.
    let hub = aws_sdk_ecs::Client::new(&base);
    hub.create_cluster().cluster_name("hub").send().await?;
    let hub_definition = register(&hub, "hub-app", &format!("nginx@{}", digest("nginx"))).await?;
    hub.run_task()
        .cluster("hub")
        .task_definition(&hub_definition)
        .launch_type(LaunchType::Fargate)
        .send()
        .await?;

    let lister = Lister::new(
        Arc::new(moto_resolver(&moto).await),
        ListerSettings::default(),
    );
    let listed = lister
        .list(
            &InventoryScope::Aws {
                account_id: SPOKE.into(),
                region: REGION.into(),
                role_arn: Some(format!("arn:aws:iam::{SPOKE}:role/qflows-inventory")),
            },
            &|_| {},
        )
        .await?;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].digest.as_deref(), Some(digest("redis").as_str()));
    assert_eq!(listed[0].place, "ecs:spoke/family:spoke-app");

    // Without a role the worker's own credentials reach its own account, whose tasks must not
    // be reported as the spoke's.
    let err = lister
        .list(
            &InventoryScope::Aws {
                account_id: SPOKE.into(),
                region: REGION.into(),
                role_arn: None,
            },
            &|_| {},
        )
        .await
        .unwrap_err();
    assert_eq!(err.type_name(), "InventoryWrongAccount", "{err}");
    assert!(!err.is_retryable());
    Ok(())
}

/// One pod of the Kubernetes test, and what the listing must say about it.
struct PodPlan {
    namespace: String,
    pod: serde_json::Value,
    status: Option<serde_json::Value>,
    ephemeral: Option<(String, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_pods_are_listed_page_by_page() -> anyhow::Result<()> {
    let pods = size("QFLOWS_INVENTORY_PODS", 3000);
    let digests = 80usize;
    let namespaces = 6usize;
    let server = KubeApiServer::start_with(&["--feature-gates=EphemeralContainers=true"]).await?;
    let moto = Moto::start().await?;
    let ecr_digest = push_images(&moto, "inv-k8s", &["1.0".to_string()]).await?[0].clone();
    let client = server.client().await?;
    let setup = Instant::now();
    let d = |i: usize| digest(&format!("k8s-image-{}", i % digests));
    let repo = |i: usize| format!("registry.example.com/team/app-{}", i % digests);

    let mut plans: Vec<PodPlan> = Vec::new();
    let mut expected: Vec<(String, Option<String>)> = Vec::new();
    for j in 0..pods {
        let namespace = format!("inv-{}", j % namespaces);
        let name = format!("p-{j}");
        let place = |c: &str| format!("k8s:{namespace}/{name}/{c}");
        if j % 50 == 7 {
            // Not started (no container status): the digest in the spec's reference.
            plans.push(PodPlan {
                namespace: namespace.clone(),
                pod: pod_json(&name, &[("app", &format!("{}@{}", repo(j), d(j)))], &[]),
                status: None,
                ephemeral: None,
            });
            expected.push((place("app"), Some(d(j))));
            continue;
        }
        let with_init = j % 10 == 3;
        let inits: Vec<(&str, String)> = if with_init {
            vec![("init", "registry.example.com/team/init:1".to_string())]
        } else {
            vec![]
        };
        let init_refs: Vec<(&str, &str)> = inits.iter().map(|(n, i)| (*n, i.as_str())).collect();
        let mut status = json!({
            "phase": "Running",
            "containerStatuses": [container_status("app", &format!("{}:1", repo(j)),
                &format!("docker-pullable://{}@{}", repo(j), d(j)))]
        });
        if with_init {
            status["initContainerStatuses"] = json!([container_status(
                "init",
                "registry.example.com/team/init:1",
                // containerd's form: no scheme.
                &format!("registry.example.com/team/init@{}", d(j + 1))
            )]);
            expected.push((place("init"), Some(d(j + 1))));
        }
        expected.push((place("app"), Some(d(j))));
        let ephemeral = (j < 60 && j % 12 == 1).then(|| ("debug".to_string(), d(j + 2)));
        if let Some((c, digest)) = &ephemeral {
            expected.push((place(c), Some(digest.clone())));
        }
        plans.push(PodPlan {
            namespace: namespace.clone(),
            pod: pod_json(&name, &[("app", &format!("{}:1", repo(j)))], &init_refs),
            status: Some(status),
            ephemeral,
        });
    }
    // Finished pods: never listed.
    let finished = digest("finished-only");
    for (k, phase) in (0..100).map(|k| (k, "Succeeded")).chain([(100, "Failed")]) {
        plans.push(PodPlan {
            namespace: "inv-0".into(),
            pod: pod_json(
                &format!("done-{k}"),
                &[("job", "registry.example.com/team/job:1")],
                &[],
            ),
            status: Some(
                json!({"phase": phase, "containerStatuses": [container_status("job",
                "registry.example.com/team/job:1",
                &format!("docker-pullable://registry.example.com/team/job@{finished}"))]}),
            ),
            ephemeral: None,
        });
    }
    // Not started, by tag: an ECR tag is resolved in ECR (moto), a Docker Hub tag is not.
    let ecr_image = format!("{MOTO_ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/inv-k8s:1.0");
    for (name, image, want) in [
        ("ecr-tagged", ecr_image.as_str(), Some(ecr_digest.clone())),
        ("hub-tagged", "nginx:1.27", None),
    ] {
        plans.push(PodPlan {
            namespace: "inv-1".into(),
            pod: pod_json(name, &[("app", image)], &[]),
            status: None,
            ephemeral: None,
        });
        expected.push((format!("k8s:inv-1/{name}/app"), want));
    }

    for n in 0..namespaces {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": format!("inv-{n}")}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
    }
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(
            server.dir().join("ca.crt"),
        )?)?)
        .build()?;
    let (client_ref, http_ref, server_ref) = (&client, &http, &server);
    futures::stream::iter(plans)
        .map(|plan| async move {
            let api: Api<Pod> = Api::namespaced(client_ref.clone(), &plan.namespace);
            let pod: Pod = serde_json::from_value(plan.pod)?;
            let name = pod.metadata.name.clone().unwrap_or_default();
            api.create(&PostParams::default(), &pod).await?;
            let mut status = plan.status;
            if let Some((container, digest)) = &plan.ephemeral {
                add_ephemeral(http_ref, server_ref, &plan.namespace, &name, container).await?;
                if let Some(s) = status.as_mut() {
                    s["ephemeralContainerStatuses"] = json!([container_status(
                        container,
                        "busybox:1.36",
                        &format!("docker-pullable://busybox@{digest}")
                    )]);
                }
            }
            if let Some(status) = status {
                api.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": status })),
                )
                .await?;
            }
            Ok::<_, anyhow::Error>(())
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    let setup_secs = setup.elapsed().as_secs_f64();

    // The status subresource kept what was written (no kubelet overwrites it here).
    let sample: Pod = Api::namespaced(client.clone(), "inv-1").get("p-1").await?;
    let sample_status = sample.status.unwrap_or_default();
    assert_eq!(sample_status.phase.as_deref(), Some("Running"));
    assert!(
        sample_status.ephemeral_container_statuses.is_some(),
        "the API server dropped ephemeralContainerStatuses (feature gate off?)"
    );

    let lister = Lister::new(
        Arc::new(moto_resolver(&moto).await),
        ListerSettings {
            kubeconfig: Some(server.kubeconfig_path().display().to_string()),
            ..Default::default()
        },
    );
    let scope = InventoryScope::Kubernetes {
        cluster: "inv-test".into(),
        context: Some(server.context().into()),
    };
    let (calls, report) = progress();
    let started = Instant::now();
    let listed = lister.list(&scope, &report).await?;
    let list_secs = started.elapsed().as_secs_f64();
    println!(
        "Kubernetes: {pods} pods over {digests} digests (+101 finished, 2 by tag) in {namespaces} \
         namespaces: created with status in {setup_secs:.1} s, listed {} containers in \
         {list_secs:.2} s, {} progress calls (500 pods a page)",
        listed.len(),
        calls.0.load(Ordering::SeqCst)
    );

    expected.sort();
    assert_eq!(
        multiset(&listed),
        expected,
        "every container, once, with its digest"
    );
    assert!(
        !listed
            .iter()
            .any(|c| c.digest.as_deref() == Some(finished.as_str()))
    );
    assert_eq!(
        per_digest(&listed).len(),
        digests + 1,
        "80 digests and the ECR one"
    );
    let hub = listed
        .iter()
        .find(|c| c.place == "k8s:inv-1/hub-tagged/app")
        .unwrap();
    assert!(
        hub.unresolved
            .as_deref()
            .unwrap()
            .contains("only ECR and ACR"),
        "{hub:?}"
    );
    // Paged: 500 pods a page, one progress call per page and one at the end.
    let pages = pods.div_ceil(500);
    assert!(calls.0.load(Ordering::SeqCst) as usize > pages, "{calls:?}");

    // An unknown context is bad configuration, not an outage.
    let err = lister
        .list(
            &InventoryScope::Kubernetes {
                cluster: "inv-test".into(),
                context: Some("no-such-context".into()),
            },
            &|_| {},
        )
        .await
        .unwrap_err();
    assert_eq!(err.type_name(), "KubeConfigError", "{err}");
    assert!(!err.is_retryable());
    Ok(())
}

fn pod_json(name: &str, containers: &[(&str, &str)], inits: &[(&str, &str)]) -> serde_json::Value {
    let list = |cs: &[(&str, &str)]| {
        cs.iter()
            .map(|(n, i)| json!({"name": n, "image": i}))
            .collect::<Vec<_>>()
    };
    let mut spec = json!({"containers": list(containers)});
    if !inits.is_empty() {
        spec["initContainers"] = json!(list(inits));
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
}

fn container_status(name: &str, image: &str, image_id: &str) -> serde_json::Value {
    json!({"name": name, "image": image, "imageID": image_id, "ready": true, "restartCount": 0,
           "state": {"running": {"startedAt": "2026-12-01T00:00:00Z"}}})
}

/// Adds an ephemeral container the 1.20 way: the `ephemeralcontainers` subresource, which
/// takes an `EphemeralContainers` object.
async fn add_ephemeral(
    http: &reqwest::Client,
    server: &KubeApiServer,
    namespace: &str,
    pod: &str,
    container: &str,
) -> anyhow::Result<()> {
    let url = format!(
        "{}/api/v1/namespaces/{namespace}/pods/{pod}/ephemeralcontainers",
        server.url()
    );
    let mut current: serde_json::Value = http
        .get(&url)
        .bearer_auth(server.token())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    current["ephemeralContainers"] = json!([{
        "name": container, "image": "busybox:1.36", "targetContainerName": "app",
        "imagePullPolicy": "IfNotPresent", "terminationMessagePolicy": "File"
    }]);
    let response = http
        .put(&url)
        .bearer_auth(server.token())
        .json(&current)
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "ephemeral container for {namespace}/{pod}: {} {}",
        response.status(),
        response.text().await.unwrap_or_default()
    );
    Ok(())
}

/// The fake's managed identity, in-process: the token it hands out for each audience.
#[derive(Debug)]
struct FakeCredential {
    arm: String,
    acr: String,
}

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for FakeCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        let token = if scopes.iter().any(|s| s.starts_with(ACR_AUDIENCE)) {
            &self.acr
        } else {
            &self.arm
        };
        Ok(azure_core::credentials::AccessToken::new(
            token.clone(),
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

#[tokio::test]
async fn azure_lists_every_page_of_groups_apps_and_jobs() -> anyhow::Result<()> {
    const SUB: &str = "00000000-1111-2222-3333-444444444444";
    let fake = AzureFake::start().await?;
    fake.set_list_page_size(2);
    let id = |provider: &str, rg: &str, name: &str| {
        format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/{provider}/{name}")
    };
    let aci = "Microsoft.ContainerInstance/containerGroups";
    let pinned = digest("pinned");
    let tagged = digest("acr-tagged");
    let job_digest = digest("acr-job");
    fake.put_manifest("shop/web", "2.1", &tagged);
    fake.put_manifest("batch/report", "7", &job_digest);
    let group = |rg: &str, name: &str, containers: serde_json::Value| {
        json!({"id": id(aci, rg, name), "name": name, "type": aci,
               "properties": {"containers": containers}})
    };
    fake.put_resource(
        &id(aci, "shop", "web"),
        json!({"id": id(aci, "shop", "web"), "name": "web", "type": aci, "properties": {
            "initContainers": [{"name": "migrate", "properties": {"image": format!("myacr.azurecr.io/shop/web@{pinned}")}}],
            "containers": [
                {"name": "web", "properties": {"image": "myacr.azurecr.io/shop/web:2.1"}},
                {"name": "proxy", "properties": {"image": "nginx:1.27"}}]}}),
    );
    fake.put_resource(
        &id(aci, "shop", "cache"),
        group(
            "shop",
            "cache",
            json!([{"name": "redis", "properties": {"image": format!("redis@{pinned}")}}]),
        ),
    );
    fake.put_resource(
        &id(aci, "ops", "gone-tag"),
        group(
            "ops",
            "gone-tag",
            json!([{"name": "c", "properties": {"image": "myacr.azurecr.io/shop/web:nope"}}]),
        ),
    );
    // In another subscription: not in this subscription's list.
    let other = format!(
        "/subscriptions/99999999-1111-2222-3333-444444444444/resourceGroups/x/providers/{aci}/other"
    );
    fake.put_resource(
        &other,
        json!({"id": other, "properties": {"containers": [
        {"name": "c", "properties": {"image": format!("redis@{pinned}")}}]}}),
    );
    let app_id = id("Microsoft.App/containerApps", "apps", "api");
    fake.put_resource(
        &app_id,
        json!({"id": app_id, "name": "api", "properties": {"template": {
        "containers": [{"name": "api", "image": format!("myacr.azurecr.io/apps/api@{pinned}")}]}}}),
    );
    let job_id = id("Microsoft.App/jobs", "batch", "nightly");
    fake.put_resource(
        &job_id,
        json!({"id": job_id, "name": "nightly", "properties": {"template": {
        "containers": [{"name": "report", "image": "myacr.azurecr.io/batch/report:7"}]}}}),
    );

    let azure = Azure::new(
        Arc::new(FakeCredential {
            arm: fake.token_for(ARM_PUBLIC),
            acr: fake.token_for(ACR_AUDIENCE),
        }),
        AzureSettings {
            arm_endpoint: fake.url.clone(),
            acr_endpoint: Some(fake.url.clone()),
            cloud: None,
        },
    );
    let resolver =
        Resolver::new(Arc::new(Aws::new()), ResolverSettings::default()).with_azure(azure);
    let lister = Lister::new(Arc::new(resolver), ListerSettings::default());
    // The first page is throttled (429, Retry-After: 1): asked again, not a failed listing.
    fake.throttle_arm(1);
    let (calls, report) = progress();
    let listed = lister
        .list(
            &InventoryScope::Azure {
                subscription_id: SUB.into(),
            },
            &report,
        )
        .await?;

    let mut expected = vec![
        ("aci:shop/web/migrate".to_string(), Some(pinned.clone())),
        ("aci:shop/web/web".to_string(), Some(tagged.clone())),
        ("aci:shop/web/proxy".to_string(), None),
        ("aci:shop/cache/redis".to_string(), Some(pinned.clone())),
        ("aci:ops/gone-tag/c".to_string(), None),
        ("aca:apps/api".to_string(), Some(pinned.clone())),
        ("aca:batch/nightly".to_string(), Some(job_digest.clone())),
    ];
    expected.sort();
    assert_eq!(multiset(&listed), expected, "{listed:#?}");
    let gone = listed
        .iter()
        .find(|c| c.place == "aci:ops/gone-tag/c")
        .unwrap();
    assert_eq!(gone.unresolved.as_deref(), Some("tag not found in ACR"));
    // Three container groups at two a page: two pages through nextLink; one each for apps and jobs.
    assert_eq!(fake.calls().get("arm/list"), Some(&4), "{:?}", fake.calls());
    assert_eq!(
        fake.calls().get("arm"),
        Some(&5),
        "one throttled: {:?}",
        fake.calls()
    );
    // After each of the 4 pages and each tag resolved, with the count listed.
    assert!(calls.0.load(Ordering::SeqCst) >= 5, "{calls:?}");
    assert_eq!(calls.1.load(Ordering::SeqCst), listed.len() as u64);
    Ok(())
}
