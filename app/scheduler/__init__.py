"""The scheduler run by `tlsrpt serve` and `tlsrpt worker`: after each UTC day ends (plus
a grace period) it closes the day and builds its reports, catches up on missed days, and
delivers due reports. Instances coordinate only through PostgreSQL (`scheduler_jobs`).
"""
