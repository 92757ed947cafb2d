#!/usr/bin/env bash
# qflows: the Event Grid subscriptions of eventgrid.bicep with the az CLI (Event Grid schema).
#
#   QFLOWS_BRIDGE_KEY=… deploy/azure/eventgrid.sh <resource-group> <registry> <storage-account> https://qflows.example.com
#
# Creates (or updates) two subscriptions that POST to <bridge>/events/azure?code=$QFLOWS_BRIDGE_KEY:
# the registry's ImagePushed events, and the resource group's ResourceWriteSuccess events for
# container group / container app / job writes (SCOPE=subscription: the whole subscription's).
# Undeliverable events land in the blob container qflows-deadletter of <storage-account>.
# Not exercised by qflows' tests (no Azure here).
set -euo pipefail

if [ $# -ne 4 ]; then
  sed -n '2,10s/^# \{0,1\}//p' "$0" >&2
  exit 2
fi
group="$1" registry="$2" storage="$3" bridge="${4%/}"
: "${QFLOWS_BRIDGE_KEY:?set QFLOWS_BRIDGE_KEY (the key senders present to the bridge)}"
scope="${SCOPE:-resourceGroup}"
container="${DEADLETTER_CONTAINER:-qflows-deadletter}"

registry_id="$(az acr show -g "$group" -n "$registry" --query id -o tsv)"
storage_id="$(az storage account show -g "$group" -n "$storage" --query id -o tsv)"
az storage container create --auth-mode login --account-name "$storage" --name "$container" -o none
case "$scope" in
  resourceGroup) arm_id="$(az group show -n "$group" --query id -o tsv)" ;;
  subscription) arm_id="/subscriptions/$(az account show --query id -o tsv)" ;;
  *) echo "SCOPE must be resourceGroup or subscription" >&2; exit 2 ;;
esac

# The key is part of the URL: keep it out of the shell's trace and the command's output.
set +x
endpoint="$bridge/events/azure?code=$QFLOWS_BRIDGE_KEY"
common=(
  --endpoint-type webhook --endpoint "$endpoint"
  --event-delivery-schema eventgridschema
  --max-delivery-attempts 30 --event-ttl 1440
  --max-events-per-batch 1
  --deadletter-endpoint "$storage_id/blobServices/default/containers/$container"
  -o none
)

az eventgrid event-subscription create --name qflows-image-pushed \
  --source-resource-id "$registry_id" \
  --included-event-types Microsoft.ContainerRegistry.ImagePushed \
  "${common[@]}"

az eventgrid event-subscription create --name qflows-container-writes \
  --source-resource-id "$arm_id" \
  --included-event-types Microsoft.Resources.ResourceWriteSuccess \
  --advanced-filter data.operationName StringIn \
    Microsoft.ContainerInstance/containerGroups/write \
    Microsoft.App/containerApps/write \
    Microsoft.App/jobs/write \
  "${common[@]}"

echo "Event Grid subscriptions qflows-image-pushed and qflows-container-writes point at $bridge/events/azure"
