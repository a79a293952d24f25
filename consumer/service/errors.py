"""Errors of the service. ``UserError`` subclasses are things a user can fix: the CLI
prints their message on one line instead of a traceback."""


class UserError(Exception):
    """A problem the user can fix (bad setting, unreachable server, missing file)."""


class SettingsError(UserError):
    """A setting has a value the service cannot use."""


class BrokerUnavailable(UserError):
    """The Kafka bootstrap servers cannot be reached."""


class StateStoreUnavailable(UserError):
    """The state store (Redis) cannot be reached."""


class StateStoreError(Exception):
    """A state store call failed mid-run; the batch is retried."""


class Fenced(Exception):
    """Another instance wrote a partition this instance was processing (a rebalance)."""


class PublishError(Exception):
    """A record could not be published; it stays in the outbox and is retried."""
