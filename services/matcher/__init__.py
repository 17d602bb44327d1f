"""The matcher: one consumer per market stream, matching in Lua (DESIGN.md)."""
