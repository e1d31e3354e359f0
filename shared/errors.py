"""The one error root of rollguard's shared package and its few subclasses."""


class RollguardError(Exception):
    """Base of every error rollguard raises on purpose."""


class MessageError(RollguardError):
    """A message on the wire is malformed, oversized, unknown or fails validation."""

    def __init__(self, message: str, *, topic: str | None = None, reason: str = "invalid") -> None:
        self.topic = topic
        # A short fixed label (invalid, malformed, oversized, topic, host-mismatch)
        # for counters, so metrics never carry unbounded text.
        self.reason = reason
        super().__init__(f"{topic}: {message}" if topic else message)


class ConfigError(RollguardError):
    """A configuration file is missing, unreadable or invalid; the message names where."""


class SignatureError(RollguardError):
    """A command signature or key is missing, malformed or does not verify."""
