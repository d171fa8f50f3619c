"""The resource model: request bodies as pydantic models (camelCase on the wire), validation
with ARM-style errors (`parse`), name rules, job files and response redaction."""

from batchai.model.cluster import (
    AppInsightsReference,
    AutoScaleSettings,
    ClusterCreateParameters,
    ClusterProperties,
    ClusterUpdateParameters,
    ClusterUpdateProperties,
    ImageReference,
    ManualScaleSettings,
    NodeSetup,
    PerformanceCountersSettings,
    ScaleSettings,
    SetupTask,
    UserAccountSettings,
    VirtualMachineConfiguration,
)
from batchai.model.common import (
    Duration,
    EnvironmentVariable,
    EnvironmentVariableWithSecretValue,
    FieldError,
    KeyVaultSecretReference,
    ResourceId,
    WireModel,
    api_error_from,
    format_duration,
    format_loc,
    parse,
    parse_duration,
)
from batchai.model.fileserver import DataDisks, FileServerCreateParameters, FileServerProperties, SshConfiguration
from batchai.model.job import (
    DEFAULT_MAX_WALL_CLOCK_TIME,
    TOOL_TYPES,
    TOOLKITS,
    Caffe2Settings,
    CaffeSettings,
    ChainerSettings,
    CNTKsettings,
    ContainerSettings,
    CustomMpiSettings,
    CustomToolkitSettings,
    HorovodSettings,
    ImageSourceRegistry,
    InputDirectory,
    JobBasePropertiesConstraints,
    JobCreateParameters,
    JobPreparation,
    JobProperties,
    OutputDirectory,
    PrivateRegistryCredentials,
    PyTorchSettings,
    TensorFlowSettings,
)
from batchai.model.jobfile import load_job_file, substitute
from batchai.model.mounts import (
    AzureBlobFileSystemReference,
    AzureFileShareReference,
    AzureStorageCredentialsInfo,
    FileServerReference,
    MountVolumes,
    UnmanagedFileSystemReference,
    account_from_url,
)
from batchai.model.names import validate_name, validate_resource_group
from batchai.model.redact import redact_cluster, redact_file_server, redact_job
from batchai.model.workspace import WorkspaceCreateParameters, WorkspaceUpdateParameters

__all__ = [
    "AppInsightsReference", "AutoScaleSettings", "AzureBlobFileSystemReference", "AzureFileShareReference",
    "AzureStorageCredentialsInfo", "CNTKsettings", "Caffe2Settings", "CaffeSettings", "ChainerSettings",
    "ClusterCreateParameters", "ClusterProperties", "ClusterUpdateParameters", "ClusterUpdateProperties",
    "ContainerSettings", "CustomMpiSettings", "CustomToolkitSettings", "DEFAULT_MAX_WALL_CLOCK_TIME", "DataDisks",
    "Duration", "EnvironmentVariable", "EnvironmentVariableWithSecretValue", "FieldError",
    "FileServerCreateParameters", "FileServerProperties", "FileServerReference", "HorovodSettings",
    "ImageReference", "ImageSourceRegistry", "InputDirectory", "JobBasePropertiesConstraints",
    "JobCreateParameters", "JobPreparation", "JobProperties", "KeyVaultSecretReference", "ManualScaleSettings",
    "MountVolumes", "NodeSetup", "OutputDirectory", "PerformanceCountersSettings", "PrivateRegistryCredentials",
    "PyTorchSettings", "ResourceId", "ScaleSettings", "SetupTask", "SshConfiguration", "TOOLKITS", "TOOL_TYPES",
    "TensorFlowSettings", "UnmanagedFileSystemReference", "UserAccountSettings", "VirtualMachineConfiguration",
    "WireModel", "WorkspaceCreateParameters", "WorkspaceUpdateParameters", "account_from_url", "api_error_from",
    "format_duration", "format_loc", "load_job_file", "parse", "parse_duration", "redact_cluster",
    "redact_file_server", "redact_job", "substitute", "validate_name", "validate_resource_group",
]
