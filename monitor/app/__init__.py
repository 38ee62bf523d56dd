"""The composition root: configuration, the daemon, the CLI, the demo and source wiring."""
