"""infra/main.bicep, parsed with a Bicep parser (pycep-parser; the Bicep CLI itself cannot be installed
here, so what only the compiler and ARM check, such as resource types' property names and API versions,
is not checked): every setting the adapters read is set, no shared key is read or left enabled, roles are
data-plane and narrow, and what the code expects to exist is created."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from batchai.adapters import from_env
from batchai.adapters.cosmos_store import CONTAINERS

pycep = pytest.importorskip("pycep", reason="pycep-parser parses the template (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parents[2]
BICEP = ROOT / "infra" / "main.bicep"
# key forms the template must not use: each has a keyless form, read with the managed identity
KEY_FORMS = {"BATCHAI_COSMOS_KEY", "BATCHAI_BLOB_CONNECTION_STRING", "BATCHAI_SERVICEBUS"}
NOT_FOR_FUNCTIONS = {"BATCHAI_DTS_ENDPOINT", "BATCHAI_DTS_TASKHUB"}  # batchai serve's engine; the app runs Durable Functions
SET_BY_PLATFORM = {"WEBSITE_HOSTNAME"}


@pytest.fixture(scope="module")
def template() -> dict:
    return pycep.BicepParser().parse(file_path=BICEP)


def app_settings(template: dict) -> dict:
    """The app settings: the site config's union of its own object and the compute settings (when agentPackage is given)."""
    config = template["resources"]["appSettings"]["config"]
    union = config["properties"]["function"]
    assert union["type"] == "union"
    own, compute = union["parameters"]["arg_1"], union["parameters"]["arg_2"]
    assert compute == "computeSettings"
    conditional = template["variables"]["computeSettings"]["value"]["operator"]
    assert conditional["type"] == "conditional" and conditional["operands"]["condition"] == "computeEnabled"
    return {**own, **conditional["operands"]["true_value"]}


def settings_read_by(path: Path) -> set[str]:
    return set(re.findall(r"\"((?:BATCHAI|WEBSITE)_[A-Za-z0-9_]+)\"", path.read_text()))


def test_the_template_parses_into_the_resources_the_app_needs(template):
    resources = template["resources"]
    for name in ("logs", "insights", "hostStorage", "dataStorage", "cosmos", "database", "containers", "serviceBus", "topic", "app"):
        assert name in resources, name
    assert resources["app"]["config"]["identity"] == {"type": "SystemAssigned"}


def test_every_setting_from_env_reads_is_set_and_no_key_form_is(template):
    settings = app_settings(template)
    read = settings_read_by(ROOT / "batchai" / "adapters" / "from_env.py")
    assert {"BATCHAI_COSMOS_ENDPOINT", "BATCHAI_BLOB_CONTAINER", from_env.BLOB_ACCOUNT_URL, from_env.SERVICEBUS_NAMESPACE} <= read
    missing = read - KEY_FORMS - NOT_FOR_FUNCTIONS - SET_BY_PLATFORM - set(settings)
    assert not missing, f"from_env.py reads settings the template does not set: {sorted(missing)}"
    assert not KEY_FORMS & set(settings) and not NOT_FOR_FUNCTIONS & set(settings)
    # and the Functions app's own: its triggers' connections (identity-based: <prefix>__...) and paths
    app_read = settings_read_by(ROOT / "function_app" / "function_app.py") | set(
        re.findall(r"%(BATCHAI_[A-Z_]+)%", (ROOT / "function_app" / "function_app.py").read_text())
    )
    for name in app_read - SET_BY_PLATFORM:
        assert name in settings or any(s.startswith(f"{name}__") for s in settings), name
    assert "AzureWebJobsStorage__accountName" in settings and "AzureWebJobsStorage" not in settings


def test_no_account_key_or_shared_access_key_is_read_or_enabled(template):
    text = BICEP.read_text()
    for needle in ("listKeys", "listConnectionStrings", "AccountKey", "RootManageSharedAccessKey", "SharedAccessKey", "primaryMasterKey"):
        assert needle not in text, needle
    resources = template["resources"]
    for storage in ("hostStorage", "dataStorage"):
        assert resources[storage]["config"]["properties"]["allowSharedKeyAccess"] is False
    assert resources["cosmos"]["config"]["properties"]["disableLocalAuth"] is True
    assert resources["serviceBus"]["config"]["properties"]["disableLocalAuth"] is True
    settings = app_settings(template)
    assert "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING" not in settings  # an Azure Files share needs the key


def _role_ids(value) -> set[str]:
    """The `roles.<name>` a role assignment names (in its properties or its loop)."""
    found = set()
    if isinstance(value, dict):
        operands = (value.get("operator") or {}).get("operands") if isinstance(value.get("operator"), dict) else None
        if operands and operands.get("operand_1") == "roles":
            found.add(operands["operand_2"])
        for v in value.values():
            found |= _role_ids(v)
    elif isinstance(value, list):
        for v in value:
            found |= _role_ids(v)
    return found


def _config(resource: dict) -> dict:
    """A resource's body, through its loop or condition."""
    config = resource["config"]
    return config["config"] if "loop_type" in config or "condition" in config else config


def test_the_identity_has_data_plane_roles_on_narrow_scopes(template):
    resources = template["resources"]
    roles = template["variables"]["roles"]["value"]
    assert roles["serviceBusDataSender"] == "69a216fc-b8fb-44d8-bc22-1f3c2cd27a39"
    assert roles["serviceBusDataReceiver"] == "4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0"
    assert roles["blobDataContributor"] == "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
    # Cosmos DB built-in data contributor, on the database alone
    cosmos_role = resources["cosmosRole"]["config"]
    assert template["variables"]["cosmosDataContributor"]["value"] == "00000000-0000-0000-0000-000000000002"
    assert cosmos_role["properties"]["scope"] == "${cosmos.id}/dbs/${databaseName}"
    # blob data contributor on the two containers, not the account
    assert _config(resources["outputsRole"])["scope"] == "outputsContainer" and "blobDataContributor" in _role_ids(resources["outputsRole"])
    assert _config(resources["dropsRole"])["scope"] == "dropsContainer" and "blobDataContributor" in _role_ids(resources["dropsRole"])
    # Service Bus sender and receiver on the topic, not the namespace
    assert _config(resources["topicRoles"])["scope"] == "topic"
    assert {"serviceBusDataSender", "serviceBusDataReceiver"} <= _role_ids(resources["topicRoles"])
    # network rights on the nodes' VNet only
    assert _config(resources["networkRole"])["scope"] == "nodesVnet"
    # nothing grants Owner or Contributor (8e3af657..., b24988ac...)
    text = BICEP.read_text()
    assert "8e3af657-a8ff-443f-a75c-2fe8c4bcb635" not in text and "b24988ac-6180-42a0-ab88-20f7382dd24c" not in text


def test_what_the_code_expects_to_exist_is_created(template):
    resources = template["resources"]
    settings = app_settings(template)
    # Cosmos containers, with the partition keys the adapter uses (its identity cannot create them)
    made = {c["name"]: c["partitionKey"] for c in template["variables"]["cosmosContainers"]["value"]}
    assert made == CONTAINERS
    # the blob containers the settings name
    assert resources["outputsContainer"]["config"]["name"] == "outputsContainerName"
    assert settings["BATCHAI_BLOB_CONTAINER"]["operator"]["operands"]["operand_1"] == "outputsContainer"
    assert settings["BATCHAI_DROP_CONTAINER"]["operator"]["operands"]["operand_1"] == "dropsContainer"


def test_global_names_are_unique_and_monitoring_has_a_workspace(template):
    variables = template["variables"]
    assert "uniqueString" in json.dumps(variables["suffix"]) or "unique_string" in json.dumps(variables["suffix"])
    resources = template["resources"]
    assert "${suffix}" in json.dumps(resources["app"]["config"]["name"])
    for name in ("hostStorageName", "dataStorageName", "globalName"):
        assert "suffix" in json.dumps(variables[name]), name
    assert resources["insights"]["config"]["properties"]["WorkspaceResourceId"]["operator"]["operands"]["operand_1"] == "logs"
    assert resources["logs"]["type"] == "Microsoft.OperationalInsights/workspaces"


def test_the_nodes_subnet_has_a_network_security_group(template):
    subnet = _config(template["resources"]["nodesVnet"])["properties"]["subnets"][0]
    assert subnet["properties"]["networkSecurityGroup"]["id"]["operator"]["operands"]["operand_1"] == "nodesNsg"


def test_cloud_liveness_defaults_and_the_function_timeout():
    """Heartbeats every 10 s and 5 minutes before a silent node is unusable (a redeploy must not fail
    jobs); activities (a scale-out's VM calls) may run up to an hour."""
    text = BICEP.read_text()
    assert re.search(r"param heartbeatSeconds int = 10\b", text) and re.search(r"param nodeTimeoutSeconds int = 300\b", text)
    host = json.loads((ROOT / "host.json").read_text())
    hours, minutes, _ = (int(x) for x in host["functionTimeout"].split(":"))
    assert hours * 60 + minutes >= 30
