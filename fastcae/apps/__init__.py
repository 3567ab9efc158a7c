"""What is built on ``distill``: the command line (``cli``), the embedded demos (``demo``, ``demo_transfer``),
teacher training (``teacher``) on labelled sets (``data``), the transfer study (``transfer``) and NVML
throughput reports (``profiling``). Nothing in the library below imports these."""
