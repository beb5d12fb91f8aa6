"""Telemetry: the audit log now; spans and metrics later."""
