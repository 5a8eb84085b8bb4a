"""Helpers for tests of servers and of the whole system: serving an app on loopback, a stub upstream."""
