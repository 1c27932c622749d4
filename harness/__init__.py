"""Helpers shared by the tests and `make bench`: real servers on loopback."""
