"""facecap fitter backend: head models, video and ROI, landmarks, fitting, protocol, CLI."""
import os

# The fitter's products are many small matrices: multi-threaded BLAS only adds
# synchronisation (10x slower on a busy 2-core machine). Must be set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
