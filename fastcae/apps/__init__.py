"""What is built on ``distill``: the command line (``cli``), the embedded demos (``demo``, ``demo_transfer``),
teacher training (``teacher``) on labelled sets (``data``), the transfer study (``transfer``) and shipping a
student (``export``: its card, ``.pt2`` and ``.onnx``). Nothing in the library below imports these, except
``DistillResult``'s ``card``/``save``/``export``, which import ``export`` inside the method (tests/test_layout.py)."""
