"""The trainer side: the callback, the controller facade and its parts, checkpoints."""
