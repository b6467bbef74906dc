"""postrl."""
