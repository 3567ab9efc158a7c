"""Fused Triton kernels for the DFKD hot path: one module per op, named as ``fastcae.ops`` names the op.

- ``logit_loss``: ``ops.logit_loss`` (KD at temperature T + the masked adversarial KL + the teacher's CE, one
  pass over the logits); reference ``fastcae.losses.logit_loss``.
- ``bn_stats_loss``: ``ops.bn_stats_loss`` (one teacher BN layer's statistics loss, one read of its input);
  reference ``fastcae.losses.bn_stats_loss``.
- ``supcon_loss``: ``ops.supcon_loss`` (CNCL's supervised-contrastive loss without the B x B similarity
  matrix); reference ``fastcae.losses.supcon_loss``.
- ``cend_linear``: ``ops.cend_linear`` (the ``cae`` generator's CEND front: gather + counter noise + diffuse +
  BatchNorm1d + first Linear); reference ``fastcae.synthesis.cend.cend_linear_reference``.

and one that is not an op: ``shared`` (what every kernel module takes from one place: the interpreter flag,
SM counts, accumulation dtypes, the dtype and device checks and their exception, the launch descriptions,
round-to-nearest division and square root).

The source lives at the top of the repository, ``kernels/``, installed as ``fastcae.kernels`` (pyproject's
package-dir). Each op module also says which launches its launchers make on a GPU of a given SM count
(``aot_launches(n_sm)``), which ``tools/kernel_check.py`` (a developer tool, not installed) compiles ahead of
time for the GPU targets, no GPU needed.

``fastcae.ops`` is the seam that routes a call to a kernel or to its reference; it imports these modules
lazily (Triton may be absent), by the op's name. Importing this package itself needs no Triton.
"""

# Every fused op, named as its module here and its function in fastcae.ops (the one list: ops routes them,
# tools/kernel_check.py compiles them).
OPS = ("logit_loss", "bn_stats_loss", "supcon_loss", "cend_linear")
