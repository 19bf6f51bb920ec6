"""The domain: filings, deliveries, their states and errors. Pure Python, no I/O."""
