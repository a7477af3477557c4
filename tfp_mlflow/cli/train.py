"""`tfp train`."""
