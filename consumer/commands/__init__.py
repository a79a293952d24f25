"""The sub-commands of ``tierstream``, one module each: its arguments, with ``--help`` on
every one, next to the code that reads them. :mod:`consumer.cli` assembles them.

Each module has ``register(subparsers)``, which adds its parser and sets ``func`` to the
function that runs it. Heavy imports (the models, Kafka, Redis) happen inside those
functions, so ``tierstream --help`` stays quick.
"""
