"""The ``tensorboard_plugins`` entry point of tb-retune.

TensorBoard imports every entry point when it starts. This module imports
nothing heavy (no TensorFlow, Keras or NumPy, nothing of tb-retune beyond the
standard library), so a broken dependency of ours can only disable the Retune
tab, never TensorBoard itself: the plugin class is imported in :meth:`load`,
where TensorBoard catches and logs a failure.
"""

from __future__ import annotations

from typing import Any

from tensorboard.plugins import base_plugin


class RetuneLoader(base_plugin.TBLoader):
    """Loads :class:`tb_retune.plugin.retune_plugin.RetunePlugin` lazily."""

    def load(self, context: base_plugin.TBContext) -> Any:
        from tb_retune.plugin.retune_plugin import RetunePlugin

        return RetunePlugin(context)
