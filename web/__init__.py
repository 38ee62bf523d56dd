"""The HTTP face of Driftline: REST, WebSocket, SSE and ingest endpoints."""
