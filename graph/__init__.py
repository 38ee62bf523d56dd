"""The causal graph: actors, events, drifts and the resources they touch."""
