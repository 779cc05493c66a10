"""Versioned metadata of the ``retune`` summaries, and pure builders.

The experiment tree lives in the event files, so TensorBoard's own data
provider can serve it from any logdir. Each node is one tensor summary of
plugin ``retune`` under its own tag (``retune/node/<node id>``): TensorBoard
keeps only a few samples per tag of a third-party plugin, and one tag per
node means none is ever dropped. The tensor is a scalar string holding the
node record as JSON (see ``docs/formats.md``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

PLUGIN_NAME = "retune"
#: Version of the content of ``plugin_data`` and of the node record.
PROTO_VERSION = 1
NODE_TAG_PREFIX = "retune/node/"
HYPERPARAMETER_TAG_PREFIX = "hyperparameters/"


def create_summary_metadata(kind: str = "node") -> summary_pb2.SummaryMetadata:
    content = json.dumps({"version": PROTO_VERSION, "kind": kind}).encode("utf-8")
    return summary_pb2.SummaryMetadata(
        summary_description="tb-retune experiment tree node",
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=PLUGIN_NAME, content=content
        ),
        data_class=summary_pb2.DATA_CLASS_TENSOR,
    )


def node_tag(node_id: str) -> str:
    return NODE_TAG_PREFIX + node_id


def hyperparameter_tag(name: str) -> str:
    return HYPERPARAMETER_TAG_PREFIX + name


def node_pb(record: Mapping[str, Any]) -> summary_pb2.Summary:
    """A Summary holding one node record (pure; no file is touched)."""
    data = json.dumps(record, sort_keys=True, allow_nan=False, default=str).encode("utf-8")
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(),
        string_val=[data],
    )
    summary = summary_pb2.Summary()
    summary.value.add(tag=node_tag(str(record["id"])), metadata=create_summary_metadata(), tensor=tensor)
    return summary


def decode_node_bytes(raw: bytes | str) -> dict[str, Any]:
    """The node record in a ``retune`` tensor's string; raises ValueError for
    a record that is not one, or that a newer tb-retune wrote."""
    record = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    if not isinstance(record, dict) or not {"id", "branch", "step"} <= record.keys():
        raise ValueError("retune node record without an id, branch and step")
    if int(record.get("version", 0)) > PROTO_VERSION:
        raise ValueError(
            f"retune node record of version {record['version']} is newer than this tb-retune "
            f"({PROTO_VERSION}); upgrade tb-retune"
        )
    return record


def decode_node(tensor_proto: tensor_pb2.TensorProto) -> dict[str, Any]:
    """The node record of a ``retune`` tensor (inverse of :func:`node_pb`)."""
    return decode_node_bytes(tensor_proto.string_val[0] if tensor_proto.string_val else b"")
