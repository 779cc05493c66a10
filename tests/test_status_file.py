"""``retune-status.json``'s writer: urgent pokes write at once, pokes that
come every epoch or checkpoint (``soon``) at most once per ``min_gap_s``."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from tb_retune.trainer.status import StatusFile
from tests.conftest import wait_for


class _Counting:
    """A StatusFile whose refreshes are counted (one per write)."""

    def __init__(self, path: str, *, min_gap_s: float) -> None:
        self.writes = 0
        self.lock = threading.Lock()
        self.file = StatusFile(path, {"state": "training"}, heartbeat_s=600, min_gap_s=min_gap_s,
                               refresh=self._refresh)

    def _refresh(self, data: dict[str, Any], prepared: Any) -> None:
        with self.lock:
            self.writes += 1
            data["writes"] = self.writes


def _on_disk(path: str) -> dict[str, Any]:
    """The file as written last ({} before the first write: it is replaced whole, never half-written)."""
    try:
        with open(path, encoding="utf-8") as f:
            return dict(json.load(f))
    except FileNotFoundError:
        return {}


def test_soon_pokes_within_the_gap_are_one_write_and_an_urgent_poke_writes_at_once(tmp_path: Any) -> None:
    path = str(tmp_path / "retune-status.json")
    c = _Counting(path, min_gap_s=3600)  # no second soon write can come in this test
    c.file.poke()
    c.file.start()
    try:
        wait_for(lambda: c.writes == 1, timeout=60, what="the first write")
        for _ in range(20):  # twenty epochs ending in quick succession
            c.file.poke(soon=True)
        # An urgent poke after them is written at once, with everything the soon ones asked for.
        c.file.update(state="stopping")
        c.file.poke()
        wait_for(lambda: _on_disk(path).get("writes") == 2, timeout=60, what="the urgent write")
        time.sleep(0.3)  # what a further write would need: none may come (the gap is an hour)
        assert c.writes == 2
        on_disk = _on_disk(path)
        assert on_disk["state"] == "stopping" and on_disk["writes"] == 2
    finally:
        c.file.stop()


def test_a_soon_poke_is_written_once_the_gap_has_passed(tmp_path: Any) -> None:
    path = str(tmp_path / "retune-status.json")
    c = _Counting(path, min_gap_s=0.2)
    c.file.poke()
    c.file.start()
    try:
        wait_for(lambda: c.writes == 1, timeout=60, what="the first write")
        c.file.update(epoch=7)
        c.file.poke(soon=True)
        # The count goes up as a write starts: the file is looked at until that write is in it.
        wait_for(lambda: _on_disk(path).get("epoch") == 7, timeout=60, what="the soon write")
        assert c.writes == 2 and _on_disk(path)["writes"] == 2
    finally:
        c.file.stop()
    assert not os.listdir(tmp_path / ".retune-tmp")  # no temporary file left behind
