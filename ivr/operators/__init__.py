"""Operators capability: the ``ivr operator`` commands over models.operators (state, history)."""
