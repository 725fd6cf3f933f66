"""The DNS check and set-up help: what an operator must publish, and what is wrong.

`service` checks a domain (`check_domain`: MX hosts with TLSA and per-host TLSRPT,
`_smtp._tls`, MTA-STS through `mtasts`, the STARTTLS probe in `probe`); `dkim` makes a
DKIM key and checks the published one (`check_dkim`); `doctor` checks the configuration
end to end; `model` is the result, shared by the CLI, the API and the web page.
"""
