"""The gateway: the only door for writes, and the door for reads (DESIGN.md)."""
