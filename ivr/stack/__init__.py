"""Provisioning of the stack the product runs on: Asterisk (private chroot instances or a
system install) and PostgreSQL.

Public entry points:

* :func:`ivr.stack.render.render_config` - Asterisk configuration rendered from Settings.
* :class:`ivr.stack.asterisk.AsteriskInstance` - a named Asterisk instance in the cached chroot.
* :func:`ivr.stack.asterisk.install_system` - the same configuration for a system Asterisk.
* :func:`ivr.stack.postgres.ensure_database` - a reachable database, created if needed.
* :data:`ivr.stack.cli.stack_group` - the ``ivr stack`` click group.
"""
