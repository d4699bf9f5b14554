"""The scheduler process (`neutrino scheduler`): time-driven work over the task table, one job each."""
