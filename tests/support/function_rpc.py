"""The messages of the Functions host's gRPC protocol (FunctionRpc.proto) that indexing fills in.

The Python worker's library (`azure_functions_runtime`) is handed its protobuf classes by the
worker process that talks to the host; no package ships them for this Python. These are the same
messages, field names and enum values, for the fields indexing sets, built at run time, so that a
field the loader fills under a name the host does not know fails here as it would there.
"""

from __future__ import annotations

from types import SimpleNamespace

from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2, message_factory

F = descriptor_pb2.FieldDescriptorProto


def _field(message, name: str, number: int, kind: int, *, type_name: str = "", repeated: bool = False) -> None:
    field = message.field.add(name=name, number=number, type=kind, label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
    if type_name:  # set, even empty, it would say the field is of a named type
        field.type_name = type_name


def _map(file, message, name: str, number: int, value_kind: int, value_type: str = "") -> None:
    entry = message.nested_type.add(name="".join(p.capitalize() for p in name.split("_")) + "Entry")
    entry.options.map_entry = True
    _field(entry, "key", 1, F.TYPE_STRING)
    _field(entry, "value", 2, value_kind, type_name=value_type)
    _field(message, name, number, F.TYPE_MESSAGE, type_name=f".{file.package}.{message.name}.{entry.name}", repeated=True)


def _build() -> SimpleNamespace:
    file = descriptor_pb2.FileDescriptorProto(name="batchai_tests/FunctionRpc.proto", package="AzureFunctionsRpcMessages", syntax="proto3")
    file.dependency.append("google/protobuf/duration.proto")
    binding = file.message_type.add(name="BindingInfo")
    binding.enum_type.add(name="Direction").value.extend(
        [descriptor_pb2.EnumValueDescriptorProto(name=n, number=i) for i, n in enumerate(("in", "out", "inout"))]
    )
    binding.enum_type.add(name="DataType").value.extend(
        [descriptor_pb2.EnumValueDescriptorProto(name=n, number=i) for i, n in enumerate(("undefined", "string", "binary", "stream"))]
    )
    _field(binding, "type", 2, F.TYPE_STRING)
    _field(binding, "direction", 3, F.TYPE_ENUM, type_name=".AzureFunctionsRpcMessages.BindingInfo.Direction")
    _field(binding, "data_type", 4, F.TYPE_ENUM, type_name=".AzureFunctionsRpcMessages.BindingInfo.DataType")
    _map(file, binding, "properties", 5, F.TYPE_STRING)

    retry = file.message_type.add(name="RpcRetryOptions")
    retry.enum_type.add(name="RetryStrategy").value.extend(
        [descriptor_pb2.EnumValueDescriptorProto(name=n, number=i) for i, n in enumerate(("exponential_backoff", "fixed_delay"))]
    )
    _field(retry, "max_retry_count", 2, F.TYPE_INT32)
    _field(retry, "delay_interval", 3, F.TYPE_MESSAGE, type_name=".google.protobuf.Duration")
    _field(retry, "minimum_interval", 4, F.TYPE_MESSAGE, type_name=".google.protobuf.Duration")
    _field(retry, "maximum_interval", 5, F.TYPE_MESSAGE, type_name=".google.protobuf.Duration")
    _field(retry, "retry_strategy", 6, F.TYPE_ENUM, type_name=".AzureFunctionsRpcMessages.RpcRetryOptions.RetryStrategy")

    metadata = file.message_type.add(name="RpcFunctionMetadata")
    for name, number, kind in (
        ("name", 4, F.TYPE_STRING),
        ("directory", 1, F.TYPE_STRING),
        ("script_file", 2, F.TYPE_STRING),
        ("entry_point", 3, F.TYPE_STRING),
        ("is_proxy", 7, F.TYPE_BOOL),
        ("function_id", 13, F.TYPE_STRING),
        ("managed_dependency_enabled", 14, F.TYPE_BOOL),
        ("language", 16, F.TYPE_STRING),
    ):
        _field(metadata, name, number, kind)
    _map(file, metadata, "bindings", 6, F.TYPE_MESSAGE, ".AzureFunctionsRpcMessages.BindingInfo")
    _field(metadata, "raw_bindings", 10, F.TYPE_STRING, repeated=True)
    _field(metadata, "retry_options", 15, F.TYPE_MESSAGE, type_name=".AzureFunctionsRpcMessages.RpcRetryOptions")
    _map(file, metadata, "properties", 17, F.TYPE_STRING)

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(duration_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(file)
    return SimpleNamespace(
        **{
            name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"AzureFunctionsRpcMessages.{name}"))
            for name in ("BindingInfo", "RpcRetryOptions", "RpcFunctionMetadata")
        }
    )


protos = _build()
