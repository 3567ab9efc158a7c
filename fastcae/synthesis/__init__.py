"""What the generator is made of: class embeddings from a text encoder (``embeddings``, with a safe on-disk
cache), CEND's category-aware noise (``cend``) drawn from a counter-based Philox stream (``philox``) that the
fused kernel reproduces bit for bit, and the generator itself (``generator``). ``fastcae.paradigms`` builds
the three synthesizers from these parts."""
