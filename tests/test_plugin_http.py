"""The plugin's routes through the real TensorBoard WSGI app and werkzeug's test client."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tb_retune.experiment.atomic import atomic_write_json
from tb_retune.testing.synthetic import make_experiment
from tests.plugin_support import App, make_logdir, strict_json


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> App:
    return App(make_logdir(str(tmp_path_factory.mktemp("logdir"))))


@pytest.fixture
def control(app: App) -> Iterator[str]:
    """The path of digits' control file, removed after the test."""
    path = os.path.join(app.logdir, "digits", "retune.json")
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
    yield path
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def mark_restores_done(app: App, name: str, ids: list[str]) -> None:
    """Records ``ids`` in the status' ``restores_done``, as a trainer does."""
    path = os.path.join(app.logdir, name, "retune-status.json")
    with open(path) as f:
        status = json.load(f)
    status["restores_done"] = list(status.get("restores_done", [])) + ids
    atomic_write_json(path, status, durable=False)


def error_of(response: Any, code: int) -> str:
    assert response.status_code == code, (response.status_code, response.data[:500])
    assert response.mimetype == "application/json"
    body = strict_json(response.data)
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in body["error"]
    return body["error"]


# -- reads ---------------------------------------------------------------------


def test_plugin_is_listed_as_an_iframed_tab(app: App) -> None:
    listing = strict_json(app.client().get("/data/plugins_listing").data)
    assert listing["retune"]["enabled"] is True
    assert listing["retune"]["tab_name"] == "Retune"
    assert listing["retune"]["loading_mechanism"] == {
        "type": "IFRAME", "module_path": "/data/plugin/retune/static/index.js",
    }
    entry = app.client().get("/data/plugin_entry.html?name=retune")
    assert entry.status_code == 200 and b"./static/index.js" in entry.data


def test_experiments_route(app: App) -> None:
    r = app.get("experiments")
    assert r.status_code == 200 and r.mimetype == "application/json"
    exps = strict_json(r.data)["experiments"]
    assert [e["name"] for e in exps] == ["digits", "sweeps/a"]
    assert exps[1]["runs"] == ["sweeps/a/main", "sweeps/a/main-s1"]
    assert set(exps[0]) >= {"name", "branches", "runs", "trainer", "step", "branch", "node", "last_error", "writable"}


def test_tree_node_and_status_routes(app: App, control: str) -> None:
    r = app.get("tree?experiment=digits", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["Content-Encoding"] == "gzip"
    tree = strict_json(app.get("tree?experiment=digits").data)
    assert tree["experiment"] == "digits" and len(tree["nodes"]) == 9
    assert set(tree) == {"experiment", "roots", "nodes", "branches", "status", "trainer", "writable", "warnings",
                         "tree_key"}
    assert tree["warnings"] == []
    assert tree["nodes"][0]["run"] == "digits/main"
    nested = strict_json(app.get("tree?experiment=sweeps/a").data)
    assert nested["nodes"][0]["run"] == "sweeps/a/main"

    node = strict_json(app.get("node?experiment=digits&node=main-2").data)
    assert node["id"] == "main-2" and node["config"] is None and node["series"]["loss"]
    assert strict_json(app.get("node?experiment=digits&node=main-1").data)["config"]["optimizer"]

    status = strict_json(app.get("status?experiment=digits").data)
    assert status["control_file"] is None and status["node"] == "main-s2-3" and status["writable"] is True
    assert status["control"] is None  # no trainer has taken a revision
    with open(control, "w") as f:
        f.write('{"hyperparameters": {"learning_rate": ')  # a person's half-saved edit
    status = strict_json(app.get("status?experiment=digits").data)
    assert status["control_file"] is None and "invalid JSON" in status["control_error"]


def test_read_errors_are_json(app: App) -> None:
    assert "not found" in error_of(app.get("tree?experiment=nope"), 404)
    error_of(app.get("tree?experiment=digits/main"), 404)
    assert "experiment" in error_of(app.get("tree"), 400)
    error_of(app.get("tree?experiment=..%2F..%2Fetc"), 400)
    error_of(app.get("tree?experiment=%2Fetc"), 400)
    error_of(app.get("status?experiment=digits%00"), 400)
    assert "main-99" in error_of(app.get("node?experiment=digits&node=main-99"), 404)
    error_of(app.get("node?experiment=digits"), 400)
    error_of(app.get("status?experiment=nope"), 404)
    error_of(app.post("tree?experiment=digits", {}), 405)


# -- writes --------------------------------------------------------------------


def test_hyperparameters_are_merged_into_the_control_file(app: App, control: str) -> None:
    r = app.post("hyperparameters", {"experiment": "digits", "hyperparameters": {"learning_rate": 0.0003}})
    assert r.status_code == 200, r.data
    body = strict_json(r.data)
    revision = body["revision"]
    assert re.fullmatch(r"w-[0-9a-f]{12}", revision)
    assert body == {
        "written": {"hyperparameters": {"learning_rate": 0.0003}},
        "revision": revision,
        "control": {"hyperparameters": {"learning_rate": 0.0003},
                    "revision": {"id": revision, "keys": ["learning_rate"]}},
    }
    r = app.post("hyperparameters", {"experiment": "digits", "hyperparameters": {"momentum": 0.5}},
                 content_type="application/json; charset=utf-8")
    assert r.status_code == 200, r.data
    second = strict_json(r.data)["revision"]
    assert second != revision
    expected = {"hyperparameters": {"learning_rate": 0.0003, "momentum": 0.5},
                "revision": {"id": second, "keys": ["momentum"]}}
    with open(control) as f:
        assert json.load(f) == expected
    assert strict_json(app.get("status?experiment=digits").data)["control_file"] == expected


def test_restore_writes_a_new_request_each_time(app: App, control: str) -> None:
    status = strict_json(app.get("status?experiment=digits").data)
    step = status["checkpoints"]["main"][1]
    body = {"experiment": "digits", "branch": "main", "step": step, "hyperparameters": {"learning_rate": 1e-4}}
    first = strict_json(app.post("restore", body).data)
    assert first["id"].startswith("r-")
    assert first["written"] == {"restore": {"id": first["id"], "branch": "main", "step": step,
                                            "hyperparameters": {"learning_rate": 1e-4}}}
    assert re.fullmatch(r"w-[0-9a-f]{12}", first["revision"])
    mark_restores_done(app, "digits", [first["id"]])  # as the trainer does when it carried it out
    second = strict_json(app.post("restore", {"experiment": "digits", "branch": "main", "step": step}).data)
    assert second["id"] != first["id"]
    with open(control) as f:
        assert json.load(f)["restore"] == {"id": second["id"], "branch": "main", "step": step}


@pytest.mark.parametrize(
    ("route", "body", "needle"),
    [
        ("hyperparameters", {"experiment": "digits", "hyperparameters": {"learning_rate": -1}}, "learning_rate"),
        ("hyperparameters", {"experiment": "digits", "hyperparameters": {"beta_1": 0.9}}, "unknown hyperparameter"),
        ("hyperparameters", {"experiment": "digits", "hyperparameters": {"nesterov": 1}}, "true or false"),
        ("hyperparameters", {"experiment": "digits", "hyperparameters": {}}, "non-empty"),
        ("hyperparameters", {"experiment": "digits", "hyperparameters": [1]}, "non-empty"),
        ("hyperparameters", {"experiment": "digits"}, "hyperparameters: missing"),
        ("hyperparameters", {"experiment": "digits", "hyperparameters": {"momentum": 0.1}, "x": 1}, "unknown key"),
        ("restore", {"experiment": "digits", "branch": "main", "step": 123}, "no checkpoint at step 123"),
        ("restore", {"experiment": "digits", "branch": "nope", "step": 100}, "no branch"),
        ("restore", {"experiment": "digits", "step": 100}, "branch: missing"),
        ("restore", {"experiment": "digits", "branch": "main", "step": -1}, "step"),
        ("restore", {"experiment": "digits", "branch": "main", "step": "100"}, "step"),
        ("restore", {"experiment": "digits", "branch": "main", "step": 100,
                     "hyperparameters": {"learning_rate": -1}}, "learning_rate"),
    ],
)
def test_invalid_writes_are_refused_and_write_nothing(
    app: App, control: str, route: str, body: dict[str, Any], needle: str
) -> None:
    assert needle in error_of(app.post(route, body), 400)
    assert not os.path.exists(control)


def test_an_invalid_write_leaves_the_file_as_it_was(app: App, control: str) -> None:
    assert app.post("hyperparameters", {"experiment": "digits", "hyperparameters": {"momentum": 0.5}}).status_code == 200
    with open(control, "rb") as f:
        before = f.read()
    error_of(app.post("hyperparameters", {"experiment": "digits", "hyperparameters": {"momentum": 2}}), 400)
    with open(control, "rb") as f:
        assert f.read() == before


def test_restore_needs_the_trainers_status(tmp_path: Any) -> None:
    make_experiment(str(tmp_path / "exp"), branches=1, nodes=2)
    app = App(str(tmp_path))
    os.remove(str(tmp_path / "exp" / "retune-status.json"))
    assert "no checkpoints are known" in error_of(
        app.post("restore", {"experiment": "exp", "branch": "main", "step": 100}), 400
    )
    assert not os.path.exists(str(tmp_path / "exp" / "retune.json"))


# -- request checks ------------------------------------------------------------


GOOD = {"experiment": "digits", "hyperparameters": {"momentum": 0.5}}


@pytest.mark.parametrize(
    "experiment",
    ["..", "../digits", "digits/..", "digits/../../x", "/etc", "/tmp", "%2e%2e", "..%2fdigits",
     "digits\x00", "digits/./main", "", None, 7, ["digits"], "digits\\..\\x"],
)
def test_writes_only_to_experiment_folders_inside_the_logdir(app: App, control: str, experiment: Any) -> None:
    r = app.post("hyperparameters", {"experiment": experiment, "hyperparameters": {"momentum": 0.5}})
    assert r.status_code in (400, 404), r.data
    error_of(r, r.status_code)
    assert not os.path.exists(control)
    assert not os.path.exists(os.path.join(os.path.dirname(app.logdir), "retune.json"))


def test_a_folder_that_is_not_an_experiment_is_refused(app: App) -> None:
    for name in ["digits/main", "sweeps", "nope"]:
        error_of(app.post("hyperparameters", {"experiment": name, "hyperparameters": {"momentum": 0.5}}), 404)
        assert not os.path.exists(os.path.join(app.logdir, name, "retune.json"))


def test_a_symlink_out_of_the_logdir_is_refused(tmp_path: Any) -> None:
    logdir = tmp_path / "logdir"
    make_experiment(str(logdir / "inside"), branches=1, nodes=2)
    make_experiment(str(tmp_path / "outside"), branches=1, nodes=2)
    os.symlink(str(tmp_path / "outside"), str(logdir / "escape"))
    os.symlink(str(logdir / "inside"), str(logdir / "alias"))
    app = App(str(logdir))
    names = [e["name"] for e in strict_json(app.get("experiments").data)["experiments"]]
    assert "escape" in names  # TensorBoard itself follows the link when reading
    error_of(app.post("hyperparameters", {"experiment": "escape", "hyperparameters": {"momentum": 0.5}}), 404)
    assert not os.path.exists(str(tmp_path / "outside" / "retune.json"))
    # A link that stays inside the logdir is fine.
    assert app.post("hyperparameters", {"experiment": "alias", "hyperparameters": {"momentum": 0.5}}).status_code == 200
    assert os.path.exists(str(logdir / "inside" / "retune.json"))


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                     "application/jsonp", ""],
)
def test_only_json_bodies(app: App, control: str, content_type: str) -> None:
    r = app.post("hyperparameters", json.dumps(GOOD), content_type=content_type)
    assert "application/json" in error_of(r, 415)
    assert not os.path.exists(control)


@pytest.mark.parametrize(
    ("origin", "code"),
    [("http://evil.example", 403), ("null", 403), ("http://localhost.evil.example", 403),
     ("http://localhost:8080", 403), ("http://localhost:80@evil.example", 403), ("", 403),
     ("http://evil.example/localhost", 403), ("http://localhost", 200), ("http://LOCALHOST", 200), (None, 200)],
)
def test_cross_origin_writes_are_refused(app: App, control: str, origin: str | None, code: int) -> None:
    # werkzeug's test client sends "Host: localhost".
    headers = {"Origin": origin} if origin is not None else {}
    r = app.post("hyperparameters", GOOD, headers=headers)
    assert r.status_code == code, r.data
    assert os.path.exists(control) == (code == 200)


def test_same_origin_writes_are_accepted(app: App, control: str) -> None:
    r = app.post("hyperparameters", GOOD, headers={"Origin": "http://localhost", "Host": "localhost"})
    assert r.status_code == 200, r.data
    r = app.post("hyperparameters", GOOD, headers={"Sec-Fetch-Site": "cross-site"})
    error_of(r, 403)


def test_large_and_malformed_bodies(app: App, control: str) -> None:
    big = {"experiment": "digits", "hyperparameters": {"momentum": 0.5}, "pad": "x" * (64 * 1024)}
    assert "larger than" in error_of(app.post("hyperparameters", big), 413)
    for data in ["{", "[]", '"digits"', "{\"experiment\": NaN}", b"\xff\xfe", ""]:
        error_of(app.post("hyperparameters", data), 400)
    assert not os.path.exists(control)
    error_of(app.get("restore"), 405)
    error_of(app.get("hyperparameters"), 405)


def test_a_remote_logdir_cannot_be_written(tmp_path: Any) -> None:
    make_experiment(str(tmp_path / "exp"), branches=1, nodes=2)
    app = App(str(tmp_path), served_logdir="gs://bucket/runs")
    message = error_of(app.post("hyperparameters", {"experiment": "exp", "hyperparameters": {"momentum": 0.5}}), 409)
    assert "gs://bucket/runs" in message and "not a local folder" in message


@contextlib.contextmanager
def read_only_folder(path: str) -> Iterator[bool]:
    """Makes ``path`` truly read-only: a read-only mount as root, file modes otherwise."""
    if os.geteuid() != 0:
        os.chmod(path, 0o555)
        try:
            yield True
        finally:
            os.chmod(path, 0o755)
        return
    copy = path + ".src"
    shutil.copytree(path, copy)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "tmpfs", path], capture_output=True).returncode == 0
    if not mounted:
        shutil.rmtree(copy)
        yield False
        return
    try:
        shutil.copytree(copy, path, dirs_exist_ok=True)
        ok = subprocess.run(["mount", "-o", "remount,ro", path], capture_output=True).returncode == 0
        yield ok
    finally:
        gc.collect()  # TensorBoard's loaders keep the event files open
        if subprocess.run(["umount", path], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", path], check=True)
        shutil.rmtree(copy)


def test_a_read_only_experiment_cannot_be_written(tmp_path: Any) -> None:
    make_experiment(str(tmp_path / "exp"), branches=1, nodes=2)
    folder = str(tmp_path / "exp")
    with read_only_folder(folder) as ok:
        if not ok:
            pytest.skip("cannot make a folder read-only here (root without mount)")
        app = App(str(tmp_path))
        message = error_of(
            app.post("hyperparameters", {"experiment": "exp", "hyperparameters": {"momentum": 0.5}}), 409
        )
        assert "read-only" in message and "Traceback" not in message
        assert strict_json(app.get("experiments").data)["experiments"][0]["writable"] is False
        assert strict_json(app.get("tree?experiment=exp").data)["writable"] is False
        assert not os.path.exists(os.path.join(folder, "retune.json"))
        del app


# -- concurrency ---------------------------------------------------------------


def test_concurrent_writes_never_lose_one_another(app: App, control: str) -> None:
    n = 20
    sent: dict[str, list[float]] = {"learning_rate": [], "momentum": []}
    bodies = []
    for i in range(n):
        name = "learning_rate" if i % 2 == 0 else "momentum"
        value = round(0.01 * (i + 1), 4)
        sent[name].append(value)
        bodies.append({"experiment": "digits", "hyperparameters": {name: value}})
    codes: list[int] = []
    seen_invalid: list[bytes] = []
    stop = threading.Event()

    def read_all_the_time() -> None:
        while not stop.is_set():
            try:
                with open(control, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
            try:
                json.loads(data)
            except ValueError:
                seen_invalid.append(data)

    def post(body: dict[str, Any]) -> None:
        codes.append(app.post("hyperparameters", body).status_code)

    reader = threading.Thread(target=read_all_the_time)
    reader.start()
    threads = [threading.Thread(target=post, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    reader.join(10)
    assert codes == [200] * n and not seen_invalid
    with open(control) as f:
        final = json.load(f)["hyperparameters"]
    # Both keys survive: no write dropped the other key's merge.
    assert final["learning_rate"] in sent["learning_rate"] and final["momentum"] in sent["momentum"]


def test_concurrent_restores_one_wins_the_others_get_409(app: App, control: str) -> None:
    """Issue 14 item 13: never a 200 for a restore that will not happen."""
    step = strict_json(app.get("status?experiment=digits").data)["checkpoints"]["main"][0]
    answers: list[tuple[int, dict[str, Any]]] = []

    def post() -> None:
        r = app.post("restore", {"experiment": "digits", "branch": "main", "step": step})
        answers.append((r.status_code, strict_json(r.data)))

    threads = [threading.Thread(target=post) for _ in range(25)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(answers) == 25
    won = [body for code, body in answers if code == 200]
    assert len(won) == 1, [code for code, _ in answers]
    rid = won[0]["id"]
    for code, body in answers:
        if code != 200:
            assert code == 409 and f"an earlier restore {rid} (main@{step}) is still pending" in body["error"]
    with open(control) as f:
        assert json.load(f)["restore"]["id"] == rid
    # Once the trainer has carried it out, the next restore is accepted.
    mark_restores_done(app, "digits", [rid])
    r = app.post("restore", {"experiment": "digits", "branch": "main", "step": step})
    assert r.status_code == 200, r.data


# -- static files --------------------------------------------------------------


def test_static_files_and_traversal(app: App) -> None:
    r = app.client().get("/data/plugin/retune/static/index.js")
    assert r.status_code == 200 and r.mimetype == "text/javascript"
    assert b"render" in r.data
    for path in ["static/../retune_plugin.py", "static/%2e%2e/plugin/loader.py", "static/..%2f..%2fsetup.py",
                 "static/%2e%2e%2f%2e%2e%2fsetup.py", "static/", "static/index.js%00.png",
                 "static/..%5c..%5csetup.py", "static/%2fetc%2fpasswd", "static/nope.js"]:
        r = app.client().get("/data/plugin/retune/" + path)
        assert r.status_code == 404, (path, r.status_code)
        assert b"import" not in r.data and b"root:" not in r.data
