"""Living beside Keras's other callbacks in the same ``fit``.

``RetuneCallback`` sees the other callbacks of its ``fit`` through the
``CallbackList`` that ``fit`` keeps in its local ``callbacks`` (the frame
the callback already finds for ``batch_size``). That is the list Keras
itself calls, in its order, whatever the user passed (a list, nested lists
or a ``CallbackList``), and it needs no change to the user's code. Keras
gives a callback no other way to see its siblings (``set_model`` and
``set_params`` pass no list), and guessing through the garbage collector is
more fragile than one documented local of ``fit``.

:class:`Siblings` knows three things about them:

- who changed a hyperparameter, when ``external`` finds that one changed
  (``ReduceLROnPlateau`` sets the learning rate in ``on_epoch_end``,
  ``LearningRateScheduler`` in ``on_epoch_begin``; which one it was follows
  from where each sits in the list relative to us and which hook ran);
- the monitor state of Keras's stateful callbacks, reset after a restore so
  that the new branch is not compared with the abandoned one's best;
- ``BackupAndRestore``, the other resume mechanism (see :func:`check_backup_and_restore`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

#: Moments at which ``RetuneCallback`` looks for changes made by others.
TRAIN_BEGIN, EPOCH_BEGIN, FIRST_BATCH, EPOCH_END, TRAIN_END = (
    "train_begin", "epoch_begin", "first_batch", "epoch_end", "train_end")

#: A sibling may define this method; it is called after each restore with
#: ``(branch, step)`` so that it can reset its own state.
RESTORE_HOOK = "on_retune_restore"


def _keras_callbacks() -> Any:
    import keras

    return keras.callbacks


def _monitor_base() -> Any:
    """Keras's base of the callbacks that keep a best value (not public API)."""
    try:
        from keras.src.callbacks.monitor_callback import MonitorCallback
    except ImportError:  # another Keras layout: nothing to warn about by class
        return ()
    return MonitorCallback


def callbacks_of_fit(frame: Any) -> list[Any]:
    """The callbacks that ``fit`` (whose frame this is) calls, in order."""
    callbacks = frame.f_locals.get("callbacks") if frame is not None else None
    if callbacks is None:
        return []
    if hasattr(callbacks, "callbacks") and not isinstance(callbacks, (list, tuple)):
        return list(callbacks.callbacks)  # Keras's CallbackList
    if isinstance(callbacks, (list, tuple)):
        import keras

        return list(keras.tree.flatten(callbacks))
    return []


class Siblings:
    """The other callbacks of one ``fit``.

    Args:
        callbacks: All callbacks of the fit, in the order Keras calls them.
        me: Our own callback (its position says who ran before us).
    """

    def __init__(self, callbacks: Sequence[Any], me: Any) -> None:
        self.all = list(callbacks)
        self.index = next((i for i, c in enumerate(self.all) if c is me), len(self.all))
        self.others = [c for c in self.all if c is not me]
        mc = _keras_callbacks().ModelCheckpoint
        #: ModelCheckpoint's ``best`` when this fit began: what a restore resets it to.
        self._checkpoint_best = {id(c): getattr(c, "best", None) for c in self.others if isinstance(c, mc)}

    def before_me(self, callback: Any) -> bool:
        return any(c is callback for c in self.all[: self.index])

    # -- who changed a hyperparameter ----------------------------------------
    def may_change_the_optimizer(self) -> bool:
        """Whether another callback can set a hyperparameter between two of
        our hooks: any but Keras's ``History`` and ``ProgbarLogger``, which
        never touch the optimizer. With none, what the train steps change is
        seen at the epoch's end, and the looks at its start are skipped."""
        cbs = _keras_callbacks()
        return any(not isinstance(c, (cbs.History, cbs.ProgbarLogger)) for c in self.others)

    def setter(self, moment: str, changed: Sequence[str]) -> str | None:
        """The class name of the Keras callback that made a change seen at
        ``moment``, when it can be told; None when it cannot."""
        if "learning_rate" not in changed:
            return None
        cbs = _keras_callbacks()
        hooks = ((cbs.ReduceLROnPlateau, "on_epoch_end"), (cbs.LearningRateScheduler, "on_epoch_begin"))
        names = []
        for c in self.others:
            for cls, hook in hooks:
                if isinstance(c, cls) and _ran_since_last_look(moment, hook, self.before_me(c)):
                    names.append(type(c).__name__)
        return " or ".join(dict.fromkeys(names)) or None

    # -- branches ---------------------------------------------------------------
    def reset_after_restore(self, branch: str, step: int) -> tuple[list[str], list[str]]:
        """Resets the monitor state of the callbacks we know after a restore.

        Returns (what was reset, warnings about what could not be).
        """
        cbs = _keras_callbacks()
        monitor = _monitor_base()
        reset, warnings = [], []
        for c in self.others:
            name = type(c).__name__
            if hasattr(c, RESTORE_HOOK):
                getattr(c, RESTORE_HOOK)(branch, step)
                reset.append(name)
            elif isinstance(c, cbs.EarlyStopping):
                # As its on_train_begin does: best_weights of the abandoned
                # branch must never be loaded at the end of fit.
                c.wait, c.stopped_epoch, c.best, c.best_weights, c.best_epoch = 0, 0, None, None, 0
                reset.append(name)
            elif isinstance(c, cbs.ReduceLROnPlateau):
                c.wait, c.cooldown_counter, c.best = 0, 0, None
                reset.append(name)
            elif isinstance(c, cbs.ModelCheckpoint):
                c.best = self._checkpoint_best.get(id(c))
                reset.append(name)
            elif isinstance(c, monitor):
                warnings.append(
                    f"restore: {name} monitors {getattr(c, 'monitor', '?')!r} and keeps the abandoned branch's "
                    f"best ({getattr(c, 'best', None)!r}); tb-retune cannot reset a callback it does not know: "
                    f"give {name} a method {RESTORE_HOOK}(branch, step) that resets it"
                )
        return reset, warnings


def swapped_ema(siblings: Siblings) -> list[Any]:
    """``SwapEMAWeights(swap_on_epoch=True)`` callbacks that have put the EMA
    weights in the model (they do in ``on_epoch_end``, until the next epoch
    begins). A checkpoint taken then would hold the EMA weights as the model's
    and the trained ones as the optimizer's averages: the caller swaps them
    back around its checkpoint (:func:`swap_ema`)."""
    swap = _keras_callbacks().SwapEMAWeights
    return [c for c in siblings.others if isinstance(c, swap) and getattr(c, "_ema_weights_in_model", False)
            and hasattr(c, "_apply_to_ema_optimizers") and hasattr(c, "_backend_swap_variables")]


def swap_ema(callback: Any) -> None:
    """Swaps a ``SwapEMAWeights``'s model and EMA weights through numpy copies:
    bit-exact, unlike the add-and-subtract swap it uses under TensorFlow, so
    swapping twice leaves the training exactly as it was."""
    callback._apply_to_ema_optimizers(callback._backend_swap_variables, callback._backend_swap_variables)


def best_weights_note(siblings: Siblings, branch: str, step: int) -> str | None:
    """What the log says when ``EarlyStopping(restore_best_weights=True)``
    replaces the last trained weights at the end of ``fit``."""
    cbs = _keras_callbacks()
    for c in siblings.others:
        if isinstance(c, cbs.EarlyStopping) and c.restore_best_weights and c.best_weights is not None:
            return (f"retune: EarlyStopping restores the weights of its best epoch ({c.best_epoch + 1}, "
                    f"branch {branch}) at the end of fit; tb-retune's checkpoint at step {step} holds the last "
                    "trained weights")
    return None


def _ran_since_last_look(moment: str, hook: str, before_me: bool) -> bool:
    """Whether a sibling's ``hook`` ran between our previous look and ``moment``.

    We look at epoch begin, at the first batch of an epoch and at epoch
    end, in our place in the list: at epoch end, the epoch-end hooks of the
    callbacks before us have run; at the next epoch begin, those after us
    and the epoch-begin hooks of those before us; at the first batch, the
    epoch-begin hooks of those after us; at the end of fit, the last
    epoch-end hooks of those after us.
    """
    if moment == EPOCH_END:
        return hook == "on_epoch_end" and before_me
    if moment == EPOCH_BEGIN:
        return (hook == "on_epoch_end" and not before_me) or (hook == "on_epoch_begin" and before_me)
    if moment == FIRST_BATCH:
        return hook == "on_epoch_begin" and not before_me
    if moment == TRAIN_END:
        return hook == "on_epoch_end" and not before_me
    return False


# -- BackupAndRestore -------------------------------------------------------------
def backups(siblings: Siblings) -> list[Any]:
    """The ``BackupAndRestore`` callbacks of the fit."""
    bar = _keras_callbacks().BackupAndRestore
    return [c for c in siblings.others if isinstance(c, bar)]


def has_backup(callback: Any) -> bool:
    """Whether a ``BackupAndRestore`` has a backup that its ``on_train_begin`` loads."""
    path = getattr(callback, "_weights_path", None) or os.path.join(callback.backup_dir, "latest.weights.h5")
    return os.path.exists(path)


def check_backup_and_restore(siblings: Siblings) -> str | None:
    """Which resume mechanism is in charge; a message when the fit must not start.

    The policy (docs/formats.md): tb-retune resumes its experiment when it
    has one; ``BackupAndRestore`` resumes when tb-retune has nothing to
    resume. So:

    - ``BackupAndRestore`` with a backup *after* ``RetuneCallback`` would
      load its weights after tb-retune started recording: refused (move
      ``RetuneCallback`` after it);
    - ``BackupAndRestore`` *before* us with a backup, and an experiment to
      resume: both would resume; tb-retune's checkpoint wins (it is loaded
      over the backup, and ``fit``'s epoch counter is tb-retune's) and the
      caller says so;
    - otherwise the one that has something to resume does.

    Returns the refusal message, or None.
    """
    for c in backups(siblings):
        if has_backup(c) and not siblings.before_me(c):
            return (
                f"BackupAndRestore(backup_dir={c.backup_dir!r}) comes after RetuneCallback in callbacks and has "
                "a backup to load: tb-retune would record the state before it loads it. Put RetuneCallback "
                "after BackupAndRestore in the callbacks list (tb-retune then resumes its own experiment when "
                "it has one, else records the state BackupAndRestore loaded), or remove BackupAndRestore: "
                "tb-retune's checkpoints hold the weights, the optimizer state and the epoch."
            )
    return None


def experiment_to_resume(logdir: str) -> bool:
    """Whether tb-retune will resume an experiment in ``logdir`` (its state and checkpoints exist)."""
    from tb_retune.experiment.control import CHECKPOINTS_DIRNAME
    from tb_retune.trainer.state import STATE_FILENAME

    folder = os.path.join(logdir, CHECKPOINTS_DIRNAME)
    return os.path.exists(os.path.join(logdir, STATE_FILENAME)) and os.path.isdir(folder) and any(
        files for _, _, files in os.walk(folder))


def overridden_backups(siblings: Siblings) -> list[Any]:
    """The ``BackupAndRestore`` callbacks before us that loaded a backup."""
    return [c for c in backups(siblings) if siblings.before_me(c) and has_backup(c)]
