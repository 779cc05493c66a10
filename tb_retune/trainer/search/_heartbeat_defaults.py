"""The heartbeat's default timing (no Optuna import: the controller's options read it)."""

#: ``(heartbeat_interval, grace_period)`` in seconds: a trial's process records a
#: heartbeat every 5 s; a trial whose heartbeat stays unchanged for 30 s is failed
#: and queued again.
DEFAULT_HEARTBEAT = (5, 30)
