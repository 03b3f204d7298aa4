"""Inbound routing: rules over the client store deciding where a call to the public number goes.

Pure logic (rules, hours, distribution, auto-pause) plus the rules store; see docs/routing.md.
"""
