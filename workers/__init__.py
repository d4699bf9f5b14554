"""The worker side of Neutrino: process-pool executor, JetStream consumer loop, local supervisor.

The low layer (`workers.executor`, `workers.child`) imports no Django, so the gateway's sync path
and the NATS workers share it.
"""
