"""TLSRPT service: collects MTA TLS results, sends RFC 8460 reports, receives reports."""
