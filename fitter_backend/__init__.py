"""facecap fitter backend: head models, video and ROI, landmarks, fitting, protocol, CLI."""
import os

# The fitter's products are many small matrices: multi-threaded BLAS only adds
# synchronisation (10x slower on a busy 2-core machine). Must be set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# OpenCV reads its log levels once, at first import: errors reach users as our own messages.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

__version__ = "0.1.0"
