"""Tools: the registry of typed tool functions an agent may call."""
