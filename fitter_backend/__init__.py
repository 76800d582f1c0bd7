"""facecap fitter backend: head models, video and ROI, landmarks, fitting, protocol, CLI."""

__version__ = "0.1.0"
