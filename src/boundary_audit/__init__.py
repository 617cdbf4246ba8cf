"""boundary-audit: a complete, trustworthy audit trail of confined processes' requests."""

__version__ = "0.1.0"
