"""Calls capability: the per-call flows the controller runs and the journal of every call.

- record.py   CallRecord: what we know about one call, written to the calls table
- journal.py  CallJournal: writes records without ever blocking a call (retry, spool, replay)
- greeting.py GreetingCall: the inbound flow of the public number (answer, greet, one digit)
- plugin.py   wiring: which flow a new Stasis channel gets
"""
