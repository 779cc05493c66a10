"""Issue 14 items 8, 9, 12, 13, 14, 15 through the real TensorBoard WSGI app: nothing hung,
nothing leaked, nothing served from outside the experiment, bad input answered with 4xx."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from tb_retune.experiment import metadata
from tb_retune.experiment.atomic import atomic_write_json
from tb_retune.testing.synthetic import make_experiment
from tests.plugin_support import App, strict_json

GOOD = {"experiment": "exp", "hyperparameters": {"momentum": 0.5}}
SECRET = "TOP-SECRET-OUTSIDE-THE-LOGDIR"


@pytest.fixture
def logdir(tmp_path: Any) -> str:
    make_experiment(str(tmp_path / "logdir" / "exp"), branches=2, nodes=4)
    return str(tmp_path / "logdir")


def control_path(logdir: str) -> str:
    return os.path.join(logdir, "exp", "retune.json")


def error_of(response: Any, code: int) -> str:
    assert response.status_code == code, (response.status_code, response.data[:500])
    body = strict_json(response.data)
    assert set(body) == {"error"} and "Traceback" not in body["error"]
    return str(body["error"])


def within(seconds: float, fn: Callable[[], Any]) -> Any:
    """Runs ``fn`` on a thread; fails if it has not returned after ``seconds`` (a hang)."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    return out[0]


# -- item 12: DNS rebinding ------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "code"),
    [("rebind.evil.example:6006", 403), ("localhost.evil.example:6006", 403), ("10.1.2.3:6006", 403),
     ("localhost:6006", 200), ("127.0.0.1:6006", 200), ("127.8.9.1", 200), ("[::1]:6006", 200),
     ("LOCALHOST", 200), ("app.localhost:6006", 200)],
)
def test_writes_only_for_a_host_that_names_this_server(logdir: str, host: str, code: int) -> None:
    app = App(logdir)
    # A rebinding page is its own origin: Origin and Host agree.
    r = app.post("hyperparameters", GOOD, headers={"Host": host, "Origin": f"http://{host}"})
    if code == 403:
        message = error_of(r, 403)
        assert "does not name this TensorBoard" in message and "TB_RETUNE_ALLOWED_HOSTS" in message
        assert not os.path.exists(control_path(logdir))
        r = app.post("restore", {"experiment": "exp", "branch": "main", "step": 100},
                     headers={"Host": host, "Origin": f"http://{host}"})
        error_of(r, 403)
    else:
        assert r.status_code == 200, r.data
    # Reads are TensorBoard's to serve to any Host.
    assert app.get("status?experiment=exp", headers={"Host": host}).status_code == 200


def test_the_host_flag_and_the_allowed_hosts_variable(logdir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    headers = {"Host": "gpu-box.lab:6006", "Origin": "http://gpu-box.lab:6006"}
    error_of(App(logdir).post("hyperparameters", GOOD, headers=headers), 403)
    assert App(logdir, host="gpu-box.lab").post("hyperparameters", GOOD, headers=headers).status_code == 200
    ip = {"Host": "192.168.7.7:6006", "Origin": "http://192.168.7.7:6006"}
    assert App(logdir, host="192.168.7.7").post("hyperparameters", GOOD, headers=ip).status_code == 200
    assert App(logdir, bind_all=True).post("hyperparameters", GOOD, headers=ip).status_code == 200
    error_of(App(logdir, bind_all=True).post("hyperparameters", GOOD, headers=headers), 403)
    monkeypatch.setenv("TB_RETUNE_ALLOWED_HOSTS", " tb.example.org , gpu-box.lab")
    assert App(logdir).post("hyperparameters", GOOD, headers=headers).status_code == 200
    evil = {"Host": "rebind.evil.example", "Origin": "http://rebind.evil.example"}
    error_of(App(logdir).post("hyperparameters", GOOD, headers=evil), 403)
    monkeypatch.setenv("TB_RETUNE_ALLOWED_HOSTS", "*")
    assert App(logdir).post("hyperparameters", GOOD, headers=evil).status_code == 200


# -- item 14: bodies and files bounded -------------------------------------------------


def test_nested_and_duplicate_bodies_are_400(logdir: str) -> None:
    app = App(logdir)
    deep = '{"experiment": "exp", "hyperparameters": ' + "[" * 30_000 + "]" * 30_000 + "}"
    assert len(deep) < 64 * 1024
    assert "request body: nested deeper than 8 levels" in error_of(app.post("hyperparameters", deep), 400)
    dup = '{"experiment": "exp", "hyperparameters": {"momentum": 2, "momentum": 0.5}}'
    assert "hyperparameters.momentum: given twice in request body (2 and 0.5)" in error_of(
        app.post("hyperparameters", dup), 400)
    huge = '{"experiment": "exp", "branch": "main", "step": ' + "9" * 5000 + "}"
    assert "step: an integer of 5000 digits" in error_of(app.post("restore", huge), 400)
    assert not os.path.exists(control_path(logdir))


def test_a_hand_written_nested_control_file_can_be_seen_and_repaired(logdir: str) -> None:
    app = App(logdir)
    with open(control_path(logdir), "w") as f:
        f.write('{"hyperparameters": ' + "[" * 100_000)
    status = strict_json(app.get("status?experiment=exp").data)
    assert status["control_file"] is None and "nested deeper than 32 levels" in status["control_error"]
    r = app.post("hyperparameters", GOOD)
    assert r.status_code == 200, r.data
    with open(control_path(logdir)) as f:
        assert json.load(f)["hyperparameters"] == {"momentum": 0.5}


def test_a_control_file_linked_to_dev_zero_is_refused_unread(logdir: str) -> None:
    app = App(logdir)
    os.symlink("/dev/zero", control_path(logdir))
    status = strict_json(within(60, lambda: app.get("status?experiment=exp")).data)
    assert "outside the experiment folder" in status["control_error"]
    message = error_of(within(60, lambda: app.post("hyperparameters", GOOD)), 409)
    assert "retune.json: is a link to /dev/zero, outside the experiment folder" in message
    assert os.path.islink(control_path(logdir))  # nothing was written


def test_links_out_of_the_experiment_are_never_served(logdir: str, tmp_path: Any) -> None:
    app = App(logdir)
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"hyperparameters": {"momentum": 0.1}, "note": SECRET}))
    os.symlink(str(outside), control_path(logdir))
    r = app.get("status?experiment=exp")
    assert r.status_code == 200 and SECRET.encode() not in r.data
    assert "is a link to" in strict_json(r.data)["control_error"]
    assert "is a link to" in error_of(app.post("hyperparameters", GOOD), 409)
    assert SECRET in outside.read_text()  # not replaced, not written through
    # The status file too: its contents are not served from outside.
    status_path = os.path.join(logdir, "exp", "retune-status.json")
    secret_status = tmp_path / "status.json"
    with open(status_path) as f:
        secret_status.write_text(json.dumps(dict(json.load(f), note=SECRET)))
    os.remove(status_path)
    os.symlink(str(secret_status), status_path)
    r = app.get("status?experiment=exp")
    assert r.status_code == 200 and SECRET.encode() not in r.data
    assert "outside the experiment folder" in strict_json(r.data)["status_error"]
    assert SECRET.encode() not in app.get("tree?experiment=exp").data


def test_a_fifo_or_a_folder_as_control_file_never_blocks(logdir: str) -> None:
    app = App(logdir)
    os.mkfifo(control_path(logdir))
    status = strict_json(within(60, lambda: app.get("status?experiment=exp")).data)
    assert "retune.json: is a FIFO (named pipe), not a file" in status["control_error"]
    assert "FIFO" in error_of(within(60, lambda: app.post("hyperparameters", GOOD)), 409)
    # The experiment's write lock was released: a write goes through once the FIFO is gone.
    os.remove(control_path(logdir))
    assert within(60, lambda: app.post("hyperparameters", GOOD)).status_code == 200
    os.remove(control_path(logdir))
    os.mkdir(control_path(logdir))
    status = strict_json(app.get("status?experiment=exp").data)
    assert "retune.json: is a folder, not a file" in status["control_error"]
    error_of(app.post("hyperparameters", GOOD), 409)


# -- item 15: one malformed node record does not hide the tree -------------------------


def write_records(folder: str, records: list[dict[str, Any]], step: int = 0) -> None:
    writer = EventFileWriter(folder)
    for rec in records:
        writer.add_event(event_pb2.Event(step=step, wall_time=time.time(), summary=metadata.node_pb(rec)))
    writer.close()


def test_malformed_records_and_parent_cycles_are_skipped_with_warnings(logdir: str) -> None:
    exp = os.path.join(logdir, "exp")
    bad = {"version": 1, "id": "main-bad", "branch": "main", "step": "abc", "time": None,
           "parent": ["main-1"], "hyperparameters": "lr=0.1"}
    write_records(os.path.join(exp, "main"), [bad])
    cycle = [
        {"version": 1, "id": "loop-1", "branch": "loop", "parent": "loop-2", "step": 10, "time": 1.0,
         "hyperparameters": {"learning_rate": 0.1}},
        {"version": 1, "id": "loop-2", "branch": "loop", "parent": "loop-1", "step": 20, "time": 2.0,
         "hyperparameters": {"learning_rate": 0.2}},
    ]
    write_records(os.path.join(exp, "loop"), cycle)
    app = App(logdir)
    r = app.get("tree?experiment=exp")
    assert r.status_code == 200, r.data[:500]
    tree = strict_json(r.data)
    ids = {n["id"] for n in tree["nodes"]}
    assert {"main-1", "main-2", "main-s1-1", "loop-1", "loop-2"} <= ids and "main-bad" not in ids
    warnings = tree["warnings"]
    assert any(w.startswith("node record 'main-bad' of branch 'main' skipped: step must be a step number")
               for w in warnings), warnings
    assert any("node 'loop-1': its parents lead back to it (loop-1 -> loop-2 -> loop-1); drawn as a root" in w
               for w in warnings), warnings
    assert "loop-1" in tree["roots"]
    # The node route still serves the good nodes.
    assert app.get("node?experiment=exp&node=main-2").status_code == 200


def test_a_tensor_that_is_no_node_record_is_a_warning(logdir: str) -> None:
    exp = os.path.join(logdir, "exp")
    summary = metadata.node_pb({"id": "junk", "branch": "main", "step": 0})
    summary.value[0].tensor.string_val[0] = b"[" * 5000 + b"not json"
    writer = EventFileWriter(os.path.join(exp, "main"))
    writer.add_event(event_pb2.Event(step=0, wall_time=time.time(), summary=summary))
    writer.close()
    tree = strict_json(App(logdir).get("tree?experiment=exp").data)
    assert len(tree["nodes"]) == 4
    assert any("retune/node/junk" in w and "not a node record" in w for w in tree["warnings"]), tree["warnings"]


# -- issue 13 bug 9: the status route answers "was my request applied?" --------------------


def test_the_status_route_passes_the_trainers_control_record_and_request_states(logdir: str) -> None:
    app = App(logdir)
    rev = strict_json(app.post("hyperparameters", GOOD).data)["revision"]
    status = strict_json(app.get(f"status?experiment=exp&revision={rev}&revision=w-000000000000").data)
    assert status["control"] is None
    assert status["requests"] == {rev: "pending", "w-000000000000": "pending"}
    path = os.path.join(logdir, "exp", "retune-status.json")
    with open(path) as f:
        data = json.load(f)
    record = {"revision": rev, "sha256": "ab" * 32, "result": "applied", "error": None, "time": time.time()}
    atomic_write_json(path, dict(data, control=record), durable=False)
    status = strict_json(app.get(f"status?experiment=exp&revision={rev}").data)
    assert status["control"] == record and status["requests"] == {rev: "applied"}
    # The trainer has ended: what it took stays applied; a newer write waits for the next run.
    atomic_write_json(path, dict(data, control=record, state="finished"), durable=False)
    rev2 = strict_json(app.post("hyperparameters", GOOD).data)["revision"]
    status = strict_json(app.get(f"status?experiment=exp&revision={rev}&revision={rev2}").data)
    assert status["requests"] == {rev: "applied", rev2: "no_trainer"}


def test_error_lists_in_a_huge_status_stay_readable(logdir: str) -> None:
    """Item 8: a status past the read limit is refused by name, never half-read."""
    app = App(logdir)
    path = os.path.join(logdir, "exp", "retune-status.json")
    with open(path) as f:
        data = json.load(f)
    atomic_write_json(path, dict(data, errors=[{"message": "x" * 200_000}] * 25), durable=False)
    status = strict_json(app.get("status?experiment=exp").data)
    assert "larger than the limit of 4194304 bytes" in status["status_error"]
