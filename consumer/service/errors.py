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
    """Another instance owns a partition this instance was processing (a rebalance), or
    wrote something the batch read; nothing of the batch was written."""


class StateRolledBack(Fenced):
    """The state store lost writes this instance made (a restore, a failover to a lagging
    replica): the partitions must be read again from the store's applied offsets."""

    def __init__(self, message: str, *, partitions: list[tuple[str, int]]) -> None:
        super().__init__(message)
        self.partitions = partitions


class StateLost(UserError):
    """The state store holds nothing for partitions the group has consumed: the state was
    lost, or the key prefix is not this deployment's. The service refuses to go on unless
    TIERSTREAM_ON_STATE_LOSS says what to do."""


class BrokerError(Exception):
    """A Kafka call failed mid-run (a broker restarting, a timeout); retried."""


class PublishError(Exception):
    """A record could not be published; it stays in the outbox and is retried."""


class NotAcknowledged(UserError):
    """Records a command sent to Kafka that the brokers refused or did not acknowledge in
    time (:mod:`consumer.service.acked_sends`)."""


class PartitionCountChanged(UserError):
    """The input topic has another partition count than the one the state was written
    for: users would be looked for in the wrong partition. ``tierstream state
    repartition`` moves them (with the service stopped)."""


class ClientWedged(BrokerError):
    """A Kafka client call did not come back within its deadline
    (:mod:`consumer.service.bounded_call`); the client is replaced and the batch retried."""


class PartitionStalled(ClientWedged):
    """The Kafka consumer stopped reading a partition it holds while the broker has
    records past its position (:mod:`consumer.service.stall_watch`); the consumer is
    replaced and the partition read again from the state store's applied offset."""


class PopulationsNotCounted(UserError):
    """The state was written by a version that did not count users by tier: the tier
    populations would be wrong. ``tierstream state recount`` counts them (with the
    service stopped)."""


class ModelUnreadable(UserError):
    """The group's model in the state store is one this version cannot read (saved by an
    older version, whose features or schema differ): ``tierstream model fit`` and
    ``tierstream model import`` replace it (docs/runbook.md)."""
