"""smartquant: a CXL.mem controller serving bit-plane weights at a run-time precision."""
__version__ = "0.1.0"
