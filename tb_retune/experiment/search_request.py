"""Writing a ``search`` request into an experiment's ``retune.json``, checked
first against the trainer's ``retune-status.json``: the command line
(``tb-retune search``) and the tab's route (``POST search``) both write
through :func:`write_search`, so they refuse the same requests.

The checks are the schema's (``parse_search``) with what the status knows:
the optimizer's hyperparameters, the checkpoints, the metrics that ``fit``
logs (``status["metrics"]``) and the ids of the searches so far.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from tb_retune._errors import ControlError


def new_search_id() -> str:
    return f"s-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def check_search(request: Mapping[str, Any], status: Mapping[str, Any] | None) -> None:
    """Raises ControlError (naming the key, starting with ``search``) for a
    request the trainer would refuse, as far as its status tells."""
    from tb_retune.experiment import control_file
    from tb_retune.experiment.search import parse_search

    searches = (status or {}).get("searches")
    search_id = request.get("id")
    if isinstance(search_id, str) and isinstance(searches, dict) and isinstance(searches.get(search_id), dict):
        raise ControlError(f"search.id: {search_id!r} already names a search of this experiment "
                           f"(state {searches[search_id].get('state')}); give the new search a new id")
    known, checkpoints = control_file.known_from_status(status)
    metrics = (status or {}).get("metrics")
    parse_search(dict(request), known, checkpoints, metrics if isinstance(metrics, list) else None)


def write_search(folder: str, request: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Checks ``request`` (an ``id`` is made when it has none) and merges it
    into ``<folder>/retune.json``; returns ``(request, whole control file)``.

    Raises:
        ControlError: a refused request (nothing is written).
        OSError: the folder cannot be written.
    """
    from tb_retune.experiment import control_file

    request = dict(request)
    if request.get("id") is None:
        request["id"] = new_search_id()
    check_search(request, control_file.read_status(folder))
    control = control_file.write_control(folder, {"search": request})
    return request, control
