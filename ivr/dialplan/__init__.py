"""Admins change the PBX safely: the whole Asterisk configuration is rendered from templates
(``asterisk-conf/``, ``dialplans/``, an optional admin folder) and the database (operators with
generated secrets), checked in a throw-away Asterisk, diffed against what is live, applied with
module reloads over AMI and a smoke check, rolled back automatically when the check fails, and
every applied version is kept in Postgres (``dialplan_versions``).

Modules: ``files`` (render, read, diff, mask), ``verify`` (what the product relies on, asked of a
running Asterisk), ``check`` (the throw-away instance), ``store`` (versions), ``apply`` (apply and
rollback), ``cli`` (``ivr dialplan ...``).
"""
