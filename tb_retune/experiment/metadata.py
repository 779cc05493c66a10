"""Versioned metadata of the ``retune`` summaries, and pure builders.

The experiment tree lives in the event files, so TensorBoard's own data
provider can serve it from any logdir. Each node is one tensor summary of
plugin ``retune`` under its own tag (``retune/node/<node id>``): TensorBoard
keeps only a few samples per tag of a third-party plugin, and one tag per
node means none is ever dropped. The tensor is a scalar string holding the
node record as JSON (see ``docs/formats.md``). A note on a node is a record
of its own (``retune/note/<node id>``, kind ``note``): the latest one, by its
``time``, is the node's note; TensorBoard's reservoir always keeps the last
sample of a tag.
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
#: A note on a node: one tag per node, the latest record (by ``time``) wins.
NOTE_TAG_PREFIX = "retune/note/"
HYPERPARAMETER_TAG_PREFIX = "hyperparameters/"


def create_summary_metadata(kind: str = "node") -> summary_pb2.SummaryMetadata:
    content = json.dumps({"version": PROTO_VERSION, "kind": kind}).encode("utf-8")
    return summary_pb2.SummaryMetadata(
        summary_description=f"tb-retune experiment tree {kind}",
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=PLUGIN_NAME, content=content
        ),
        data_class=summary_pb2.DATA_CLASS_TENSOR,
    )


def node_tag(node_id: str) -> str:
    return NODE_TAG_PREFIX + node_id


def hyperparameter_tag(name: str) -> str:
    return HYPERPARAMETER_TAG_PREFIX + name


def note_tag(node_id: str) -> str:
    return NOTE_TAG_PREFIX + node_id


def _record_pb(tag: str, kind: str, record: Mapping[str, Any]) -> summary_pb2.Summary:
    data = json.dumps(record, sort_keys=True, allow_nan=False, default=str).encode("utf-8")
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(),
        string_val=[data],
    )
    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, metadata=create_summary_metadata(kind), tensor=tensor)
    return summary


def node_pb(record: Mapping[str, Any]) -> summary_pb2.Summary:
    """A Summary holding one node record (pure; no file is touched)."""
    return _record_pb(node_tag(str(record["id"])), "node", record)


def note_record(node_id: str, text: str, time: float) -> dict[str, Any]:
    """The note record of ``node_id`` (``text`` ``""``: the note was removed)."""
    return {"version": PROTO_VERSION, "kind": "note", "node": node_id, "text": text, "time": time}


def note_pb(record: Mapping[str, Any]) -> summary_pb2.Summary:
    """A Summary holding one note record, under ``retune/note/<node id>`` (pure)."""
    return _record_pb(note_tag(str(record["node"])), "note", record)


def decode_note_bytes(raw: bytes | str) -> dict[str, Any]:
    """The note record in a ``retune`` tensor's string; raises ValueError for
    one that is not a note record, or that a newer tb-retune wrote."""
    record = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    if not isinstance(record, dict) or record.get("kind") != "note":
        raise ValueError("retune note record without kind 'note'")
    if int(record.get("version", 0)) > PROTO_VERSION:
        raise ValueError(
            f"retune note record of version {record['version']} is newer than this tb-retune "
            f"({PROTO_VERSION}); upgrade tb-retune"
        )
    node, text, when = record.get("node"), record.get("text"), record.get("time")
    if not isinstance(node, str) or not node or not isinstance(text, str):
        raise ValueError("retune note record needs a node id and a text")
    if isinstance(when, bool) or not isinstance(when, (int, float)):
        raise ValueError("retune note record needs a time (a number)")
    return record


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


def _is_step(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return value >= 0 and float(value).is_integer()


def record_problem(record: Mapping[str, Any]) -> str | None:
    """What makes a decoded node record unusable for the tree, or None.

    The tree is drawn from the records that pass; one that does not is
    skipped with this reason as a warning (a hand-made or damaged event file
    must not hide the rest of the experiment).
    """
    checks: list[tuple[str, bool, str]] = [
        ("id", isinstance(record.get("id"), str) and bool(record.get("id")), "a non-empty string"),
        ("branch", isinstance(record.get("branch"), str) and bool(record.get("branch")), "a non-empty string"),
        ("step", _is_step(record.get("step")), "a step number (an integer >= 0)"),
        ("parent", record.get("parent") is None or isinstance(record.get("parent"), str), "a node id or null"),
        ("seq", record.get("seq") is None or _is_step(record.get("seq")), "an integer >= 0"),
        ("time", record.get("time") is None or (isinstance(record.get("time"), (int, float))
                                                and not isinstance(record.get("time"), bool)), "a number"),
        ("hyperparameters", record.get("hyperparameters") is None or isinstance(record.get("hyperparameters"), dict),
         "an object of name: value"),
        ("restore", record.get("restore") is None or isinstance(record.get("restore"), dict), "an object or null"),
        ("reason", record.get("reason") is None or isinstance(record.get("reason"), str), "a string"),
    ]
    for key, ok, wanted in checks:
        if not ok:
            shown = json.dumps(record.get(key), default=str)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            return f"{key} must be {wanted}, got {shown}"
    return None


def decode_node(tensor_proto: tensor_pb2.TensorProto) -> dict[str, Any]:
    """The node record of a ``retune`` tensor (inverse of :func:`node_pb`)."""
    return decode_node_bytes(tensor_proto.string_val[0] if tensor_proto.string_val else b"")
