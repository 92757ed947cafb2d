// qflows: Event Grid → `qflows bridge` (POST https://<bridge>/events/azure?code=<key>).
//
// Two system-topic subscriptions, delivered in the Event Grid schema (EventGridSchema; the
// bridge answers the subscription validation handshake itself):
//   - the registry's  Microsoft.ContainerRegistry.ImagePushed;
//   - the resource group's (or the whole subscription's) Microsoft.Resources.ResourceWriteSuccess,
//     only for container group, container app and container app job writes.
// Undeliverable events go to a blob container after the retries.
//
//   az deployment group create -g <rg> -f deploy/azure/eventgrid.bicep \
//     -p bridgeUrl=https://qflows.example.com registryName=<acr> \
//        deadLetterStorageAccountName=<storage> bridgeKey="$QFLOWS_BRIDGE_KEY"
//
// Not exercised by qflows' tests (no Azure here); checked against the ARM reference of
// Microsoft.EventGrid systemTopics and systemTopics/eventSubscriptions 2022-06-15.

targetScope = 'resourceGroup'

@description('The bridge\'s public base URL, e.g. https://qflows.example.com (no trailing slash).')
param bridgeUrl string

@secure()
@minLength(16)
@description('QFLOWS_BRIDGE_KEY: sent as ?code=<key>. Secure: not logged or shown in the deployment.')
param bridgeKey string

@description('The container registry (in this resource group) whose pushes are scanned.')
param registryName string

@allowed(['resourceGroup', 'subscription'])
@description('Which container deployments to watch: this resource group, or the whole subscription.')
param deploymentScope string = 'resourceGroup'

@description('Storage account (in this resource group) for undeliverable events.')
param deadLetterStorageAccountName string

@description('Blob container for undeliverable events (created if missing).')
param deadLetterContainerName string = 'qflows-deadletter'

@description('Delivery attempts before an event is dead-lettered (1-30).')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@description('How long Event Grid keeps retrying an event, in minutes (1-1440).')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

// Resource writes that deploy containers; ScanOnDeploy reads the images through ARM.
var containerWriteOperations = [
  'Microsoft.ContainerInstance/containerGroups/write'
  'Microsoft.App/containerApps/write'
  'Microsoft.App/jobs/write'
]

var endpointUrl = '${bridgeUrl}/events/azure?code=${bridgeKey}'

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-01-01' existing = {
  name: deadLetterStorageAccountName
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-01-01' = {
  name: '${storage.name}/default/${deadLetterContainerName}'
}

var deadLetter = {
  endpointType: 'StorageBlob'
  properties: {
    resourceId: storage.id
    blobContainerName: deadLetterContainerName
  }
}

var retryPolicy = {
  maxDeliveryAttempts: maxDeliveryAttempts
  eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
}

resource registryTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: '${registryName}-qflows'
  location: registry.location
  properties: {
    source: registry.id
    topicType: 'Microsoft.ContainerRegistry.Registries'
  }
}

resource imagePushed 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: registryTopic
  name: 'qflows-image-pushed'
  dependsOn: [deadLetterContainer]
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: endpointUrl
        maxEventsPerBatch: 1
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: ['Microsoft.ContainerRegistry.ImagePushed']
    }
    retryPolicy: retryPolicy
    deadLetterDestination: deadLetter
  }
}

// Resource-group and subscription topics are global; the topic resource lives in this group.
resource armTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: deploymentScope == 'subscription' ? 'qflows-subscription' : 'qflows-${resourceGroup().name}'
  location: 'global'
  properties: {
    source: deploymentScope == 'subscription' ? subscription().id : resourceGroup().id
    topicType: deploymentScope == 'subscription' ? 'Microsoft.Resources.Subscriptions' : 'Microsoft.Resources.ResourceGroups'
  }
}

resource containerWrites 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: armTopic
  name: 'qflows-container-writes'
  dependsOn: [deadLetterContainer]
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: endpointUrl
        maxEventsPerBatch: 1
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: ['Microsoft.Resources.ResourceWriteSuccess']
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.operationName'
          values: containerWriteOperations
        }
      ]
    }
    retryPolicy: retryPolicy
    deadLetterDestination: deadLetter
  }
}

output registryTopicName string = registryTopic.name
output armTopicName string = armTopic.name
