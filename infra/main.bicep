// The control plane on Azure: one Function App (HTTP trigger = the ARM API, orchestration and
// activity triggers = the same orchestrations/ and activities/ code as the embedded host) with
// the Durable Functions task hub in its storage account, and the resources its Azure adapters
// pick themselves from (batchai/adapters/from_env.py): Cosmos DB for the store, two blob
// containers (job logs and outputs; the drop box), a Service Bus topic for submissions and, when
// `agentPackage` is given, VM scale sets for cluster nodes in a subnet of this template's VNet.
// Deploy: az deployment group create -g RG -f infra/main.bicep -p name=batchai apiToken=... [agentPackage=...]

@description('Prefix for every resource name (lower-case letters and digits).')
param name string

@description('Location of every resource.')
param location string = resourceGroup().location

@secure()
@description('The bearer token clients must send (BATCHAI_TOKEN).')
param apiToken string

@description('What `pip install` gets on the cluster nodes (VM scale set instances), e.g. a wheel URL. Empty: no VM scale set settings, and clusters cannot be provisioned.')
param agentPackage string = ''

var computeEnabled = !empty(agentPackage)
var storageName = toLower(take('${name}${uniqueString(resourceGroup().id)}', 24))
var globalName = toLower('${name}-${uniqueString(resourceGroup().id)}') // Cosmos DB and Service Bus names are global
var databaseName = 'batchai'
var outputsContainerName = 'job-outputs'
var dropsContainerName = 'job-drops'
var topicName = 'submissions'
var priorities = ['high', 'normal', 'low'] // batchai.ports.PRIORITIES: one subscription each
var priorityRuleName = 'priority' // servicebus_queue.RULE_NAME
var nodesVnetName = '${name}-nodes'
var nodesSubnetName = 'nodes'
var nodeRoles = [
  '9980e02c-c2be-4d73-94e8-173b1dc7cf3c' // Virtual Machine Contributor: the scale sets and their instances
  '4d97b98b-1d4f-4787-a291-c67834d212e7' // Network Contributor: joining the nodes' subnet
]

// --- storage: Functions host, Durable task hub, job logs and outputs, drop box ---------------

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  properties: {
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource outputsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: outputsContainerName
  properties: { publicAccess: 'None' }
}

resource dropsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: dropsContainerName
  properties: { publicAccess: 'None' }
}

// With the account key: the blob adapter signs its read-only SAS URLs with it.
var storageConnection = 'DefaultEndpointsProtocol=https;AccountName=${storage.name};EndpointSuffix=${environment().suffixes.storage};AccountKey=${storage.listKeys().keys[0].value}'

// --- Cosmos DB: the store (the adapter creates its containers at start) ---------------------

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' = {
  name: take(globalName, 44)
  location: location
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    capabilities: [{ name: 'EnableServerless' }]
    consistencyPolicy: { defaultConsistencyLevel: 'Session' }
    locations: [{ locationName: location, failoverPriority: 0, isZoneRedundant: false }]
    minimalTlsVersion: 'Tls12'
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-05-15' = {
  parent: cosmos
  name: databaseName
  properties: { resource: { id: databaseName } }
}

// --- Service Bus: the submissions topic, one filtered subscription per priority -------------

resource serviceBus 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: take(globalName, 50)
  location: location
  sku: { name: 'Standard', tier: 'Standard' }
  properties: { minimumTlsVersion: '1.2' }
}

resource serviceBusRoot 'Microsoft.ServiceBus/namespaces/authorizationRules@2024-01-01' existing = {
  parent: serviceBus
  name: 'RootManageSharedAccessKey'
}

resource topic 'Microsoft.ServiceBus/namespaces/topics@2024-01-01' = {
  parent: serviceBus
  name: topicName
  properties: {
    requiresDuplicateDetection: true // the message id is the idempotency key; cannot be turned on later
    duplicateDetectionHistoryTimeWindow: 'PT10M'
  }
}

resource subscriptions 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2024-01-01' = [
  for priority in priorities: {
    parent: topic
    name: priority
    properties: {
      maxDeliveryCount: 5
      lockDuration: 'PT30S'
      deadLetteringOnMessageExpiration: true
    }
  }
]

// The rule ensure_topology (servicebus_queue.py) expects: RULE_NAME with the priority's SQL filter.
resource priorityRules 'Microsoft.ServiceBus/namespaces/topics/subscriptions/rules@2024-01-01' = [
  for (priority, i) in priorities: {
    parent: subscriptions[i]
    name: priorityRuleName
    properties: {
      filterType: 'SqlFilter'
      sqlFilter: { sqlExpression: 'priority = \'${priority}\'' }
    }
  }
]

// Every new subscription gets a `$Default` rule with a TrueFilter, which would let every message
// into every subscription; a template cannot delete it, so it is overwritten with the same filter
// (rules without actions are OR-ed into one copy). ensure_topology, when run, deletes it.
resource defaultRules 'Microsoft.ServiceBus/namespaces/topics/subscriptions/rules@2024-01-01' = [
  for (priority, i) in priorities: {
    parent: subscriptions[i]
    name: '$Default'
    properties: {
      filterType: 'SqlFilter'
      sqlFilter: { sqlExpression: 'priority = \'${priority}\'' }
    }
    dependsOn: [priorityRules[i]] // one rule change at a time per subscription
  }
]

// --- the nodes' network (only with agentPackage) ---------------------------------------------

resource nodesVnet 'Microsoft.Network/virtualNetworks@2024-01-01' = if (computeEnabled) {
  name: nodesVnetName
  location: location
  properties: {
    addressSpace: { addressPrefixes: ['10.40.0.0/16'] }
    subnets: [
      {
        name: nodesSubnetName
        properties: {
          addressPrefix: '10.40.0.0/20'
          // the nodes have no public IPs: they pip-install the agent and call the control plane
          // through default outbound access (use a NAT gateway for a fixed egress address)
          defaultOutboundAccess: true
        }
      }
    ]
  }
}

var nodesSubnetId = resourceId('Microsoft.Network/virtualNetworks/subnets', nodesVnetName, nodesSubnetName)

// --- the Function App ------------------------------------------------------------------------

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${name}-insights'
  location: location
  kind: 'web'
  properties: { Application_Type: 'web' }
}

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  name: '${name}-plan'
  location: location
  sku: { name: 'EP1', tier: 'ElasticPremium' }
  kind: 'elastic'
  properties: { reserved: true }
}

var computeSettings = computeEnabled ? [
  { name: 'BATCHAI_VMSS_SUBSCRIPTION_ID', value: subscription().subscriptionId }
  { name: 'BATCHAI_VMSS_RESOURCE_GROUP', value: resourceGroup().name }
  { name: 'BATCHAI_VMSS_LOCATION', value: location }
  { name: 'BATCHAI_VMSS_SUBNET_ID', value: nodesSubnetId }
  { name: 'BATCHAI_AGENT_PACKAGE', value: agentPackage }
  // BATCHAI_PUBLIC_URL is left out: the nodes reach https://$WEBSITE_HOSTNAME
] : []

var baseSettings = [
  { name: 'FUNCTIONS_EXTENSION_VERSION', value: '~4' }
  { name: 'FUNCTIONS_WORKER_RUNTIME', value: 'python' }
  { name: 'AzureWebJobsStorage', value: storageConnection }
  { name: 'AzureWebJobsFeatureFlags', value: 'EnableWorkerIndexing' }
  // Elastic Premium keeps the app's content (and /home, so BATCHAI_DATA_DIR) on an Azure Files share
  { name: 'WEBSITE_CONTENTAZUREFILECONNECTIONSTRING', value: storageConnection }
  { name: 'WEBSITE_CONTENTSHARE', value: toLower('${name}-api') }
  { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
  { name: 'BATCHAI_TOKEN', value: apiToken }
  { name: 'BATCHAI_DATA_DIR', value: '/home/data/batchai' } // vmss-nodes.json; store.db without Cosmos
  { name: 'BATCHAI_COSMOS_ENDPOINT', value: cosmos.properties.documentEndpoint }
  { name: 'BATCHAI_COSMOS_KEY', value: cosmos.listKeys().primaryMasterKey }
  { name: 'BATCHAI_COSMOS_DATABASE', value: database.name }
  { name: 'BATCHAI_BLOB_CONNECTION_STRING', value: storageConnection }
  { name: 'BATCHAI_BLOB_CONTAINER', value: outputsContainer.name }
  { name: 'BATCHAI_DROP_CONTAINER', value: dropsContainer.name }
  { name: 'BATCHAI_SERVICEBUS', value: serviceBusRoot.listKeys().primaryConnectionString }
  { name: 'BATCHAI_SERVICEBUS_TOPIC', value: topic.name }
]

resource app 'Microsoft.Web/sites@2023-12-01' = {
  name: '${name}-api'
  location: location
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      linuxFxVersion: 'PYTHON|3.11'
      appSettings: concat(baseSettings, computeSettings)
    }
  }
  dependsOn: [
    defaultRules // the topic triggers start on a filtered topology
    nodesVnet // the nodes' subnet exists before the first cluster asks for it (when computeEnabled)
  ]
}

// The app's identity creates the scale sets (DefaultAzureCredential in VmssCompute).
resource nodeRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in nodeRoles: if (computeEnabled) {
    name: guid(resourceGroup().id, app.id, roleId)
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: app.identity.principalId
      principalType: 'ServicePrincipal'
    }
  }
]

output url string = 'https://${app.properties.defaultHostName}'
output principalId string = app.identity.principalId
output storageAccount string = storage.name
output cosmosEndpoint string = cosmos.properties.documentEndpoint
output serviceBusNamespace string = serviceBus.name
output nodesSubnetId string = computeEnabled ? nodesSubnetId : ''
