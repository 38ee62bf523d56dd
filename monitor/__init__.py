"""Driftline's core: domain types, Terraform state, detection, store, hub and the daemon."""
