"""Benchmarks of authbroker, each beside a baseline measured in the same run: `make bench`."""
