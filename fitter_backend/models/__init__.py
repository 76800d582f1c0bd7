"""What every stage that runs an ONNX model shares: the session helper (:mod:`.onnx_session`),
the model contract (:mod:`.contract`: metadata, ROI spec, affine anchors) and model errors
(:mod:`.errors`). Neutral ground: the ROI stage and the landmark stage both import it, and it
imports neither."""

#: Where networks run, in the add-on's words (the protocol sends "cpu" or "gpu"; "auto" is the
#: command line's: the GPU when it works, else the CPU). One vocabulary end to end.
DEVICES = ("cpu", "gpu", "auto")
