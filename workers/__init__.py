"""The worker side of Neutrino, in two layers.

`workers.engine` imports no Django: the process-pool executor and its children, the JetStream topology,
the NATS clients and the embedded nats-server. `workers.pool_worker` is the worker process of one pool
(a Django process built on the apps and the engine); `workers.dev` is `neutrino dev`'s supervisor.
"""
