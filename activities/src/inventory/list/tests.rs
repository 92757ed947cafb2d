use super::paging::retrying;
use super::*;
use crate::aws::{Aws, AwsError};
use crate::failure::IntoFailure;
use crate::resolve::ResolverSettings;
use ::kube::core::Status;
use qflows_workflows::input::InputError;

const D: &str = "sha256:47f8581563aecdd7339e97469826ab59e92e83aab4c274d48370251de95dfdc9";

fn kube_error(code: u16) -> ListError {
    ListError::Kube {
        what: "list pods",
        source: ::kube::Error::Api(Box::new(Status::failure("x", "y").with_code(code))),
    }
}

#[test]
fn errors_say_whether_a_retry_can_help() {
    let aws = |e: AwsError| ListError::Aws(e);
    let cases: Vec<(ListError, &str, bool)> = vec![
        (
            aws(AwsError::Transient {
                operation: "ecs:ListTasks",
                code: "ThrottlingException".into(),
                message: "Rate exceeded".into(),
            }),
            "AwsUnavailable",
            true,
        ),
        (
            aws(AwsError::AccessDenied {
                operation: "ecs:ListClusters",
                code: "AccessDeniedException".into(),
                message: "no".into(),
            }),
            "AwsAccessDenied",
            false,
        ),
        (
            aws(AwsError::Invalid {
                operation: "ecs:DescribeTasks",
                code: "ClusterNotFoundException".into(),
                message: "gone".into(),
            }),
            "AwsInvalidRequest",
            false,
        ),
        (kube_error(429), "KubeUnavailable", true),
        (kube_error(503), "KubeUnavailable", true),
        (kube_error(500), "KubeUnavailable", true),
        (kube_error(410), "KubeListExpired", true),
        (kube_error(403), "KubeForbidden", false),
        (kube_error(401), "KubeForbidden", false),
        (kube_error(400), "KubeRejected", false),
        (kube_error(404), "KubeNotFound", false),
        (
            ListError::KubeConfig("context `nope` not found".into()),
            "KubeConfigError",
            false,
        ),
        (
            ListError::Azure(AzureError::Unavailable {
                what: "GET x".into(),
                message: "429".into(),
                retry_after_secs: Some(2),
            }),
            "AzureUnavailable",
            true,
        ),
        (
            ListError::Azure(AzureError::Refused {
                what: "GET x".into(),
                status: 403,
                message: "AuthorizationFailed".into(),
            }),
            "AzureRefused",
            false,
        ),
        (
            ListError::Azure(AzureError::Credentials("no identity".into())),
            "AzureCredentials",
            false,
        ),
        (
            ListError::Azure(AzureError::InvalidInput("nextLink elsewhere".into())),
            "InvalidInput",
            false,
        ),
        (
            ListError::Unsupported("azure"),
            "InventoryUnsupported",
            false,
        ),
        (ListError::TooLarge, "InventoryTooLarge", false),
        (
            ListError::WrongAccount {
                scope: "210987654321".into(),
                reached: "123456789012".into(),
            },
            "InventoryWrongAccount",
            false,
        ),
        (
            ListError::InvalidScope(InputError::field("scope.region", "bad")),
            "InvalidInput",
            false,
        ),
    ];
    for (err, name, retryable) in cases {
        let text = err.to_string();
        assert_eq!(err.type_name(), name, "{text}");
        assert_eq!(err.is_retryable(), retryable, "{text}");
        let failure = format!("{:?}", err.into_failure());
        assert!(failure.contains(name), "{failure}");
        assert_eq!(
            failure.contains("non_retryable: true"),
            !retryable,
            "{failure}"
        );
    }
}

#[test]
fn a_network_failure_reaching_kubernetes_is_retryable() {
    let err = ListError::Kube {
        what: "list pods",
        source: ::kube::Error::Service("connection refused".into()),
    };
    assert_eq!(err.type_name(), "KubeUnavailable");
    assert!(err.is_retryable());
}

#[test]
fn only_exact_sha256_digests_count() {
    assert_eq!(checked_digest(D), Some(D));
    for bad in [
        "sha256:47F8581563AECDD7339E97469826AB59E92E83AAB4C274D48370251DE95DFDC9",
        "sha256:47f8",
        "sha512:47f8581563aecdd7339e97469826ab59e92e83aab4c274d48370251de95dfdc9",
        &format!("{D}0"),
        &format!(" {D}"),
        "sha256:47f8581563aecdd7339e97469826ab59e92e83aab4c274d48370251de95dfdcg",
        "",
    ] {
        assert_eq!(checked_digest(bad), None, "{bad}");
    }
}

fn seen(image: &str, reported: Option<&str>) -> Seen {
    Seen {
        image: image.into(),
        place: "k8s:ns/pod/c".into(),
        reported: reported.map(str::to_string),
        refused: None,
    }
}

#[tokio::test]
async fn digests_come_from_the_platform_then_the_reference_and_nothing_is_invented() {
    // No ECR or ACR reference below: nothing is asked of any registry.
    let lister = Lister::new(
        Arc::new(Resolver::new(
            Arc::new(Aws::new()),
            ResolverSettings::default(),
        )),
        ListerSettings::default(),
    );
    let other = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    let long_place = format!("k8s:{}", "é".repeat(400));
    let listed = lister
        .finish(
            vec![
                seen("nginx:1.27", Some(D)),
                seen(&format!("nginx@{other}"), None),
                seen(&format!("nginx@{other}"), Some("sha256:NOTHEX")),
                seen("nginx:1.27", None),
                seen("myregistry.azurecr.io/app:1", None),
                seen("Not A Reference", None),
                seen(&"a".repeat(5000), None),
                Seen {
                    image: "nginx:1.27".into(),
                    place: long_place,
                    reported: Some(D.into()),
                    refused: Some("resource ID refused: odd".into()),
                },
            ],
            None,
            &|_| {},
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 8);
    assert_eq!(listed[0].digest.as_deref(), Some(D));
    assert_eq!(listed[0].unresolved, None);
    assert_eq!(listed[1].digest.as_deref(), Some(other));
    // A malformed reported digest is ignored; the reference's own digest still counts.
    assert_eq!(listed[2].digest.as_deref(), Some(other));
    assert_eq!(listed[3].digest, None);
    assert!(
        listed[3]
            .unresolved
            .as_deref()
            .unwrap()
            .contains("only ECR and ACR"),
        "{:?}",
        listed[3]
    );
    assert!(
        listed[4]
            .unresolved
            .as_deref()
            .unwrap()
            .contains("no Azure access"),
        "{:?}",
        listed[4]
    );
    assert!(
        listed[5]
            .unresolved
            .as_deref()
            .unwrap()
            .starts_with("unusable image reference"),
        "{:?}",
        listed[5]
    );
    assert_eq!(listed[6].image.chars().count(), MAX_IMAGE_CHARS);
    assert!(listed[6].unresolved.as_deref().unwrap().contains("longer"));
    // Refused: even a well-formed reported digest is not used.
    assert_eq!(listed[7].digest, None);
    assert_eq!(
        listed[7].place.chars().count(),
        qflows_workflows::inventory::model::MAX_PLACE_CHARS
    );
    for c in &listed {
        assert!(c.digest.is_some() != c.unresolved.is_some(), "{c:?}");
        assert!(
            c.unresolved
                .as_ref()
                .is_none_or(|r| r.chars().count() <= MAX_REASON_CHARS)
        );
    }
}

#[tokio::test]
async fn an_invalid_scope_is_refused_before_any_call() {
    let lister = Lister::new(
        Arc::new(Resolver::new(
            Arc::new(Aws::new()),
            ResolverSettings::default(),
        )),
        ListerSettings::default(),
    );
    let err = lister
        .list(
            &InventoryScope::Aws {
                account_id: "12".into(),
                region: "eu-west-1".into(),
                role_arn: None,
            },
            &|_| {},
        )
        .await
        .unwrap_err();
    assert_eq!(err.type_name(), "InvalidInput");
    let err = lister
        .list(
            &InventoryScope::Azure {
                subscription_id: "00000000-1111-2222-3333-444444444444".into(),
            },
            &|_| {},
        )
        .await
        .unwrap_err();
    assert_eq!(err.type_name(), "InventoryUnsupported");
}

#[tokio::test]
async fn pages_are_asked_again_only_when_that_can_help() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let calls = AtomicU32::new(0);
    let throttled = || {
        ListError::Azure(AzureError::Unavailable {
            what: "GET list".into(),
            message: "429".into(),
            retry_after_secs: Some(0),
        })
    };
    let result: Result<(), _> = retrying(|| async {
        calls.fetch_add(1, Ordering::SeqCst);
        Err(throttled())
    })
    .await;
    assert_eq!(result.unwrap_err().type_name(), "AzureUnavailable");
    assert_eq!(calls.load(Ordering::SeqCst), PAGE_ATTEMPTS);

    calls.store(0, Ordering::SeqCst);
    let result = retrying(|| async {
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            Err(throttled())
        } else {
            Ok(7)
        }
    })
    .await;
    assert_eq!(result.unwrap(), 7);
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    for err in [kube_error(403), kube_error(410)] {
        calls.store(0, Ordering::SeqCst);
        let name = err.type_name();
        let once = std::sync::Mutex::new(Some(err));
        let result: Result<(), _> = retrying(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(once.lock().unwrap().take().unwrap_or(ListError::TooLarge))
        })
        .await;
        assert_eq!(result.unwrap_err().type_name(), name);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{name}");
    }
}
