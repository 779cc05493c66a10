"""An experiment's folder in a logdir: names, paths, the small files, and write checks.

An experiment is named by its folder relative to the logdir (``digits``,
``sweeps/a``, or ``.`` for the logdir itself); a TensorBoard run is
``<experiment>/<branch>``. Names are checked before any path is built, and a
write goes only to a folder whose real path stays inside the logdir. The
status and control files are read with the bounded, safe readers of
:mod:`tb_retune.experiment.control_file`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from tb_retune._errors import ControlError, RetuneError
from tb_retune.experiment import control_file
from tb_retune.experiment.control import STATUS_FILENAME


class UnknownExperimentError(RetuneError, LookupError):
    """No experiment of that name in the logdir."""


class UnknownNodeError(RetuneError, LookupError):
    """No node of that id in the experiment."""


class InvalidExperimentNameError(RetuneError, ValueError):
    """An experiment name that is not a plain relative path inside the logdir."""


class LogdirNotWritableError(RetuneError):
    """The experiment folder cannot be written (remote or read-only logdir)."""


# -- names, paths and small files ------------------------------------------


def split_run(run: str) -> tuple[str, str] | None:
    """``(experiment, branch)`` of a TensorBoard run name, or None.

    A run is ``<experiment>/<branch>``; a run without a slash is a branch of
    the logdir itself (experiment ``"."``).
    """
    if not run or run == ".":
        return None
    run = run.replace("\\", "/")
    experiment, _, branch = run.rpartition("/")
    if not branch:
        return None
    return (experiment or "."), branch


def run_prefix(experiment: str) -> str:
    """What turns a branch name into a run name: ``"digits/"``, or ``""`` for ``"."``."""
    return "" if experiment == "." else experiment + "/"


def is_local(logdir: str) -> bool:
    """Whether ``logdir`` is a local folder (not ``gs://``, ``s3://``, ...)."""
    return "://" not in logdir


def experiment_folder(logdir: str, name: str) -> str:
    """The path of an experiment's folder (no checks; see :func:`resolve_for_write`)."""
    if name == ".":
        return logdir
    if is_local(logdir):
        return os.path.join(logdir, *name.split("/"))
    return logdir.rstrip("/") + "/" + name


def check_name(name: Any) -> str:
    """Checks that ``name`` is a plain relative path; returns it.

    Raises InvalidExperimentNameError for anything else: empty, absolute,
    with ``..``/``.`` parts, backslashes, NUL or other control characters.
    """
    if not isinstance(name, str) or not name:
        raise InvalidExperimentNameError(
            f"experiment: must be the experiment's folder relative to the logdir (e.g. \"digits\"), got {name!r}"
        )
    if name == ".":
        return name
    if len(name) > 1024 or any(ord(c) < 32 or c == "\x7f" for c in name) or "\\" in name:
        raise InvalidExperimentNameError(f"experiment: invalid characters in {name!r}")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise InvalidExperimentNameError(
            f"experiment: must be relative to the logdir, got the absolute path {name!r}"
        )
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidExperimentNameError(
            f"experiment: {name!r} is not a plain path inside the logdir (no '..', '.' or empty parts)"
        )
    return name


def read_status(logdir: str, name: str) -> dict[str, Any] | None:
    """The decoded ``retune-status.json`` of an experiment, or None."""
    return control_file.read_status(experiment_folder(logdir, name))


def read_control(logdir: str, name: str) -> tuple[dict[str, Any] | None, str | None]:
    """``(content, error)`` of the control file: ``(None, None)`` when absent.

    Bounded and safe (see :mod:`tb_retune.experiment.safe_read`): a folder,
    a FIFO, a link out of the experiment or a file past the limit is an
    error, never read.
    """
    try:
        data = control_file.read_control_bytes(experiment_folder(logdir, name))
    except OSError as e:
        return None, str(e)
    if data is None or not data.strip():
        return None, None
    try:
        return control_file.decode_control_object(data), None
    except ControlError as e:
        return None, str(e)


def folder_writable(logdir: str, name: str) -> bool:
    """Whether the control file of an experiment can be written from here."""
    if not is_local(logdir):
        return False
    folder = experiment_folder(logdir, name)
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return False
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def resolve_for_write(logdir: str, name: Any, *, known: Iterable[str] = ()) -> str:
    """The real path of the folder of experiment ``name``, checked for a write.

    Args:
        logdir: The logdir that TensorBoard serves.
        name: The experiment, relative to the logdir.
        known: Experiments known to the data provider.

    Raises:
        InvalidExperimentNameError: ``name`` is not a plain relative path.
        LogdirNotWritableError: the logdir is not local, or is read-only.
        UnknownExperimentError: no experiment folder of that name inside the
            logdir (also for a symlink that leads out of the logdir).
    """
    name = check_name(name)
    if not logdir:
        raise LogdirNotWritableError(
            "this TensorBoard has no --logdir (only --logdir_spec or a remote data source); "
            "write retune.json with the tb-retune command line next to the experiment"
        )
    if not is_local(logdir):
        raise LogdirNotWritableError(
            f"the logdir {logdir} is not a local folder, so the Retune tab cannot write its "
            "retune.json; use `tb-retune` on the machine that trains, or run TensorBoard there"
        )
    root = os.path.realpath(logdir)
    folder = os.path.realpath(experiment_folder(logdir, name))
    if folder != root and os.path.commonpath([root, folder]) != root:
        raise UnknownExperimentError(f"experiment {name!r}: not a folder inside the logdir")
    if not os.path.isdir(folder):
        raise UnknownExperimentError(f"experiment {name!r}: no such folder in the logdir {logdir}")
    if name not in set(known) and not os.path.isfile(os.path.join(folder, STATUS_FILENAME)):
        raise UnknownExperimentError(
            f"experiment {name!r}: the folder holds no tb-retune experiment "
            f"(no {STATUS_FILENAME} and no retune summaries)"
        )
    if not folder_writable(logdir, name):
        raise LogdirNotWritableError(
            f"experiment {name!r}: the folder {folder} is read-only for TensorBoard; "
            "make it writable, or write retune.json with the tb-retune command line as its owner"
        )
    return folder
