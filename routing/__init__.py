"""Inbound routing: rules over the client store deciding where a call to the public number goes.

The rules engine and workload distribution land with the inbound issue; see docs/architecture.md.
"""
