"""Backends run attempts: local processes, Kubernetes Jobs."""
