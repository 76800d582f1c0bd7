"""Software rendering in numpy, one module per idea:

- camera: pinhole projection and look-at / orbit cameras (the shared pixel convention)
- rasterise: z-buffer rasteriser -> per-pixel triangle ids, barycentrics, depth
- shading: vertex normals, Lambert shading with coloured lights, per-vertex albedo
- visibility: which surface points the camera sees
- head_png: clay renders of head models (``python -m fitter_backend.render``)
"""
