"""The Postfix drop-in: receive libtlsrpt datagrams and forward their counts without loss.

`listener` binds the Unix datagram socket, `reader_process` reads it in a child process
(`CollectorOptions.reader_process`; else `listener.DatagramReader`, a thread stamping
datagrams with the injected clock), `batch`
counts parsed datagrams per UTC day into batches of exact counters, `spool` keeps batches
on disk while the sink is unreachable, `sinks` deliver them (local database or a remote
service's `/v1/tallies`; both by the ingest service's rules), and `service` runs the
whole pipeline and its metrics.
"""
