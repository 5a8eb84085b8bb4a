"""Servers: the FastAPI base and the resources-server base, serving, the head server, process launch and placement."""
