"""The fast paths: native multi-tensor ops (``native.py``, ``native.cc``), TensorFlow's fused kernels
(``fused.py``) and the exact plain-ops fallback (``fallback.py``)."""
