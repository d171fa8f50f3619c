"""Jobs: the create body (`JobCreateParameters`), its toolkit settings and the defaults the
service filled in (reference §3.1, §3.7).

Exactly one of the nine `*Settings` fields is given; `JobProperties.tool_type` names it and
`JobProperties.toolkit()` returns it. Defaults are filled in by the validator so `to_wire()`
echoes them as the service did: `schedulingPriority`, `constraints.maxWallClockTime` (P7D),
`processCount` (= nodeCount), TensorFlow `workerCount` / `parameterServerCount`, CNTK
`languageType` (inferred from which script field is given).

`cluster` is required unless validation runs with context `{"require_cluster": False}`
(what `load_job_file` does for raw job files that name no cluster); it is then left None.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, model_validator

from batchai.model.common import (
    Duration,
    EnvironmentVariable,
    EnvironmentVariableWithSecretValue,
    FieldError,
    JobNodeCount,
    KeyVaultSecretReference,
    NonEmptyStr,
    NonNegativeInt,
    PositiveInt,
    ProcessCount,
    ResourceId,
    ServerCount,
    WireModel,
    _ci_enum,
    check_unique_names,
    matching,
)
from batchai.model.mounts import MountVolumes

# The id names the variable AZ_BATCHAI_INPUT_<id> / AZ_BATCHAI_OUTPUT_<id>: it must be usable as `$NAME`.
DirectoryId = Annotated[str, matching(r"[A-Za-z0-9_]+", "an id becomes part of a variable name: only letters, digits and '_'")]
SchedulingPriority = Annotated[Literal["low", "normal", "high"], _ci_enum("low", "normal", "high")]
LanguageType = Annotated[Literal["Python", "BrainScript"], _ci_enum("Python", "BrainScript")]


# -- toolkits -------------------------------------------------------------------------------


class CNTKsettings(WireModel):
    language_type: LanguageType | None = None
    config_file_path: str | None = None
    python_script_file_path: str | None = None
    python_interpreter_path: str | None = None
    command_line_args: str | None = None
    process_count: ProcessCount | None = None

    @model_validator(mode="after")
    def _language(self):
        if self.language_type is None:
            if self.python_script_file_path and not self.config_file_path:
                self.language_type = "Python"
            elif self.config_file_path and not self.python_script_file_path:
                self.language_type = "BrainScript"
            elif self.config_file_path and self.python_script_file_path:
                raise FieldError(
                    "only one of 'configFilePath' (BrainScript) or 'pythonScriptFilePath' (Python) may be given",
                    targets=[("configFilePath",), ("pythonScriptFilePath",)],
                )
            else:
                raise FieldError(
                    "either 'configFilePath' (BrainScript) or 'pythonScriptFilePath' (Python) is required",
                    targets=[("configFilePath",), ("pythonScriptFilePath",)],
                )
        if self.language_type == "BrainScript":
            if not self.config_file_path:
                raise FieldError("is required when languageType is 'BrainScript'", loc=("configFilePath",))
            if self.python_script_file_path:
                raise FieldError("can be given only when languageType is 'Python'", loc=("pythonScriptFilePath",))
            if self.python_interpreter_path:
                raise FieldError("can be given only when languageType is 'Python'", loc=("pythonInterpreterPath",))
        else:
            if not self.python_script_file_path:
                raise FieldError("is required when languageType is 'Python'", loc=("pythonScriptFilePath",))
            if self.config_file_path:
                raise FieldError("can be given only when languageType is 'BrainScript'", loc=("configFilePath",))
        return self


class PyTorchSettings(WireModel):
    python_script_file_path: NonEmptyStr
    python_interpreter_path: str | None = None
    command_line_args: str | None = None
    process_count: ProcessCount | None = None
    communication_backend: str | None = None


class TensorFlowSettings(WireModel):
    python_script_file_path: NonEmptyStr
    python_interpreter_path: str | None = None
    master_command_line_args: str | None = None
    worker_command_line_args: str | None = None
    parameter_server_command_line_args: str | None = None
    worker_count: ProcessCount | None = None
    parameter_server_count: ServerCount | None = None


class CaffeSettings(WireModel):
    config_file_path: str | None = None
    python_script_file_path: str | None = None
    python_interpreter_path: str | None = None
    command_line_args: str | None = None
    process_count: ProcessCount | None = None

    @model_validator(mode="after")
    def _one_entry_point(self):
        if bool(self.config_file_path) == bool(self.python_script_file_path):
            raise FieldError(
                "exactly one of 'configFilePath' or 'pythonScriptFilePath' must be given",
                targets=[("configFilePath",), ("pythonScriptFilePath",)],
            )
        if self.python_interpreter_path and not self.python_script_file_path:
            raise FieldError("can be given only with 'pythonScriptFilePath'", loc=("pythonInterpreterPath",))
        return self


class Caffe2Settings(WireModel):
    python_script_file_path: NonEmptyStr
    python_interpreter_path: str | None = None
    command_line_args: str | None = None


class ChainerSettings(WireModel):
    python_script_file_path: NonEmptyStr
    python_interpreter_path: str | None = None
    command_line_args: str | None = None
    process_count: ProcessCount | None = None


class CustomToolkitSettings(WireModel):
    command_line: str | None = None


class CustomMpiSettings(WireModel):
    command_line: NonEmptyStr
    process_count: ProcessCount | None = None


class HorovodSettings(WireModel):
    python_script_file_path: NonEmptyStr
    python_interpreter_path: str | None = None
    command_line_args: str | None = None
    process_count: ProcessCount | None = None


# field name -> (wire name, toolType)
TOOLKITS: dict[str, tuple[str, str]] = {
    "cntk_settings": ("cntkSettings", "cntk"),
    "py_torch_settings": ("pyTorchSettings", "pytorch"),
    "tensor_flow_settings": ("tensorFlowSettings", "tensorflow"),
    "caffe_settings": ("caffeSettings", "caffe"),
    "caffe2_settings": ("caffe2Settings", "caffe2"),
    "chainer_settings": ("chainerSettings", "chainer"),
    "custom_toolkit_settings": ("customToolkitSettings", "custom"),
    "custom_mpi_settings": ("customMpiSettings", "custommpi"),
    "horovod_settings": ("horovodSettings", "horovod"),
}
TOOL_TYPES = tuple(t for _, t in TOOLKITS.values())
_PROCESS_COUNT_DEFAULTS = (
    "cntk_settings",
    "py_torch_settings",
    "horovod_settings",
    "custom_mpi_settings",
    "chainer_settings",
    "caffe_settings",
)


# -- the rest of a job ------------------------------------------------------------------------


class PrivateRegistryCredentials(WireModel):
    username: NonEmptyStr
    password: str | None = None
    password_secret_reference: KeyVaultSecretReference | None = None

    @model_validator(mode="after")
    def _at_most_one(self):
        if self.password is not None and self.password_secret_reference is not None:
            raise FieldError(
                "only one of 'password' or 'passwordSecretReference' may be given", targets=[("password",), ("passwordSecretReference",)]
            )
        return self


class ImageSourceRegistry(WireModel):
    server_url: str | None = None
    image: NonEmptyStr
    credentials: PrivateRegistryCredentials | None = None


class ContainerSettings(WireModel):
    image_source_registry: ImageSourceRegistry
    shm_size: str | None = None


class JobPreparation(WireModel):
    command_line: NonEmptyStr


class InputDirectory(WireModel):
    id: DirectoryId
    path: NonEmptyStr


class OutputDirectory(WireModel):
    id: DirectoryId
    path_prefix: NonEmptyStr
    path_suffix: str | None = None


DEFAULT_MAX_WALL_CLOCK_TIME = timedelta(days=7)

# Tasks of one array (Slurm's MaxArraySize is 1001 by default): each task is a stored record.
MAX_ARRAY_TASKS = 10_000
MAX_TASK_RETRIES = 100
MAX_GPUS_PER_NODE = 64


class ArraySettings(WireModel):
    """An addition to 2018-05-01 (README): `count` tasks of the job's spec, each told its
    AZ_BATCHAI_TASK_INDEX; at most `maxParallel` running at once; a failed task retried alone."""

    count: Annotated[PositiveInt, Field(le=MAX_ARRAY_TASKS)]
    max_parallel: PositiveInt | None = None
    max_task_retries: Annotated[NonNegativeInt, Field(le=MAX_TASK_RETRIES)] = 0


class JobBasePropertiesConstraints(WireModel):
    max_wall_clock_time: Duration = DEFAULT_MAX_WALL_CLOCK_TIME

    @model_validator(mode="after")
    def _positive(self):
        if self.max_wall_clock_time <= timedelta(0):
            raise FieldError("must be a positive duration", loc=("maxWallClockTime",))
        return self


class JobProperties(WireModel):
    scheduling_priority: SchedulingPriority = "normal"
    cluster: ResourceId | None = None
    mount_volumes: MountVolumes | None = None
    node_count: JobNodeCount
    container_settings: ContainerSettings | None = None
    cntk_settings: CNTKsettings | None = None
    py_torch_settings: PyTorchSettings | None = None
    tensor_flow_settings: TensorFlowSettings | None = None
    caffe_settings: CaffeSettings | None = None
    caffe2_settings: Caffe2Settings | None = None
    chainer_settings: ChainerSettings | None = None
    custom_toolkit_settings: CustomToolkitSettings | None = None
    custom_mpi_settings: CustomMpiSettings | None = None
    horovod_settings: HorovodSettings | None = None
    job_preparation: JobPreparation | None = None
    std_out_err_path_prefix: NonEmptyStr
    input_directories: list[InputDirectory] | None = None
    output_directories: list[OutputDirectory] | None = None
    environment_variables: list[EnvironmentVariable] | None = None
    secrets: list[EnvironmentVariableWithSecretValue] | None = None
    constraints: JobBasePropertiesConstraints = Field(default_factory=JobBasePropertiesConstraints)
    array_settings: ArraySettings | None = None
    # beyond Batch AI (README): share each node, taking this many of its GPUs, instead of taking it whole
    gpus_per_node: Annotated[PositiveInt, Field(le=MAX_GPUS_PER_NODE)] | None = None

    @model_validator(mode="after")
    def _check_and_fill(self, info: ValidationInfo):
        require_cluster = (info.context or {}).get("require_cluster", True) if info is not None else True
        if self.cluster is None and require_cluster:
            raise FieldError("is required", loc=("cluster",), missing=True)
        given = [name for name in TOOLKITS if getattr(self, name) is not None]
        if len(given) != 1:
            names = ", ".join(TOOLKITS[n][0] for n in TOOLKITS)
            if not given:
                raise FieldError(
                    f"exactly one toolkit setting must be given, one of: {names}", targets=[(TOOLKITS[n][0],) for n in TOOLKITS]
                )
            raise FieldError(
                f"exactly one toolkit setting may be given, but found {len(given)}: " + ", ".join(TOOLKITS[n][0] for n in given),
                targets=[(TOOLKITS[n][0],) for n in given],
            )
        for key, attr in (("inputDirectories", "input_directories"), ("outputDirectories", "output_directories")):
            seen: set[str] = set()
            for i, d in enumerate(getattr(self, attr) or []):
                if d.id in seen:
                    raise FieldError(f"the id '{d.id}' is used by more than one directory", loc=(key, i, "id"))
                seen.add(d.id)
        check_unique_names(self.environment_variables, "environment variable", "environmentVariables")
        check_unique_names(self.secrets, "secret", "secrets")
        self.fill_defaults()
        return self

    def fill_defaults(self) -> None:
        """The defaults the service filled in from nodeCount (only where not given)."""
        name = next(n for n in TOOLKITS if getattr(self, n) is not None)
        settings = getattr(self, name)
        if name in _PROCESS_COUNT_DEFAULTS and settings.process_count is None:
            settings.process_count = self.node_count
        if name == "tensor_flow_settings":
            if settings.worker_count is None:
                settings.worker_count = self.node_count
            if settings.parameter_server_count is None:
                settings.parameter_server_count = 1 if (self.node_count > 1 or settings.worker_count > 1) else 0
            if settings.parameter_server_count > self.node_count:
                raise FieldError(f"must not exceed nodeCount ({self.node_count})", loc=("tensorFlowSettings", "parameterServerCount"))

    @property
    def tool_type(self) -> str:
        """cntk, tensorflow, caffe, caffe2, chainer, pytorch, horovod, custommpi or custom."""
        for name, (_, tool) in TOOLKITS.items():
            if getattr(self, name) is not None:
                return tool
        raise ValueError("the job has no toolkit settings")

    @property
    def toolkit_field(self) -> str:
        """The wire name of the toolkit settings given, e.g. 'pyTorchSettings'."""
        for name, (wire, _) in TOOLKITS.items():
            if getattr(self, name) is not None:
                return wire
        raise ValueError("the job has no toolkit settings")

    def toolkit(self):
        """The one toolkit settings object (e.g. a `PyTorchSettings`)."""
        for name in TOOLKITS:
            value = getattr(self, name)
            if value is not None:
                return value
        raise ValueError("the job has no toolkit settings")


class JobCreateParameters(WireModel):
    properties: JobProperties
