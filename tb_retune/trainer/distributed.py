"""Data-parallel training: where variables are created, and which process leads.

Two engines are supported, both existing ones:

- ``tf.distribute.MirroredStrategy`` (TensorFlow backend, one process): the
  model's and optimizer's variables are ``MirroredVariable``s. Reading them
  goes through numpy (``hyperparameters._to_float``); assigning an existing
  one is mirrored by TensorFlow; a *new* variable (the learning-rate
  variable that replaces a schedule, slots that a hyperparameter turns on)
  must be created in the strategy's scope, which :func:`variable_scope` gives.
- ``keras.distribution.DataParallel`` over processes joined by
  ``jax.distributed.initialize`` (JAX backend): see ``docs/distributed.md``.
"""

from __future__ import annotations

import contextlib
from typing import Any

__all__ = ["variable_scope"]


def variable_scope(optimizer: Any) -> contextlib.AbstractContextManager[Any]:
    """The scope in which new optimizer variables must be created: the
    strategy's under ``tf.distribute`` (so they are mirrored on every
    replica), a no-op otherwise."""
    strategy = getattr(optimizer, "_distribution_strategy", None)
    scope = getattr(strategy, "scope", None)
    if scope is None:
        return contextlib.nullcontext()
    import tensorflow as tf

    if tf.distribute.has_strategy() or strategy is tf.distribute.get_strategy():
        return contextlib.nullcontext()  # already inside it, or the default strategy
    return scope()  # type: ignore[no-any-return]
