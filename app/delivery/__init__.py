"""Delivery of built reports to their rua (RFC 8460 §5): mail through a relay, HTTPS POST.

`mail` builds the §5.3 message, `signing` DKIM-signs it, `smtp` and `https` hand it over,
`backoff` decides when to try again, `store` and `service` claim due deliveries from
PostgreSQL and record every attempt.
"""
