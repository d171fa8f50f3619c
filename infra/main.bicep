// The control plane on Azure: one Function App (HTTP trigger = the ARM API, orchestration and
// activity triggers = the same orchestrations/ and activities/ code as the embedded host) with
// the Durable Functions task hub in its storage account, and the resources its Azure adapters
// pick themselves from (batchai/adapters/from_env.py): Cosmos DB for the store, two blob
// containers (job logs and outputs; the drop box), a Service Bus topic for submissions and, when
// `agentPackage` is given, VM scale sets for cluster nodes in a subnet of this template's VNet.
// No shared key is read or enabled anywhere: the app's managed identity holds data-plane roles,
// each scoped to what it uses, and the adapters reach every service with DefaultAzureCredential.
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

@description('The Functions app package (scripts/package_functionapp.sh, zipped) as a blob of the deployments container; the app runs from it, read with its identity.')
param packageBlobName string = 'functionapp.zip'

@description('Address prefix allowed to reach the nodes over SSH (e.g. your office range). Empty: no SSH from outside the VNet.')
param sshSourcePrefix string = ''

@description('Seconds between node heartbeats, and how long a silent node is given before it is unusable (cloud values: a redeploy or a network blip must not fail jobs).')
param heartbeatSeconds int = 10
param nodeTimeoutSeconds int = 300

var computeEnabled = !empty(agentPackage)
var suffix = uniqueString(resourceGroup().id)
var hostStorageName = toLower(take('${name}fn${suffix}', 24))
var dataStorageName = toLower(take('${name}data${suffix}', 24))
var globalName = toLower('${name}-${suffix}') // Cosmos DB, Service Bus and site names are global
var databaseName = 'batchai'
// batchai.adapters.cosmos_store.CONTAINERS: name -> partition key (the identity cannot create them)
var cosmosContainers = [
  { name: 'resources', partitionKey: '/pk' }
  { name: 'nodes', partitionKey: '/id' }
  { name: 'tasks', partitionKey: '/id' }
  { name: 'operations', partitionKey: '/id' }
  { name: 'settings', partitionKey: '/id' }
  { name: 'tokens', partitionKey: '/id' }
  { name: 'audit', partitionKey: '/id' }
]
var outputsContainerName = 'job-outputs'
var dropsContainerName = 'job-drops'
var deploymentsContainerName = 'deployments'
var topicName = 'submissions'
var priorities = ['high', 'normal', 'low'] // batchai.ports.PRIORITIES: one subscription each
var priorityRuleName = 'priority' // servicebus_queue.RULE_NAME
var nodesVnetName = '${name}-nodes'
var nodesSubnetName = 'nodes'

// built-in role definitions
var roles = {
  blobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  blobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  blobDelegator: 'db58b8e5-c6ad-4a2a-8342-4190687cbf4a'
  queueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  tableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  virtualMachineContributor: '9980e02c-c2be-4d73-94e8-173b1dc7cf3c'
  networkContributor: '4d97b98b-1d4f-4787-a291-c67834d212e7'
}
var cosmosDataContributor = '00000000-0000-0000-0000-000000000002' // Cosmos DB Built-in Data Contributor

// --- monitoring: Application Insights on a Log Analytics workspace ----------------------------

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${name}-logs'
  location: location
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${name}-insights'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
  }
}

// --- storage: the Functions host (Durable task hub, app package), and the jobs' data ---------

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: hostStorageName
  location: location
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  properties: {
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
  }
}

resource hostBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: hostStorage
  name: 'default'
}

resource deploymentsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: hostBlobs
  name: deploymentsContainerName
  properties: { publicAccess: 'None' }
}

resource dataStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: dataStorageName
  location: location
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  properties: {
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false // download URLs are user delegation SAS, signed through the identity
  }
}

resource dataBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: dataStorage
  name: 'default'
}

resource outputsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: dataBlobs
  name: outputsContainerName
  properties: { publicAccess: 'None' }
}

resource dropsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: dataBlobs
  name: dropsContainerName
  properties: { publicAccess: 'None' }
}

// --- Cosmos DB: the store; keys disabled, containers made here ---------------------------------

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
    disableLocalAuth: true
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-05-15' = {
  parent: cosmos
  name: databaseName
  properties: { resource: { id: databaseName } }
}

resource containers 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = [for c in cosmosContainers: {
  parent: database
  name: c.name
  properties: {
    resource: {
      id: c.name
      partitionKey: { paths: [c.partitionKey], kind: 'Hash' }
    }
  }
}]

// --- Service Bus: the submissions topic, one filtered subscription per priority; keys disabled

resource serviceBus 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: take(globalName, 50)
  location: location
  sku: { name: 'Standard', tier: 'Standard' }
  properties: {
    minimumTlsVersion: '1.2'
    disableLocalAuth: true
  }
}

resource topic 'Microsoft.ServiceBus/namespaces/topics@2024-01-01' = {
  parent: serviceBus
  name: topicName
  properties: {
    requiresDuplicateDetection: true // the message id is the idempotency key; cannot be turned on later
    duplicateDetectionHistoryTimeWindow: 'PT10M'
  }
}

resource subscriptions 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2024-01-01' = [for priority in priorities: {
  parent: topic
  name: priority
  properties: {
    maxDeliveryCount: 5
    lockDuration: 'PT30S'
    deadLetteringOnMessageExpiration: true
  }
}]

// The rule ensure_topology (servicebus_queue.py) expects: RULE_NAME with the priority's SQL filter.
resource priorityRules 'Microsoft.ServiceBus/namespaces/topics/subscriptions/rules@2024-01-01' = [for (priority, i) in priorities: {
  parent: subscriptions[i]
  name: priorityRuleName
  properties: {
    filterType: 'SqlFilter'
    sqlFilter: { sqlExpression: 'priority = \'${priority}\'' }
  }
}]

// Every new subscription gets a `$Default` rule with a TrueFilter, which would let every message
// into every subscription; a template cannot delete it, so it is overwritten with the same filter
// (rules without actions are OR-ed into one copy). ensure_topology, when run, deletes it.
resource defaultRules 'Microsoft.ServiceBus/namespaces/topics/subscriptions/rules@2024-01-01' = [for (priority, i) in priorities: {
  parent: subscriptions[i]
  name: '$Default'
  properties: {
    filterType: 'SqlFilter'
    sqlFilter: { sqlExpression: 'priority = \'${priority}\'' }
  }
  dependsOn: [priorityRules[i]] // one rule change at a time per subscription
}]

// --- the nodes' network (only with agentPackage) ---------------------------------------------

resource nodesNsg 'Microsoft.Network/networkSecurityGroups@2024-01-01' = if (computeEnabled) {
  name: '${name}-nodes-nsg'
  location: location
  properties: {
    // the defaults stay: the VNet inside (MPI, the agents' exec service, NFS) and outbound (the
    // control plane, package installs) are allowed, nothing else comes in
    securityRules: empty(sshSourcePrefix) ? [] : [
      {
        name: 'ssh-from-admins'
        properties: {
          priority: 1000
          direction: 'Inbound'
          access: 'Allow'
          protocol: 'Tcp'
          sourceAddressPrefix: sshSourcePrefix
          sourcePortRange: '*'
          destinationAddressPrefix: 'VirtualNetwork'
          destinationPortRange: '22'
        }
      }
    ]
  }
}

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
          networkSecurityGroup: { id: nodesNsg.id }
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

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  name: '${name}-plan'
  location: location
  sku: { name: 'EP1', tier: 'ElasticPremium' }
  kind: 'elastic'
  properties: { reserved: true }
}

resource app 'Microsoft.Web/sites@2023-12-01' = {
  name: take('${name}-api-${suffix}', 60)
  location: location
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      linuxFxVersion: 'PYTHON|3.11'
      ftpsState: 'Disabled'
      minTlsVersion: '1.2'
    }
  }
}

var computeSettings = computeEnabled ? {
  BATCHAI_VMSS_SUBSCRIPTION_ID: subscription().subscriptionId
  BATCHAI_VMSS_RESOURCE_GROUP: resourceGroup().name
  BATCHAI_VMSS_LOCATION: location
  BATCHAI_VMSS_SUBNET_ID: nodesSubnetId
  BATCHAI_AGENT_PACKAGE: agentPackage
} : {}

// Set apart from the site so that they can name it (BATCHAI_PUBLIC_URL), and only once its roles exist.
resource appSettings 'Microsoft.Web/sites/config@2023-12-01' = {
  parent: app
  name: 'appsettings'
  properties: union({
    FUNCTIONS_EXTENSION_VERSION: '~4'
    FUNCTIONS_WORKER_RUNTIME: 'python'
    AzureWebJobsFeatureFlags: 'EnableWorkerIndexing'
    // the host and the Durable task hub reach their storage with the identity (no connection string)
    AzureWebJobsStorage__accountName: hostStorage.name
    // no Azure Files content share (it would need the account key): the app runs from its package blob
    WEBSITE_RUN_FROM_PACKAGE: '${hostStorage.properties.primaryEndpoints.blob}${deploymentsContainerName}/${packageBlobName}'
    WEBSITE_RUN_FROM_PACKAGE_BLOB_MI_RESOURCE_ID: 'SystemAssigned'
    APPLICATIONINSIGHTS_CONNECTION_STRING: insights.properties.ConnectionString
    BATCHAI_TOKEN: apiToken
    BATCHAI_DATA_DIR: '/home/data/batchai' // vmss-nodes.json; store.db without Cosmos
    BATCHAI_PUBLIC_URL: 'https://${app.properties.defaultHostName}'
    BATCHAI_HEARTBEAT_SECONDS: string(heartbeatSeconds)
    BATCHAI_NODE_TIMEOUT_SECONDS: string(nodeTimeoutSeconds)
    BATCHAI_COSMOS_ENDPOINT: cosmos.properties.documentEndpoint
    BATCHAI_COSMOS_DATABASE: database.name
    BATCHAI_BLOB_CONNECTION_STRING__blobServiceUri: dataStorage.properties.primaryEndpoints.blob
    BATCHAI_BLOB_CONNECTION_STRING__queueServiceUri: dataStorage.properties.primaryEndpoints.queue // the drop trigger's poison queue
    BATCHAI_BLOB_CONTAINER: outputsContainer.name
    BATCHAI_DROP_CONTAINER: dropsContainer.name
    BATCHAI_SERVICEBUS__fullyQualifiedNamespace: '${serviceBus.name}.servicebus.windows.net'
    BATCHAI_SERVICEBUS_TOPIC: topic.name
  }, computeSettings)
  dependsOn: [
    defaultRules // the topic triggers start on a filtered topology
    nodesVnet // the nodes' subnet exists before the first cluster asks for it (when computeEnabled)
    containers
    hostRoles
    outputsRole
    dropsRole
    dataAccountRoles
    topicRoles
    cosmosRole
  ]
}

// --- the app's roles, each on the narrowest scope that serves ----------------------------------

// The Functions host and Durable Functions: blobs (leases, the package), queues and tables of their own account.
resource hostRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in [roles.blobDataOwner, roles.queueDataContributor, roles.tableDataContributor]: {
  name: guid(hostStorage.id, app.id, roleId)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
  }
}]

// Job logs and outputs, and the drop box: read and write those two containers only.
resource outputsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(outputsContainer.id, app.id, roles.blobDataContributor)
  scope: outputsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataContributor)
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource dropsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dropsContainer.id, app.id, roles.blobDataContributor)
  scope: dropsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataContributor)
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// User delegation keys (the download URLs' SAS) and the drop trigger's poison queue: account-wide by nature.
resource dataAccountRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in [roles.blobDelegator, roles.queueDataContributor]: {
  name: guid(dataStorage.id, app.id, roleId)
  scope: dataStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
  }
}]

// Submissions: send to and receive from the topic (its subscriptions), nothing else of the namespace.
resource topicRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in [roles.serviceBusDataSender, roles.serviceBusDataReceiver]: {
  name: guid(topic.id, app.id, roleId)
  scope: topic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
  }
}]

// The store: Cosmos DB's own (data-plane) role, on the one database.
resource cosmosRole 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = {
  parent: cosmos
  name: guid(cosmos.id, app.id, cosmosDataContributor)
  properties: {
    roleDefinitionId: '${cosmos.id}/sqlRoleDefinitions/${cosmosDataContributor}'
    principalId: app.identity.principalId
    scope: '${cosmos.id}/dbs/${databaseName}'
  }
}

// The scale sets (DefaultAzureCredential in VmssCompute): VMs in this resource group, joining the nodes' VNet only.
resource vmRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (computeEnabled) {
  name: guid(resourceGroup().id, app.id, roles.virtualMachineContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.virtualMachineContributor)
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource networkRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (computeEnabled) {
  name: guid(nodesVnetName, app.id, roles.networkContributor)
  scope: nodesVnet
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.networkContributor)
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

output url string = 'https://${app.properties.defaultHostName}'
output appName string = app.name
output principalId string = app.identity.principalId
output hostStorageAccount string = hostStorage.name
output dataStorageAccount string = dataStorage.name
output cosmosEndpoint string = cosmos.properties.documentEndpoint
output serviceBusNamespace string = serviceBus.name
output nodesSubnetId string = computeEnabled ? nodesSubnetId : ''
