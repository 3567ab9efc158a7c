"""The GPU checks: ``bash benchmarks/gpu/run.sh PART [PART...]`` (``--list`` for the parts and their time caps),
the one entry point of a device call; ``check.py`` holds its Python timing parts and summary."""
