"""Worker pools: their definitions, their workers, scaling and Kubernetes rendering."""
