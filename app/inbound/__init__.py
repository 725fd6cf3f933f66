"""Incoming reports: the service as the `rua` endpoint for the operator's own domains.

`mail` finds the report in a report mail, `dkimcheck` gives its DKIM verdict with keys
from `keys` (the service resolver), `store` holds the SQL, `service` receives,
de-duplicates and summarises, and `lmtp` is the optional built-in listener for MTAs
that deliver by LMTP.
"""
