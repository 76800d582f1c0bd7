"""A causal smoother for real-time mode: the One-Euro filter (Casiez, Roussel and Vogel, "1 Euro
Filter: a simple speed-based low-pass filter for noisy input in interactive systems", CHI 2012).

Each channel is an exponential low-pass whose cutoff rises with the channel's own smoothed speed:
at rest a low cutoff removes the landmarks' frame-to-frame noise, and in a blink, a jaw drop or a
saccade the cutoff opens and the channel follows with almost no lag. A channel is a vector (the
head's direction, a joint's rotation) whose speed is its length, or a scalar (one expression unit).
A step toward the new value is a fraction of the difference, so expression weights stay inside
the range of the values they were given, and joint rotations are stepped on SO(3) (the
difference is the relative rotation), which keeps them rotations. A channel may also lead: its
output is moved on along its smoothed velocity to make up the low-pass's delay on a steady
motion (the head's pose; not the weights, which it could push past their bounds).
"""
from __future__ import annotations

import dataclasses

import numba
import numpy as np


@numba.njit(cache=True)
def smoothing_factor(cutoff_hz: float, frame_rate_hz: float) -> float:
    """The weight of a new sample in an exponential low-pass with this cutoff frequency."""
    return 1.0 / (1.0 + frame_rate_hz / (2.0 * np.pi * cutoff_hz))


@numba.njit(cache=True)
def _quaternion(rotvec: np.ndarray) -> np.ndarray:
    """(4,) unit quaternion (w, x, y, z) of an axis-angle (3,)."""
    angle = np.sqrt(np.sum(rotvec ** 2))
    scale = 0.5 if angle < 1e-9 else np.sin(angle / 2) / angle
    return np.array([np.cos(angle / 2), scale * rotvec[0], scale * rotvec[1], scale * rotvec[2]])


@numba.njit(cache=True)
def _rotvec(quaternion: np.ndarray) -> np.ndarray:
    """(3,) axis-angle of a unit quaternion (4,), the shorter way round."""
    q = quaternion if quaternion[0] >= 0 else -quaternion
    sine = np.sqrt(np.sum(q[1:] ** 2))
    angle = 2.0 * np.arctan2(sine, q[0])
    return q[1:] * (2.0 if sine < 1e-9 else angle / sine)


@numba.njit(cache=True)
def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(4,) the quaternion product a b (b applied first)."""
    return np.array([a[0] * b[0] - a[1] * b[1] - a[2] * b[2] - a[3] * b[3],
                     a[0] * b[1] + a[1] * b[0] + a[2] * b[3] - a[3] * b[2],
                     a[0] * b[2] - a[1] * b[3] + a[2] * b[0] + a[3] * b[1],
                     a[0] * b[3] + a[1] * b[2] - a[2] * b[1] + a[3] * b[0]])


@numba.njit(cache=True)
def one_euro_step(value: np.ndarray, speed: np.ndarray, new: np.ndarray, out: np.ndarray, rotations: bool,
                  min_cutoff_hz: float, beta: float, speed_cutoff_hz: float, lead: float,
                  frame_rate_hz: float) -> None:
    """Moves ``value`` (K, D) toward this frame's ``new`` (K, D) and updates each channel's
    smoothed velocity ``speed`` (K, D, per second), both in place, and writes the output to
    ``out`` (K, D): ``value`` moved on along ``speed`` by ``lead`` times the low-pass's delay.
    With ``rotations`` the channels are axis-angle rotations (D = 3), stepped by a fraction of
    their relative rotation."""
    speed_weight = smoothing_factor(speed_cutoff_hz, frame_rate_hz)
    for k in range(value.shape[0]):
        if rotations:
            current = _quaternion(value[k])
            inverse = current.copy()
            inverse[1:] = -inverse[1:]
            step = _rotvec(_compose(inverse, _quaternion(new[k])))
        else:
            step = new[k] - value[k]
        speed[k] += speed_weight * (step * frame_rate_hz - speed[k])
        weight = smoothing_factor(min_cutoff_hz + beta * np.sqrt(np.sum(speed[k] ** 2)), frame_rate_hz)
        # On a steady motion v an exponential low-pass trails by v (1 - weight) / weight a frame,
        # and the speed it sees (from its own last value) is v / weight.
        ahead = speed[k] * (lead * (1.0 - weight) / frame_rate_hz)
        if rotations:
            current = _compose(current, _quaternion(weight * step))
            value[k] = _rotvec(current)
            out[k] = _rotvec(_compose(current, _quaternion(ahead)))
        else:
            value[k] += weight * step
            out[k] = value[k] + ahead


@dataclasses.dataclass(frozen=True)
class OneEuroGains:
    """One group of channels' cutoff at rest (Hz), and how fast it rises with speed (Hz per
    unit of the channel per second): cutoff = min_cutoff_hz + beta * |smoothed speed|.
    ``lead`` is the fraction of the low-pass's delay made up by moving the output on along the
    smoothed velocity (0: the plain filter; 1: no delay on a steady motion, more noise; keep 0
    for bounded channels such as expression weights, which a lead can overshoot)."""

    min_cutoff_hz: float
    beta: float
    speed_cutoff_hz: float = 1.0   # the speed's own low-pass (the paper's d_cutoff)
    lead: float = 0.0


class OneEuroFilter:
    """Filters a sequence of (K, D) arrays: K channels of D components each, a channel's speed
    being its vector's length; ``rotations``: each channel is an axis-angle rotation."""

    def __init__(self, gains: OneEuroGains, frame_rate_hz: float, rotations: bool = False):
        self.gains, self.frame_rate_hz, self.rotations = gains, float(frame_rate_hz), rotations
        self.value: np.ndarray | None = None
        self.speed: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the past: the next value passes through (after a gap in the track)."""
        self.value = self.speed = None

    def __call__(self, new: np.ndarray) -> np.ndarray:
        """The filtered value for this frame's ``new`` (K, D); the first frame passes through."""
        new = np.asarray(new, np.float64)
        if self.value is None:
            self.value, self.speed = new.copy(), np.zeros_like(new)
            return new.copy()
        out, g = np.empty_like(new), self.gains
        one_euro_step(self.value, self.speed, new, out, self.rotations, g.min_cutoff_hz, g.beta, g.speed_cutoff_hz,
                      g.lead, self.frame_rate_hz)
        return out


@dataclasses.dataclass(frozen=True)
class PoseSmoothing:
    """Gains of real-time mode's smoother, per kind of parameter: expression weights, the head's
    rotation (the joints from the root to the eyes' parent, radians), its direction from camera
    0 (translation x / z and y / z: where its image is) and its depth (metres: what one camera
    sees worst, most of the head's noise, and the least visible when it lags), and the joints
    below the head (eyes, a jaw)."""

    expression: OneEuroGains
    head_rotation: OneEuroGains
    direction: OneEuroGains
    depth: OneEuroGains
    face_rotation: OneEuroGains


def head_joints(joint_parents: np.ndarray, eye_joints: np.ndarray) -> np.ndarray:
    """The joints that carry the whole head: the eyes' parent and its ancestors up to the root."""
    chain, joint = [], int(joint_parents[eye_joints[0]])
    while joint >= 0:
        chain.append(joint)
        joint = int(joint_parents[joint])
    return np.array(sorted(chain), int)


class FrameSmoother:
    """Real-time mode's per-frame output: expression (E,), rotations (J, 3) and translation (3,)
    of each frame in turn, each kind through its own :class:`OneEuroFilter`."""

    def __init__(self, gains: PoseSmoothing, frame_rate_hz: float, joint_parents: np.ndarray,
                 eye_joints: np.ndarray):
        self.head = head_joints(joint_parents, eye_joints)
        self.face = np.setdiff1d(np.arange(len(joint_parents)), self.head)
        self.expression = OneEuroFilter(gains.expression, frame_rate_hz)
        self.head_rotation = OneEuroFilter(gains.head_rotation, frame_rate_hz, rotations=True)
        self.face_rotation = OneEuroFilter(gains.face_rotation, frame_rate_hz, rotations=True)
        self.direction = OneEuroFilter(gains.direction, frame_rate_hz)
        self.depth = OneEuroFilter(gains.depth, frame_rate_hz)

    def reset(self) -> None:
        """Start afresh: the next frame passes through unfiltered."""
        for smooth in (self.expression, self.head_rotation, self.face_rotation, self.direction, self.depth):
            smooth.reset()

    def __call__(self, expression: np.ndarray, rotations: np.ndarray, translation_m: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """This frame's filtered (expression (E,), rotations (J, 3), translation_m (3,))."""
        rotations = np.array(rotations, np.float64)
        rotations[self.head] = self.head_rotation(rotations[self.head])
        rotations[self.face] = self.face_rotation(rotations[self.face])
        # Camera 0 is the world frame, looking along its Z axis. Direction and depth are filtered
        # apart, so a lagging depth changes the head's image size but not where the image is.
        direction = self.direction(translation_m[None, :2] / translation_m[2])[0]
        depth_m = self.depth(translation_m[None, 2:])[0]
        translation_m = np.concatenate([direction * depth_m, depth_m])
        return self.expression(expression[:, None])[:, 0], rotations, translation_m
