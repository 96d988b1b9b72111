"""A stand-in for the ais_bench command line only (no Python API), for tests: no NPU runs here."""
