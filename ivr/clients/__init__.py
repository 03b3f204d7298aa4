"""The client store capability: import of the accounting system's export (``ivr clients import``)
and the client card (``ivr client show``). Queries live in models.clients."""
