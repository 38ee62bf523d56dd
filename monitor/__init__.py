"""Driftline's core: the contract, Terraform state, detection, lifecycle, pipeline, store, hub."""
