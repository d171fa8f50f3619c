// The control plane on Azure: one Function App (HTTP trigger = the ARM API, orchestration and
// activity triggers = the same orchestrations/ and activities/ code as the embedded host) with
// the Durable Functions task hub in its storage account.
// Deploy: az deployment group create -g RG -f infra/main.bicep -p name=batchai apiToken=...
// Compute for cluster nodes (VM scale sets) and the Cosmos/queue adapters come with later issues.

@description('Prefix for every resource name (lower-case letters and digits).')
param name string

@description('Location of every resource.')
param location string = resourceGroup().location

@secure()
@description('The bearer token clients must send (BATCHAI_TOKEN).')
param apiToken string

var storageName = toLower(take('${name}${uniqueString(resourceGroup().id)}', 24))

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

var storageConnection = 'DefaultEndpointsProtocol=https;AccountName=${storage.name};EndpointSuffix=${environment().suffixes.storage};AccountKey=${storage.listKeys().keys[0].value}'

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
      appSettings: [
        { name: 'FUNCTIONS_EXTENSION_VERSION', value: '~4' }
        { name: 'FUNCTIONS_WORKER_RUNTIME', value: 'python' }
        { name: 'AzureWebJobsStorage', value: storageConnection }
        { name: 'AzureWebJobsFeatureFlags', value: 'EnableWorkerIndexing' }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        { name: 'BATCHAI_TOKEN', value: apiToken }
        { name: 'BATCHAI_DATA_DIR', value: '/home/data/batchai' }
      ]
    }
  }
}

output url string = 'https://${app.properties.defaultHostName}'
