"""The Django project that wires Neutrino's apps together. Nothing imports it."""
