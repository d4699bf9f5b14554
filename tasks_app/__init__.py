"""The task ledger, the gateway and polling APIs, and the dashboard."""
