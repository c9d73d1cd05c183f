"""Tessera's benchmark harness (`make bench`): starts its own stack and prints one table."""
