"""What differs between Keras's backends, TensorFlow, JAX and PyTorch, in one place.

The rest of the trainer is written against Keras's own API; what Keras leaves
to the backend lives here:

- **Reading a variable** as a number or a NumPy array. On JAX, ``fit`` keeps
  the training state (weights, optimizer slots, the step count) outside the
  Keras variables during an epoch: their values are ``None`` until the state
  is synced back (``Callback.model`` does it; so does ``jax_state_sync``).
  A read of such a variable raises :class:`BackendError` saying so, never a
  ``TypeError`` from inside.
- **Syncing that state** only on the batches where something is due:
  :func:`fit_state_sync` gives the controller a callable that reaches the
  model through the callback's own ``self.model`` (Keras's ``Callback.model``
  property, which calls ``jax_state_sync()``). After the sync, ``fit`` reads
  the variables again for the next step, so what the controller assigns (a
  learning rate, restored weights, new momentum slots) is what the next
  jitted step uses.
- **Rebuilding the train function** after a hyperparameter that is baked
  into the compiled step changed: a new ``tf.function`` (retrace) on
  TensorFlow, a new ``jax.jit`` (re-jit) on JAX; on PyTorch the step runs
  eagerly and reads the attribute at every call (with ``jit_compile=True``
  ``torch.compile`` is rebuilt the same way).
- **The end of the data**: ``StopIteration``, and TensorFlow's
  ``OutOfRangeError`` when TensorFlow is in the process.
- **Custom loops**: ``RetuneController.function`` wraps ``tf.function`` and is
  TensorFlow's; :func:`tf_function` says what to do instead on the others.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from tb_retune._errors import RetuneError

#: The backends that train (Keras's ``numpy`` and ``openvino`` backends only infer).
SUPPORTED = ("tensorflow", "jax", "torch")

#: The one-line switch, for messages.
SWITCH = "set KERAS_BACKEND=tensorflow, jax or torch before keras is imported"

_PACKAGES = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib"), "torch": ("torch",)}


class BackendError(RetuneError, RuntimeError):
    """Something the running Keras backend cannot do, or cannot do yet here.

    The message names the backend and what to use instead.
    """


def name() -> str:
    """The Keras backend of this process: ``"tensorflow"``, ``"jax"``, ``"torch"``, ..."""
    import keras

    return str(keras.backend.backend())


def versions() -> dict[str, str]:
    """``{"backend": name, <package>: version, ...}`` for the run's record."""
    backend = name()
    out = {"backend": backend}
    for package in _PACKAGES.get(backend, ()):
        try:
            module = __import__(package)
            out[package] = str(getattr(module, "__version__", "unknown"))
        except ImportError as e:  # pragma: no cover - the backend itself imported it
            out[package] = f"unavailable: {e}"
    return out


def check_fit(model: Any) -> None:
    """Raises :class:`BackendError` at ``on_train_begin`` for what the backend
    cannot do with ``RetuneCallback``, naming the backend and the alternative."""
    backend = name()
    if backend not in SUPPORTED:
        raise BackendError(
            f"RetuneCallback needs a Keras backend that trains; this process runs "
            f"KERAS_BACKEND={backend!r}. Supported: {', '.join(SUPPORTED)} ({SWITCH})."
        )


# -- reading variables --------------------------------------------------------
def _value(variable: Any, what: str) -> Any:
    if getattr(variable, "_value", 0) is None:
        # JAX's fit purged the variable: its value lives in the trainer's state.
        raise BackendError(
            f"{what} ({getattr(variable, 'path', variable)!r}) has no value: on the {name()} backend "
            f"Keras keeps the training state outside the variables during fit. RetuneCallback syncs it "
            f"itself; in a custom JAX loop pass state_sync= to RetuneController.begin() (a function "
            f"that assigns your state to the variables; see demo/custom_loop_jax.py)."
        )
    return variable


def to_numpy(variable: Any, what: str = "variable") -> np.ndarray:
    """A fresh NumPy copy of a variable's value (later updates do not touch it)."""
    # Keras's Variable.numpy() is np.array(value): a copy on every backend
    # (torch's CPU tensors would otherwise share their memory with NumPy).
    return np.asarray(_value(variable, what).numpy())


def to_int(variable: Any, what: str = "variable") -> int:
    """A scalar variable as a Python int (e.g. ``optimizer.iterations``)."""
    return int(to_numpy(variable, what))


def to_float(value: Any, what: str = "value") -> float:
    """A scalar variable, tensor or number as a Python float."""
    if hasattr(value, "assign") and hasattr(value, "numpy"):  # a Keras variable
        return float(to_numpy(value, what))
    try:
        return float(value)
    except (TypeError, ValueError):
        # float() refuses some tensors (a MirroredVariable under tf.distribute):
        # through NumPy, as Keras's own callbacks read the learning rate.
        return float(np.asarray(value))


# -- the end of the data --------------------------------------------------------
def end_of_data_errors() -> tuple[type[BaseException], ...]:
    """What a train function raises at the end of the data, which ``fit`` handles."""
    errors: list[type[BaseException]] = [StopIteration]
    tf = sys.modules.get("tensorflow")
    if tf is not None:  # a tf.data input, on any backend
        errors.append(tf.errors.OutOfRangeError)
    return tuple(errors)


# -- the compiled step --------------------------------------------------------
def rebuild_train_function(model: Any) -> None:
    """Builds ``fit``'s train function again, so that hyperparameters baked
    into the compiled step are read again: a retrace on TensorFlow, a re-jit
    on JAX, a new ``torch.compile`` (or the eager step again) on PyTorch.

    On JAX, ``jax.jit`` keeps one trace per function object: Keras jits the
    model's ``train_step`` again, and the old trace goes with the old train
    function, which nothing else holds (tests/test_backends.py proves the
    new hyperparameter is in the step). A custom loop jits a new function
    object (see demo/custom_loop_jax.py)."""
    model.make_train_function(force=True)


def fit_state_sync(callback: Any) -> Callable[[], None] | None:
    """What the controller calls before it reads or writes variables in ``fit``.

    On JAX: a function that reads the callback's own ``self.model``, whose
    property syncs Keras's JAX training state into the variables (and makes
    ``fit`` read them again before the next step). None on the other
    backends, whose variables always hold the state.
    """
    if name() != "jax":
        return None

    def sync() -> None:
        _ = callback.model  # keras.callbacks.Callback.model calls model.jax_state_sync()

    return sync


def tf_function(fn: Callable[..., Any], **kwargs: Any) -> Callable[..., Any]:
    """``tf.function(fn)``, for ``RetuneController.function``: TensorFlow only."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, **kwargs)  # type: ignore[no-any-return]
    instead = {
        "jax": "jit your step yourself (jax.jit over optimizer.stateless_apply) and jit it again "
               "whenever controller.trace_version changes; see demo/custom_loop_jax.py",
        "torch": "call your step directly: it runs eagerly and reads the hyperparameters at every "
                 "call (if you torch.compile it, compile it again whenever controller.trace_version "
                 "changes); see demo/custom_loop_torch.py",
    }.get(backend, SWITCH)
    raise BackendError(
        f"RetuneController.function() wraps tf.function and needs KERAS_BACKEND=tensorflow; this "
        f"process runs the {backend!r} backend. Instead, {instead}."
    )


def retrace_on_change(fn: Callable[..., Any], version: Callable[[], int], **kwargs: Any) -> Callable[..., Any]:
    """``tf.function(fn)``, traced again whenever ``version()`` changes (a hyperparameter
    baked into the trace changed): ``RetuneController.function``. TensorFlow only."""
    state: dict[str, Any] = {"version": version(), "compiled": tf_function(fn, **kwargs)}

    def call(*args: Any, **kw: Any) -> Any:
        if state["version"] != version():
            state["compiled"] = tf_function(fn, **kwargs)
            state["version"] = version()
        return state["compiled"](*args, **kw)

    return call
