"""Public market data and the event streams.

`queries`: reads for the REST endpoints (book, trades, ticker, candles) and for the streams;
`book`: an order book followed event by event; `feed`: the per-process follower of the event
table (LISTEN/NOTIFY as a doorbell, the table as the truth); `session`: one WebSocket client's
subscriptions. The protocol is in docs/api.md (streams section).
"""
