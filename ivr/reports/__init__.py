"""Reports capability: the ``ivr report`` commands and the inbound call table (models.reports)."""
