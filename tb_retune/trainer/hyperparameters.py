"""Getting and setting a Keras 3 optimizer's hyperparameters for real.

In Keras 3 only ``learning_rate`` is a variable; every other hyperparameter
(momentum, betas, epsilon, weight decay, clipping, ...) is a Python value that
is baked into the train function when it is traced. Setting
``optimizer.beta_1 = x`` therefore changes nothing in a running ``fit``.
:class:`OptimizerHandle` sets the attribute *and* reports that the train
function must be traced again, which the callback does at the batch boundary.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

from tb_retune._errors import ControlError
from tb_retune.experiment.control import FIXED_AT_BUILD, format_value
from tb_retune.experiment.values import check_float_range
from tb_retune.trainer.distributed import variable_scope

logger = logging.getLogger("tb_retune")


def _to_float(value: Any) -> float | None:
    """``value`` as a float (variables and tensors of every backend), or None."""
    from tb_retune.trainer.backend import to_float

    try:
        return to_float(value)
    except (TypeError, ValueError):
        return None


def _plain(value: Any) -> Any:
    """A JSON-friendly Python value (floats rounded to float32 precision)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    f = _to_float(value)
    if f is None:
        return None
    if not math.isfinite(f):
        return f
    return float(f"{f:.7g}")


class OptimizerHandle:
    """The hyperparameters of one optimizer: read them, change them.

    Args:
        optimizer: A ``keras.optimizers.Optimizer``.
    """

    def __init__(self, optimizer: Any) -> None:
        self.optimizer = optimizer
        self._schedule_replaced = False
        self._cached_names: list[str] | None = None
        self._steady = 0  # how many steady() blocks are open
        self._values: dict[str, Any] | None = None  # what get() read inside them

    # -- reading ---------------------------------------------------------
    def has_schedule(self) -> bool:
        from keras.optimizers.schedules import LearningRateSchedule

        lr = getattr(self.optimizer, "_learning_rate", None)
        return isinstance(lr, LearningRateSchedule) or (callable(lr) and not hasattr(lr, "assign"))

    def schedule_config(self) -> dict[str, Any] | None:
        """The learning-rate schedule in force, serialized by Keras, or None
        for a constant learning rate."""
        if not self.has_schedule():
            return None
        lr = self.optimizer._learning_rate
        try:
            from keras.optimizers import schedules

            config = schedules.serialize(lr)
            return json.loads(json.dumps(config, default=str))
        except Exception:  # a plain callable: named, not rebuildable
            return {"class_name": type(lr).__name__, "module": type(lr).__module__, "config": None}

    def install_schedule(self, config: Mapping[str, Any]) -> bool:
        """Puts the schedule ``config`` (from :meth:`schedule_config`) in force;
        returns whether the train function must be traced again."""
        if self.schedule_config() == config:
            return False
        from keras.optimizers import schedules

        try:
            schedule = schedules.deserialize(dict(config))
        except Exception as e:
            raise ControlError(
                f"learning_rate: cannot rebuild the schedule {config.get('class_name')!r} ({type(e).__name__}: "
                f"{e}); the learning rate in force is kept"
            ) from None
        self.optimizer._learning_rate = schedule
        self._values = None
        self._schedule_replaced = False
        logger.info("retune: the learning-rate schedule %s is in force again", config.get("class_name"))
        return True

    def learning_rate(self) -> float:
        from tb_retune.trainer.backend import to_float

        return float(_plain(to_float(self.optimizer.learning_rate, "optimizer.learning_rate")))

    def _names(self) -> list[str]:
        if self._cached_names is None:
            config = self.optimizer.get_config()
            self._cached_names = [
                name for name, value in config.items()
                if name not in FIXED_AT_BUILD
                and (name == "learning_rate" or value is None or isinstance(value, (bool, int, float)))
                and not (name == "ema_momentum" and not config.get("use_ema"))  # only used with EMA
            ]
        return self._cached_names

    @contextlib.contextmanager
    def steady(self) -> Iterator[None]:
        """A block in which the optimizer changes only through this handle
        (:meth:`set`, :meth:`install_schedule`) or where :meth:`forget` is
        called (a checkpoint loaded, the state synced into the variables):
        :meth:`get` reads the optimizer once in it. One of our hooks is
        such a block: no other code runs in it."""
        self._steady += 1
        try:
            yield
        finally:
            self._steady -= 1
            if not self._steady:
                self._values = None

    def forget(self) -> None:
        """The optimizer's variables were assigned: :meth:`get` reads them again."""
        self._values = None

    def get(self) -> dict[str, Any]:
        """The changeable hyperparameters in force, ``{name: value}``.

        Reads the attributes directly (``get_config()`` once, for the names):
        this is called at every change and every logged step; inside
        :meth:`steady`, once.
        """
        if self._values is not None:
            return dict(self._values)
        out = self._read()
        if self._steady:
            self._values = dict(out)
        return out

    def _read(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        config: dict[str, Any] | None = None
        for name in self._names():
            if name == "learning_rate":
                out[name] = self.learning_rate()
            elif hasattr(self.optimizer, name):
                out[name] = _plain(getattr(self.optimizer, name))
            else:  # stored under another attribute name: ask the config
                config = config if config is not None else self.optimizer.get_config()
                out[name] = _plain(config.get(name))
        return out

    def full_config(self) -> dict[str, Any]:
        config = dict(self.optimizer.get_config())
        config["learning_rate"] = self.learning_rate()
        return {
            "class_name": type(self.optimizer).__name__,
            "module": type(self.optimizer).__module__,
            "config": {k: (_plain(v) if not isinstance(v, (dict, list)) else v) for k, v in config.items()},
            "learning_rate_schedule": self.schedule_config(),
        }

    # -- writing ---------------------------------------------------------
    def check_structural(self, values: Mapping[str, Any]) -> None:
        """Raises ControlError for a change the built optimizer cannot take."""
        opt = self.optimizer
        for name in values:
            if not hasattr(opt, name) and name != "learning_rate":
                raise ControlError(
                    f"hyperparameters.{name}: {type(opt).__name__} has no attribute {name!r}"
                )

    def check_representable(self, where: str, values: Mapping[str, Any]) -> None:
        """Raises ControlError for a value the optimizer's float type cannot hold
        (``1e39`` overflows float32 to inf, ``1e-46`` underflows it to 0)."""
        import numpy as np

        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, float) or value == 0:
                continue
            dtype = self._float_dtype(name)
            info = np.finfo(dtype)
            check_float_range(f"{where}.{name}", value, dtype=dtype.name,
                              largest=float(info.max), tiny=float(info.tiny))

    def _float_dtype(self, name: str) -> Any:
        import numpy as np

        if name == "learning_rate":
            var = getattr(self.optimizer, "_learning_rate", None)
            dtype = getattr(var, "dtype", None)
            if dtype is not None and not callable(dtype):
                try:
                    return np.dtype(str(dtype).replace("tf.", ""))
                except TypeError:
                    pass
        import keras

        return np.dtype(keras.config.floatx())

    def set(self, values: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Sets hyperparameters; returns (old values, whether to retrace).

        The values must have been validated (``_control``). Learning rate
        changes assign the variable; anything else sets the attribute and
        asks for the train function to be traced again.
        """
        opt = self.optimizer
        self.check_structural(values)
        old = self.get()
        try:
            with variable_scope(opt):
                retrace = self._set_values(values, old)
        finally:
            self._values = None  # read again after any assignment, a failed one too
        return old, retrace

    def _set_values(self, values: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
        import keras

        opt = self.optimizer
        retrace = False
        for name, value in values.items():
            if name == "learning_rate":
                if self.has_schedule():
                    with keras.name_scope(opt.name, caller=opt):
                        var = keras.Variable(
                            float(value), name="learning_rate", dtype=keras.config.floatx(),
                            trainable=False, aggregation="only_first_replica",
                        )
                    opt._track_variable(var)
                    opt._learning_rate = var
                    self._schedule_replaced = True
                    retrace = True
                    logger.warning(
                        "retune: the learning-rate schedule of %s is replaced by the constant %s "
                        "from now on", type(opt).__name__, format_value(value),
                    )
                else:
                    opt._learning_rate.assign(float(value))
                continue
            if old.get(name) == value:
                continue
            self._ensure_slots(name, value)
            setattr(opt, name, value)
            retrace = True
        return retrace

    def _ensure_slots(self, name: str, value: Any) -> None:
        """Creates the slot variables that a hyperparameter turns on.

        SGD builds momentum slots only when ``momentum != 0`` and Adam builds
        ``velocity_hat`` only when ``amsgrad``; turning them on during
        training needs those variables, which start at zero.
        """
        opt = self.optimizer
        if not getattr(opt, "built", False):
            return
        trainable = getattr(opt, "_trainable_variables", None)
        if trainable is None:
            return
        if name == "momentum" and value and hasattr(opt, "momentums") and not opt.momentums:
            opt.momentums = opt.add_optimizer_variables(trainable, "momentum")
        if name == "amsgrad" and value and not getattr(opt, "_velocity_hats", None):
            opt._velocity_hats = opt.add_optimizer_variables(trainable, "velocity_hat")
