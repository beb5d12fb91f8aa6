"""The gateway: the HTTP front door for agents that are not Python objects in-process."""
