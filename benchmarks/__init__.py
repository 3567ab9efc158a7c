"""fastcae's benchmarks: the pytest-benchmark suites (``test_bench_*.py``, with ``scales.py`` and
``prior_design.py``), ``fidelity/`` (the fidelity tiers), ``peers/`` (other projects' official code on the same
pair and budget), ``gpu/`` (the GPU checks, ``bash benchmarks/gpu/run.sh PART``) and ``results/`` (what they
measured, indexed in ``results/README.md``).

One import style, from the repository root: the library as ``fastcae``, one benchmark module from another as
``benchmarks.X`` (``from benchmarks.scales import DEVICE``), a subpackage's own modules relatively
(``from .cases import CASES`` inside ``fidelity/``); no bare ``from scales import`` and no ``sys.path`` edits. So
every module runs as ``python -m benchmarks.X`` and every suite as ``python -m pytest benchmarks/...``.
"""
