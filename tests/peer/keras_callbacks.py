"""Runs Keras's own callback tests with ``RetuneCallback`` appended to every ``fit``.

A peer's test suite measures how well we live beside Keras's callbacks
(issue 21): ``keras/src/callbacks/*_test.py``, at the tag of the installed
Keras, is run twice in fresh pytest processes — as it is, and with a
``RetuneCallback(<fresh logdir>)`` appended to the callbacks of every
``Model.fit`` call — and the two outcomes are compared test by test.

Keras's tests are not part of this repository: they are read, at run time,
from a local clone of keras-team/keras that you point to (no download)::

    .venv/bin/python tests/peer/keras_callbacks.py --keras-repo /path/to/keras [-k early_stopping]

Exit status 0 when every test that passes without our callback passes with it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

# Appended to Keras's root conftest.py in the "with" run: wraps Model.fit.
_PATCH = '''

# --- tb-retune: append RetuneCallback(<fresh logdir>) to every fit ---------
import tempfile as _tbr_tempfile

import keras as _tbr_keras
import tb_retune as _tbr

_tbr_fit = _tbr_keras.Model.fit


def _tbr_patched_fit(self, *args, **kwargs):
    args = list(args)
    if len(args) > 5:  # callbacks passed by position (x, y, batch_size, epochs, verbose, callbacks)
        args[5] = list(args[5] or []) + [_tbr.RetuneCallback(_tbr_tempfile.mkdtemp(prefix="tbr-"), verbose=False)]
    else:
        kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [
            _tbr.RetuneCallback(_tbr_tempfile.mkdtemp(prefix="tbr-"), verbose=False)
        ]
    return _tbr_fit(self, *args, **kwargs)


_tbr_keras.Model.fit = _tbr_patched_fit
'''

_REPORT = '''

import json as _tbr_json
import os as _tbr_os

_tbr_outcomes = {}


def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _tbr_outcomes[report.nodeid] = report.outcome


def pytest_sessionfinish(session, exitstatus):
    with open(_tbr_os.environ["TBR_OUTCOMES"], "w") as f:
        _tbr_json.dump(_tbr_outcomes, f)
'''


def _git_show(repo: str, tag: str, path: str) -> str:
    return subprocess.check_output(["git", "-C", repo, "show", f"{tag}:{path}"], text=True)


def _prepare(repo: str, tag: str, folder: str, *, patched: bool) -> None:
    names = subprocess.check_output(
        ["git", "-C", repo, "ls-tree", "--name-only", tag, "keras/src/callbacks/"], text=True
    ).split()
    for name in names:
        if name.endswith("_test.py"):
            with open(os.path.join(folder, os.path.basename(name)), "w") as f:
                f.write(_git_show(repo, tag, name))
    conftest = _git_show(repo, tag, "conftest.py") + _REPORT + (_PATCH if patched else "")
    with open(os.path.join(folder, "conftest.py"), "w") as f:
        f.write(conftest)


def run(repo: str, select: str | None, patched: bool) -> dict[str, str]:
    import keras

    tag = f"v{keras.__version__}"
    with tempfile.TemporaryDirectory(prefix="keras-callbacks-") as folder:
        _prepare(repo, tag, folder, patched=patched)
        out = os.path.join(folder, "outcomes.json")
        env = dict(os.environ, TBR_OUTCOMES=out, TF_CPP_MIN_LOG_LEVEL="2")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x" if False else "-q",
               "--rootdir", folder, folder]
        if select:
            cmd += ["-k", select]
        subprocess.run(cmd, cwd=folder, env=env, check=False)
        with open(out) as f:
            return json.load(f)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keras-repo", required=True, help="a local clone of keras-team/keras (with tags)")
    parser.add_argument("-k", dest="select", default=None, help="pytest -k expression")
    parser.add_argument("--only-with", action="store_true", help="skip the run without RetuneCallback")
    args = parser.parse_args(argv)
    without = {} if args.only_with else run(args.keras_repo, args.select, patched=False)
    with_ours = run(args.keras_repo, args.select, patched=True)
    regressions = []
    for test in sorted(set(without) | set(with_ours)):
        a, b = without.get(test, "-"), with_ours.get(test, "-")
        if a != b:
            regressions.append((test, a, b))
            print(f"DIFFERS  {test}: without={a} with={b}")
    passed_without = sum(v == "passed" for v in without.values())
    passed_with = sum(v == "passed" for v in with_ours.values())
    print(f"Keras callback tests: {passed_without} of {len(without)} pass without RetuneCallback, "
          f"{passed_with} of {len(with_ours)} with it; {len(regressions)} differ")
    return 1 if any(a == "passed" and b != "passed" for _, a, b in regressions) else 0


if __name__ == "__main__":
    sys.exit(main())
