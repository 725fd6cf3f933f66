"""Delivery of built reports to their rua (RFC 8460 §5): mail through a relay, HTTPS POST.

`mail` builds the §5.3 message and `signing` DKIM-signs it; `smtp` and `https` hand a
report over; `senders` opens them once per process; `attempt` makes one try and decides
the next state, with `backoff` for retries; `service` claims due deliveries from
PostgreSQL under a lease and records every attempt (`store`); `suppression` is the
operator's list of silenced rua (`suppression_store`).
"""
