"""DNS for the service: an async resolver on dnspython and the `_smtp._tls` lookup.

`resolver` talks to the configured nameservers (timeout, concurrency limit, short cache)
and turns DNS failures into two outcomes: an answer (possibly empty) or
`TemporaryDnsError`. `lookup` applies RFC 8460 §3 to a TXT answer.
"""
