"""One experiment folder as the command line sees it.

EXPERIMENT on the command line is the experiment's folder (``runs/digits``),
local or remote (``gs://bucket/runs/digits``). Small files (the status and
control files) are read directly; the tree is read from the event files
through TensorBoard's data provider (:mod:`tb_retune.reader.experiments`), so the
command line reads exactly what the Retune tab shows, and needs nothing but
read access to the event files.
"""

from __future__ import annotations

import os
from typing import Any

from tb_retune._errors import RetuneError
from tb_retune.experiment import control_file
from tb_retune.experiment.control import STATUS_FILENAME
from tb_retune.reader import experiments, folders


class CliError(RetuneError):
    """A request that the command line refuses (exit status 1)."""


def _hint_children(folder: str, shown_as: str) -> str:
    """``; it holds the experiments runs/a, runs/b: pass one of them`` when
    ``folder`` (typed as ``shown_as``) looks like a logdir, else ``""``.
    Looks two levels deep, no further."""
    found: list[str] = []
    try:
        level = [(name, os.path.join(folder, name)) for name in sorted(os.listdir(folder))]
    except OSError:
        return ""
    for depth in range(2):
        below: list[tuple[str, str]] = []
        for name, path in level:
            if not os.path.isdir(path) or name.startswith("."):
                continue
            if os.path.isfile(os.path.join(path, STATUS_FILENAME)):
                found.append(name)
            elif depth == 0:
                try:
                    below += [(f"{name}/{n}", os.path.join(path, n)) for n in sorted(os.listdir(path))]
                except OSError:
                    continue
        level = below
    if not found:
        return ""
    shown = ", ".join(os.path.join(shown_as, n) for n in found[:5]) + (", ..." if len(found) > 5 else "")
    return f"; it holds the experiments {shown}: pass one of them"


class Experiment:
    """An experiment folder named on the command line.

    Args:
        path: The folder as the person typed it.
    """

    def __init__(self, path: str) -> None:
        if not path:
            raise CliError("EXPERIMENT: must be the experiment's folder, e.g. runs/digits")
        self.path = path
        self.local = folders.is_local(path)
        self.folder = os.path.abspath(path) if self.local else path.rstrip("/")
        self._reader: experiments.Reader | None = None
        self._tree: dict[str, Any] | None = None
        if self.local and not os.path.isdir(self.folder):
            raise CliError(f"experiment {path}: no such folder")

    # -- small files ----------------------------------------------------
    def status(self) -> dict[str, Any] | None:
        """The decoded ``retune-status.json``, or None."""
        return folders.read_status(self.folder, ".")

    def control(self) -> tuple[dict[str, Any] | None, str | None]:
        """``(content, error)`` of ``retune.json``; ``(None, None)`` when absent."""
        return folders.read_control(self.folder, ".")

    def require_status(self) -> dict[str, Any]:
        """The status file; refuses a folder where no trainer has run, or
        whose status file cannot be used (saying why)."""
        status, error = control_file.read_status_checked(self.folder)
        if status is None and error is not None:
            raise CliError(f"experiment {self.path}: {error}")
        if status is None:
            raise CliError(self._not_an_experiment())
        return status

    def require_writable(self) -> str:
        """The local folder that a write goes to; refuses remote and read-only ones."""
        if not self.local:
            raise CliError(
                f"experiment {self.path}: is not a local folder, so its retune.json cannot be written "
                "from here; run tb-retune on the machine that trains"
            )
        if not os.access(self.folder, os.W_OK):
            raise CliError(
                f"experiment {self.path}: the folder is read-only for this user; "
                "run tb-retune as the owner of the experiment"
            )
        return self.folder

    def _hint(self) -> str:
        """Names the experiments inside a local folder that is a logdir."""
        return _hint_children(self.folder, self.path) if self.local else ""

    def _not_an_experiment(self) -> str:
        return (
            f"experiment {self.path}: not a tb-retune experiment (no {STATUS_FILENAME}; "
            f"start training with RetuneCallback({self.path!r}) first){self._hint()}"
        )

    # -- the tree, through the data provider ------------------------------
    def reader(self) -> experiments.Reader:
        if self._reader is None:
            self._reader = experiments.open_logdir(self.folder)
        return self._reader

    def tree(self) -> dict[str, Any]:
        """The tree as the ``tree`` route returns it (``docs/http_api.md``)."""
        if self._tree is None:
            try:
                self._tree = self.reader().tree(".")
            except folders.UnknownExperimentError:
                raise CliError(
                    f"experiment {self.path}: no tb-retune tree in its event files "
                    f"(no <branch>/events.out.tfevents.* with retune summaries){self._hint()}"
                ) from None
        return self._tree

    def node(self, node_id: str) -> dict[str, Any]:
        """One node of the tree, with its captured ``config``."""
        tree = self.tree()
        if not any(n["id"] == node_id for n in tree["nodes"]):
            ids = [n["id"] for n in tree["nodes"]]
            shown = ", ".join(ids[:30]) + (", ..." if len(ids) > 30 else "")
            raise CliError(f"experiment {self.path}: no node {node_id!r}; its nodes: {shown}")
        return self.reader().node(".", node_id)
