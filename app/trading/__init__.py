"""The matching engine: instruments, orders and trades (docs/trading.md)."""
