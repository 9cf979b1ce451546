"""Benchmarks. ``python -m bench`` measures smsrouter against Kannel and Jasmin
(see bench/__main__.py and bench/RESULTS.md); ``python -m bench.<name>``
runs one component benchmark and prints one JSON line of figures."""
