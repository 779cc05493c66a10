"""Notes on nodes: the control file's ``notes``, the trainer's note records in
real event files (read back by TensorBoard's own loaders), the reader, the
plugin's ``POST note`` route and ``tb-retune note``."""

from __future__ import annotations

import glob
import json
import os
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from tb_retune._errors import ControlError
from tb_retune.cli import main as cli_main
from tb_retune.experiment import control_file, metadata
from tb_retune.experiment.control import MAX_NOTE_CHARS, merge_control, parse_control_object
from tb_retune.testing.synthetic import make_experiment
from tb_retune.trainer import notes
from tb_retune.trainer.summaries import BranchWriter, truncate_run
from tests.conftest import live_fit, read_status, wait_for
from tests.plugin_support import App, strict_json

# -- the control file's key --------------------------------------------------


def test_notes_parse_into_the_revision() -> None:
    rev = parse_control_object({"notes": {"main-1": "lr too high", "main-2": ""}})
    assert rev.notes == {"main-1": "lr too high", "main-2": ""}
    assert parse_control_object({}).notes == {}


@pytest.mark.parametrize(
    ("notes_value", "says"),
    [
        ("text", "notes: must be an object"),
        ({"main-1": 3}, "notes.main-1: must be a string"),
        ({"main-1": None}, "notes.main-1: must be a string"),
        ({"main-1": "x" * (MAX_NOTE_CHARS + 1)}, f"notes.main-1: the note has {MAX_NOTE_CHARS + 1} characters"),
        ({"": "x"}, "is not a node id"),
    ],
)
def test_bad_notes_are_refused_naming_the_key(notes_value: Any, says: str) -> None:
    with pytest.raises(ControlError, match=says.replace(".", r"\.")):
        parse_control_object({"notes": notes_value})


def test_a_note_of_the_limit_is_accepted() -> None:
    assert parse_control_object({"notes": {"n": "é" * MAX_NOTE_CHARS}}).notes["n"] == "é" * MAX_NOTE_CHARS


def test_notes_merge_per_node_and_an_empty_note_stays_as_a_removal() -> None:
    merged = merge_control({"notes": {"a": "one", "b": "two"}, "stop": False}, {"notes": {"b": "", "c": "three"}})
    assert merged == {"notes": {"a": "one", "b": "", "c": "three"}, "stop": False}


def test_write_control_merges_notes_and_stamps_a_revision(tmp_path: Any) -> None:
    folder = str(tmp_path)
    control_file.write_control(folder, {"hyperparameters": {"learning_rate": 0.01}})
    control_file.write_control(folder, {"notes": {"main-1": "first"}})
    content = control_file.write_control(folder, {"notes": {"main-2": "second"}})
    assert content["notes"] == {"main-1": "first", "main-2": "second"}
    assert content["hyperparameters"] == {"learning_rate": 0.01}
    assert content["revision"]["keys"] == []
    with pytest.raises(ControlError, match="notes.main-1"):
        control_file.write_control(folder, {"notes": {"main-1": 5}})
    assert control_file.read_control(folder)["notes"]["main-1"] == "first"


# -- the rule: which note records the trainer writes -------------------------


def test_a_note_is_written_once_per_change() -> None:
    first = notes.notes_to_write({"main-1": "a"}, None, now=1.0)
    assert first == [{"version": 1, "kind": "note", "node": "main-1", "text": "a", "time": 1.0}]
    recorded = notes.recorded_after(None, first)
    assert notes.notes_to_write({"main-1": "a"}, recorded, now=2.0) == []
    # A node the file does not name keeps its note; a removal is a record of "".
    assert notes.notes_to_write({}, recorded, now=2.0) == []
    removal = notes.notes_to_write({"main-1": ""}, recorded, now=3.0)
    assert [r["text"] for r in removal] == [""]
    # An empty note on a node that never had one writes nothing.
    assert notes.notes_to_write({"main-2": ""}, recorded, now=3.0) == []


def test_the_recorded_notes_survive_a_json_round_trip_of_the_status() -> None:
    recorded = notes.recorded_after(None, notes.notes_to_write({"b": "x", "a": "y"}, None, now=5.0))
    again = json.loads(json.dumps(recorded))
    assert notes.notes_to_write({"a": "y", "b": "x"}, again, now=6.0) == []
    assert notes.recorded_texts({"bad": 3, "a": {"text": "y"}}) == {"a": "y"}


# -- real event files ---------------------------------------------------------


def _note_events(run_dir: str) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                if value.tag.startswith(metadata.NOTE_TAG_PREFIX):
                    content = json.loads(value.metadata.plugin_data.content)
                    assert value.metadata.plugin_data.plugin_name == "retune" and content["kind"] == "note"
                    out.append((event.step, metadata.decode_note_bytes(value.tensor.string_val[0])))
    return out


def test_record_notes_writes_note_summaries_that_tensorboard_reads_back(tmp_path: Any) -> None:
    run = str(tmp_path / "main")
    writer = BranchWriter(run, start_step=0)
    recorded = notes.record_notes(writer, {"main-1": "diverged"}, None, 40, now=100.0)
    recorded = notes.record_notes(writer, {"main-1": "diverged"}, recorded, 50)  # unchanged: nothing
    writer.close()
    assert _note_events(run) == [(40, {"version": 1, "kind": "note", "node": "main-1", "text": "diverged",
                                       "time": 100.0})]
    assert notes.record_notes(None, {"main-1": "other"}, recorded, 60) == recorded


def test_a_resume_writes_the_recorded_notes_again(tmp_path: Any) -> None:
    run = str(tmp_path / "main")
    writer = BranchWriter(run, start_step=0)
    recorded = notes.record_notes(writer, {"main-1": "kept"}, None, 80, now=10.0)
    writer.close()
    truncate_run(run, 50)  # what a resume from the checkpoint at 50 does
    assert _note_events(run) == []
    writer = BranchWriter(run, start_step=50)
    notes.rewrite_notes(writer, json.loads(json.dumps(recorded)), 50)
    writer.close()
    assert [(s, r["text"], r["time"]) for s, r in _note_events(run)] == [(50, "kept", 10.0)]


def _tree(logdir: str, name: str = "exp") -> dict[str, Any]:
    app = App(logdir)
    r = app.get(f"tree?experiment={name}")
    assert r.status_code == 200, r.data
    return strict_json(r.data)


def test_the_tree_shows_the_latest_note_of_each_node(tmp_path: Any) -> None:
    logdir = str(tmp_path)
    folder = os.path.join(logdir, "exp")
    make_experiment(folder, branches=2, nodes=4, seed=3, notes={"main-1": "root note", "main-s1-1": "x"})
    # A later note on main-1, written from the other branch's run (where the trainer is).
    writer = BranchWriter(os.path.join(folder, "main-s1"), start_step=10_000)
    before = notes.recorded_after(None, notes.notes_to_write({"main-1": "root note", "main-s1-1": "x"}, None, now=0))
    recorded = notes.record_notes(writer, {"main-1": "changed", "main-s1-1": "", "main-2": ""}, before, 10_000)
    writer.close()
    by_id = {n["id"]: n for n in _tree(logdir)["nodes"]}
    assert by_id["main-1"]["note"] == "changed"
    assert by_id["main-s1-1"]["note"] is None  # removed
    assert by_id["main-2"]["note"] is None
    assert recorded["main-s1-1"]["text"] == "" and "main-2" not in recorded  # never had one: nothing written
    app = App(logdir)
    node = strict_json(app.get("node?experiment=exp&node=main-1").data)
    assert node["note"] == "changed"


# -- the plugin's route and the command line ----------------------------------


@pytest.fixture()
def app(tmp_path: Any) -> App:
    make_experiment(str(tmp_path / "digits"), branches=2, nodes=4, seed=1)
    return App(str(tmp_path))


def test_note_route_writes_the_note_into_the_control_file(app: App) -> None:
    r = app.post("note", {"experiment": "digits", "node": "main-1", "text": "baseline"})
    assert r.status_code == 200, r.data
    body = strict_json(r.data)
    assert body["written"] == {"notes": {"main-1": "baseline"}}
    assert body["revision"].startswith("w-")
    assert control_file.read_control(os.path.join(app.logdir, "digits"))["notes"] == {"main-1": "baseline"}
    r = app.post("note", {"experiment": "digits", "node": "main-1", "text": ""})
    assert r.status_code == 200
    assert control_file.read_control(os.path.join(app.logdir, "digits"))["notes"] == {"main-1": ""}


@pytest.mark.parametrize(
    ("body", "code", "says"),
    [
        ({"experiment": "digits", "node": "main-1"}, 400, "text: missing"),
        ({"experiment": "digits", "node": "main-1", "text": 3}, 400, "notes.main-1: must be a string"),
        ({"experiment": "digits", "node": "main-1", "text": "x" * 501}, 400, "more than the limit of 500"),
        ({"experiment": "digits", "node": "main-99", "text": "x"}, 404, "main-99"),
        ({"experiment": "digits", "node": "main-1", "text": "x", "more": 1}, 400, "more: unknown key"),
        ({"experiment": "nope", "node": "main-1", "text": "x"}, 404, "nope"),
    ],
)
def test_note_route_refuses_bad_requests(app: App, body: dict[str, Any], code: int, says: str) -> None:
    r = app.post("note", body)
    assert r.status_code == code, r.data
    assert says in strict_json(r.data)["error"]
    assert not os.path.exists(os.path.join(app.logdir, "digits", "retune.json"))


def test_cli_note_writes_and_refuses_an_unknown_node(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    folder = str(tmp_path / "exp")
    make_experiment(folder, branches=1, nodes=2, seed=1)
    assert cli_main(["note", folder, "main-2", "lr 0.1 diverged"]) == 0
    assert "note on main-2" in capsys.readouterr().out
    assert control_file.read_control(folder)["notes"] == {"main-2": "lr 0.1 diverged"}
    assert cli_main(["note", folder, "main-9", "x"]) == 1
    assert "no node 'main-9'" in capsys.readouterr().err
    assert cli_main(["note", folder, "main-2", "x" * 501]) == 1
    assert "notes.main-2" in capsys.readouterr().err
    from tb_retune.cli._views import node_line

    line = node_line({"id": "main-2", "branch": "main", "start_step": 0, "end_step": 9, "label": "x",
                      "note": "two\nlines"}, {"arrow": "->"})
    assert line.endswith("note: two lines")
    assert cli_main(["note", folder, "main-2", "", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["written"] == {"notes": {"main-2": ""}}


# -- a real fit ----------------------------------------------------------------


def test_a_note_from_the_cli_is_recorded_by_a_real_fit_and_survives_a_restart(tmp_path: Any) -> None:
    folder = str(tmp_path / "exp")
    with live_fit(folder) as fit:
        wait_for(lambda: read_status(folder).get("node"), what="a node")
        node = read_status(folder)["node"]
        assert cli_main(["note", folder, node, "from the cli"]) == 0
        wait_for(lambda: (read_status(folder).get(notes.STATUS_KEY) or {}).get(node), what="note recorded")
        assert cli_main(["stop", folder, "--wait", "--timeout", "60"]) == 0
        fit.join_ok(timeout=60)
    assert [r["text"] for _, r in _note_events(os.path.join(folder, "main"))] == ["from the cli"]
    assert {n["id"]: n for n in _tree(str(tmp_path))["nodes"]}[node]["note"] == "from the cli"
    # A restart resumes from the latest checkpoint: the note is not written again
    # as a change, but it is written again at the resume step, so it stays.
    with live_fit(folder):
        wait_for(lambda: read_status(folder).get("state") == "training", what="resumed")
    assert [r["text"] for _, r in _note_events(os.path.join(folder, "main"))] == ["from the cli"] * 2
    assert {n["id"]: n for n in _tree(str(tmp_path))["nodes"]}[node]["note"] == "from the cli"


def test_write_control_refuses_a_file_the_trainer_would_not_read(tmp_path: Any) -> None:
    folder = str(tmp_path)
    many = {f"main-{i}": "x" * MAX_NOTE_CHARS for i in range(600)}
    with pytest.raises(ControlError, match="larger than the limit of 262144 bytes; delete from its notes"):
        control_file.write_control(folder, {"notes": many})
    assert not os.path.exists(os.path.join(folder, "retune.json"))
    control_file.write_control(folder, {"notes": dict(list(many.items())[:100])})
    assert len(control_file.read_control(folder)["notes"]) == 100


def test_a_bad_note_record_is_a_warning_and_hides_nothing(tmp_path: Any) -> None:
    logdir = str(tmp_path)
    folder = os.path.join(logdir, "exp")
    make_experiment(folder, branches=1, nodes=2, seed=3, notes={"main-1": "good"})
    writer = BranchWriter(os.path.join(folder, "main"), start_step=10_000)
    writer.summary(metadata.note_pb({"version": 1, "kind": "note", "node": "main-2", "text": 5, "time": 1.0}), 10_000)
    writer.close()
    tree = _tree(logdir)
    assert {n["id"]: n["note"] for n in tree["nodes"]} == {"main-1": "good", "main-2": None}
    assert any("retune/note/main-2" in w and "not a note record" in w for w in tree["warnings"])
