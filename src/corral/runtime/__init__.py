"""The SDK front door: Supervisor, Run, and the synchronous facade."""
