"""GPU workers as the server sees them: latest telemetry and history, from their heartbeat events."""
