"""The bridge: the exchange's link to its vault contract on an EVM chain (the sixth process).

Follows the vault's deposit events and credits each once after its confirmations; takes each
withdrawal from PENDING to SENT (permit signed, transaction sent) and CONFIRMED (the vault
paid it) or FAILED (amount returned). ``python -m services.bridge``; docs/operations.md.
"""
