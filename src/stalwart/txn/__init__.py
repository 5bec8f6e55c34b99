"""Distributed transactions: two-phase commit and Sagas; see docs/transactions.md."""
