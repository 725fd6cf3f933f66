"""Report building: per-domain outcomes, built RFC 8460 reports and their deliveries."""
