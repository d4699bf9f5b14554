"""The worker process of one NATS pool (`neutrino serve --mode nats`); `worker.py` says how its parts fit."""
