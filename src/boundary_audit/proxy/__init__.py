"""The enforcement point (the proxy branch owns this file; take its version on merge)."""
