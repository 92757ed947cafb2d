//! Connecting to Temporal with its standard client configuration.

use crate::config::TemporalArgs;
use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions};
use temporalio_common::envconfig::{LoadClientConfigProfileOptions, load_client_config_profile};

/// Loads the Temporal profile (env vars, `temporal.toml`), applies flag overrides and connects.
pub async fn connect(args: &TemporalArgs, identity: &str) -> anyhow::Result<Client> {
    let options = LoadClientConfigProfileOptions::builder()
        .maybe_config_file_profile(args.profile.clone())
        .build();
    let mut profile = load_client_config_profile(options, None)
        .map_err(|e| anyhow::anyhow!("Temporal client configuration: {e}"))?;
    if let Some(address) = &args.address {
        profile.address = Some(address.clone());
    }
    if let Some(namespace) = &args.namespace {
        profile.namespace = Some(namespace.clone());
    }
    let namespace = profile
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let address = profile
        .address
        .clone()
        .unwrap_or_else(|| "localhost:7233".to_string());
    let mut connection_options = ConnectionOptions::try_from(profile)
        .map_err(|e| anyhow::anyhow!("Temporal client configuration: {e}"))?;
    connection_options.identity = identity.to_string();
    let connection = Connection::connect(connection_options).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach Temporal at {address} (TEMPORAL_ADDRESS / --temporal-address): {e}"
        )
    })?;
    let client = Client::new(connection, ClientOptions::new(namespace).build())
        .map_err(|e| anyhow::anyhow!("Temporal client: {e}"))?;
    Ok(client)
}

/// qflows' required search attributes ([`search::ALL`]) the namespace lacks (empty: all
/// registered).
///
/// [`search::ALL`]: qflows_workflows::scan::search::ALL
pub async fn missing_search_attributes(client: &Client) -> anyhow::Result<Vec<&'static str>> {
    Ok(search_attributes(client).await?.missing)
}

/// Which of qflows' search attributes a namespace has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchAttributeRegistration {
    /// Required ones ([`search::ALL`]) it lacks: while any is missing, none is set.
    ///
    /// [`search::ALL`]: qflows_workflows::scan::search::ALL
    pub missing: Vec<&'static str>,
    /// Optional ones ([`search::OPTIONAL`]) it lacks: those alone are not set.
    ///
    /// [`search::OPTIONAL`]: qflows_workflows::scan::search::OPTIONAL
    pub missing_optional: Vec<&'static str>,
}

/// Lists the namespace's search attributes against qflows' required and optional ones.
pub async fn search_attributes(client: &Client) -> anyhow::Result<SearchAttributeRegistration> {
    use qflows_workflows::scan::search::{ALL, OPTIONAL};
    use temporalio_client::NamespacedClient;
    use temporalio_common::protos::temporal::api::operatorservice::v1::ListSearchAttributesRequest;
    let request = ListSearchAttributesRequest {
        namespace: client.namespace(),
    };
    let response = client
        .connection()
        .operator_service()
        .list_search_attributes(temporalio_client::tonic::Request::new(request))
        .await?
        .into_inner();
    let lacks = |list: &'static [(&'static str, &'static str)]| -> Vec<&'static str> {
        list.iter()
            .map(|(name, _)| *name)
            .filter(|name| {
                !response.custom_attributes.contains_key(*name)
                    && !response.system_attributes.contains_key(*name)
            })
            .collect()
    };
    Ok(SearchAttributeRegistration {
        missing: lacks(&ALL),
        missing_optional: lacks(&OPTIONAL),
    })
}
