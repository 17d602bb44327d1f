"""The hub's pub/sub backends: classic and sharded (see base.py)."""
