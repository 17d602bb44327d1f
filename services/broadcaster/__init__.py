"""The broadcaster: relays Redis pub/sub to WebSocket clients (DESIGN.md)."""
