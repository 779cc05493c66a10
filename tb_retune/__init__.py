"""tb-retune: retune a running Keras model from a control file or TensorBoard.

Change an optimizer's hyperparameters while ``model.fit`` runs, go back to any
checkpointed step and branch from there, and see the tuning history as a tree
in TensorBoard's Retune tab.

The public names are imported lazily, so that TensorBoard can load the plugin
(``tb_retune.plugin``) without importing TensorFlow or Keras.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tb_retune._errors import (
    CheckpointError,
    ControlError,
    ExperimentExistsError,
    ExperimentLockedError,
    RetuneError,
)
from tb_retune._version import __version__

if TYPE_CHECKING:
    from tb_retune.trainer.callback import RetuneCallback
    from tb_retune.trainer.controller import RetuneController

__all__ = [
    "CheckpointError",
    "ControlError",
    "ExperimentExistsError",
    "ExperimentLockedError",
    "RetuneCallback",
    "RetuneController",
    "RetuneError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "RetuneCallback":
        from tb_retune.trainer.callback import RetuneCallback

        return RetuneCallback
    if name == "RetuneController":
        from tb_retune.trainer.controller import RetuneController

        return RetuneController
    raise AttributeError(f"module 'tb_retune' has no attribute {name!r}")
