"""The control file's ``schedule``: entries fired once per branch at their step."""

from __future__ import annotations

from tb_retune.experiment.control import ScheduleEntry
from tb_retune.trainer.state import TrainerState


def _key(branch: str, entry: ScheduleEntry) -> str:
    return f"{branch}|{entry.key()}"


class Schedule:
    """The schedule in force; which entries fired is kept in the trainer state."""

    def __init__(self, state: TrainerState) -> None:
        self.state = state
        self.entries: tuple[ScheduleEntry, ...] = ()
        #: The step of the next entry to fire on the branch in force (O(1) check).
        self.next_step: int | None = None

    def replace(self, entries: tuple[ScheduleEntry, ...], branch: str) -> None:
        self.entries = entries
        self.plan(branch)

    def _inherited_up_to(self, branch: str) -> int:
        """A restored branch inherits the past of its source: entries at or
        before its first step do not fire on it (they would undo the restore)."""
        info = self.state.branches.get(branch) or {}
        return int(info.get("start_step", -1)) if info.get("parent_node") else -1

    def plan(self, branch: str) -> None:
        with self.state.lock:
            fired = set(self.state.schedule_fired)
            past = self._inherited_up_to(branch)
        pending = [e.at_step for e in self.entries if _key(branch, e) not in fired and e.at_step > past]
        self.next_step = min(pending) if pending else None

    def due(self, step: int) -> bool:
        return self.next_step is not None and step >= self.next_step

    def take_due(self, branch: str, step: int) -> list[ScheduleEntry]:
        """The entries due at ``step``, marked fired, in step order."""
        out = []
        with self.state.lock:
            fired = self.state.schedule_fired
            past = self._inherited_up_to(branch)
            for entry in self.entries:
                key = _key(branch, entry)
                if past < entry.at_step <= step and key not in fired:
                    fired.append(key)
                    out.append(entry)
        self.plan(branch)
        return out

    def fired_on(self, branch: str) -> list[str]:
        with self.state.lock:
            return [k for k in self.state.schedule_fired if k.startswith(branch + "|")]

    def roll_back(self, branch: str, fired: list[str]) -> None:
        """Makes ``fired`` the entries fired on ``branch`` (a resume from a checkpoint)."""
        with self.state.lock:
            others = [k for k in self.state.schedule_fired if not k.startswith(branch + "|")]
            self.state.schedule_fired = others + [k for k in fired if k.startswith(branch + "|")]
        self.plan(branch)
