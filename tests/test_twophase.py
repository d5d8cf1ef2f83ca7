"""The two-phase pseudo-anomaly net (paper 004) and its DRAEM baseline: the random-shape synthesis
(mask sizes, the ROI, the shift inside the mask), weight standardisation, the networks' sizes
against the documented architectures, the focal and SSIM losses against hand-computed values, the
frozen restoration net in phase 2, exact resume, and the CLI (train, predict) on the demo dataset."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from scipy import ndimage

from autouad.cli.plan_and_preprocess import main_plan_and_preprocess
from autouad.cli.predict import main as predict_main
from autouad.cli.train import main as train_main
from autouad.methods.twophase.draem import DRAEMTrainer
from autouad.methods.twophase.draem_network import DiscriminativeSubNetwork, ReconstructiveSubNetwork
from autouad.methods.twophase.losses import focal_loss, l1_loss, l2_loss, ssim, ssim_loss
from autouad.methods.twophase.network import RestorationUNet, WeightStandardizedConv2d, group_count
from autouad.methods.twophase.synthesis import (SynthesisSettings, anomaly_region, elliptical_kernel,
                                                random_shape_masks, shift_inside_masks, synthesise)
from autouad.methods.twophase.trainer import TwoPhaseTrainer
from autouad.planning.plans_files import find_plans
from autouad.utils.files import load_json, save_json
from dataset_conversion import demo
from tests.conftest import autouad_folders, ready_to_train, same, state

DATASET = "Dataset007_DemoBrainMRI"
TRAINERS = {"twophase": TwoPhaseTrainer, "draem": DRAEMTrainer}
# Narrow networks keep the trainings of these tests (CLI included) to seconds.
SMALL_NETWORK = {"restoration_width": 4, "segmentation_width": 4}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- synthesis ------------------------------------------------------------------------------------
def test_elliptical_kernel_is_opencvs_ellipse():
    """OpenCV's 9x9 MORPH_ELLIPSE: rows of 1, 7, 7, 9, 9, 9, 7, 7, 1 pixels, centred."""
    kernel = elliptical_kernel(9)
    assert kernel.sum(axis=1).tolist() == [1, 7, 7, 9, 9, 9, 7, 7, 1]
    assert np.array_equal(kernel, kernel[::-1]) and np.array_equal(kernel, kernel[:, ::-1])
    assert kernel[0].tolist() == [False] * 4 + [True] + [False] * 4
    assert elliptical_kernel(3).sum() == 5  # a cross


@pytest.mark.parametrize("side", [256, 128, 64])
def test_masks_have_the_papers_sizes_at_every_slice_size(side):
    """Blobs the opening cannot remove: every blob off the border holds at least the kernel's area;
    a mask covers a few percent of the slice (median 2-8 %, never more than 40 %), and scaling sigma
    and kernel with the slice keeps that share the same at every size."""
    settings = SynthesisSettings()
    sigma, kernel = settings.scaled_to((side, side))
    assert (sigma, kernel) == {256: (15.0, 9), 128: (7.5, 5), 64: (3.75, 3)}[side]
    masks = random_shape_masks(np.random.default_rng(side), 40, (side, side), sigma, 200, kernel)
    fractions = masks.mean(axis=(1, 2))
    assert (fractions > 0).mean() >= 0.9
    assert fractions.max() <= 0.4 and 0.02 <= np.median(fractions) <= 0.08
    area = elliptical_kernel(kernel).sum()
    for mask in masks:
        labels, count = ndimage.label(mask)
        for index in range(1, count + 1):
            blob = labels == index
            touches_border = blob[0].any() or blob[-1].any() or blob[:, 0].any() or blob[:, -1].any()
            assert touches_border or blob.sum() >= area


def test_masks_are_restricted_to_the_roi_or_the_foreground():
    rng = np.random.default_rng(0)
    images = rng.uniform(0.1, 0.9, (6, 1, 64, 64)).astype(np.float32)
    yy, xx = np.mgrid[:64, :64]
    roi = np.broadcast_to((yy - 32) ** 2 + (xx - 28) ** 2 < 22 ** 2, (6, 64, 64)).copy()
    sigma, kernel = SynthesisSettings().scaled_to((64, 64))
    unrestricted = random_shape_masks(np.random.default_rng(1), 6, (64, 64), sigma, 200, kernel)
    synthetic = synthesise(images, roi, np.random.default_rng(1))
    assert np.array_equal(synthetic.masks, unrestricted & roi)  # the same blobs, cut to the ROI
    assert synthetic.masks.any() and not (synthetic.masks & ~roi).any()

    # no ROI: the non-zero foreground of any channel; an empty slice: the whole slice
    images[:, :, :, :20] = 0.0
    images[5] = 0.0
    region = anomaly_region(images, None)
    assert not region[:5, :, :20].any() and region[:5, :, 20:].all() and region[5].all()
    synthetic = synthesise(images, None, np.random.default_rng(1))
    assert not synthetic.masks[:5, :, :20].any()


def test_the_shift_lands_inside_the_mask_and_nothing_changes_outside():
    """Mid-grey slices (127.5 of 255) so that no shift clips: inside the mask the change is exactly
    C / 255 with 60 <= |C| <= 100, of both signs; outside it nothing changes (the paper's text; its
    equation (1) as printed would shift the outside)."""
    images = np.full((64, 1, 64, 64), 0.5, np.float32)
    synthetic = synthesise(images, None, np.random.default_rng(3))
    masks, shifts = synthetic.masks, synthetic.shifts
    assert shifts.shape == (64, 1) and masks.any(axis=(1, 2)).mean() > 0.9
    assert (np.abs(shifts) >= 60).all() and (np.abs(shifts) <= 100).all()
    assert (shifts > 0).any() and (shifts < 0).any()
    change = synthetic.images - images
    assert not change[~masks[:, None]].any()
    inside = np.broadcast_to(shifts[:, :, None, None] / 255.0, change.shape)[masks[:, None]]
    np.testing.assert_allclose(change[masks[:, None]], inside, atol=1e-6)
    assert synthetic.images.dtype == np.float32


def test_shifts_clip_to_the_valid_range_and_each_channel_gets_its_own():
    images = np.stack([np.full((1, 4, 4), 0.9), np.full((1, 4, 4), 0.2)], axis=1).astype(np.float32)
    masks = np.zeros((1, 4, 4), bool)
    masks[0, 1:3, 1:3] = True
    shifted = shift_inside_masks(images, masks, np.array([[60.0, -100.0]]))
    assert shifted[0, 0][masks[0]].tolist() == [1.0] * 4 and shifted[0, 1][masks[0]].tolist() == [0.0] * 4
    assert np.array_equal(shifted[0][:, ~masks[0]], images[0][:, ~masks[0]])
    two_channels = synthesise(np.full((5, 2, 32, 32), 0.5, np.float32), None, np.random.default_rng(0))
    assert two_channels.shifts.shape == (5, 2) and not np.array_equal(two_channels.shifts[:, 0],
                                                                      two_channels.shifts[:, 1])


def test_synthesis_is_a_function_of_its_generator():
    images = np.random.default_rng(0).uniform(0, 1, (3, 1, 32, 32)).astype(np.float32)
    a, b = (synthesise(images, None, np.random.default_rng([1, 2, 3])) for _ in range(2))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    c = synthesise(images, None, np.random.default_rng([1, 2, 4]))
    assert not np.array_equal(a.masks, c.masks)


# ---- networks -------------------------------------------------------------------------------------
def test_weight_standardised_convolution():
    torch.manual_seed(0)
    conv = WeightStandardizedConv2d(3, 5, 3)
    weight = conv.standardized_weight().detach().flatten(1)
    assert torch.allclose(weight.mean(1), torch.zeros(5), atol=1e-6)
    assert torch.allclose(weight.std(1), torch.ones(5), atol=1e-3)
    x = torch.randn(2, 3, 8, 8)
    expected = F.conv2d(x, conv.standardized_weight(), conv.bias)
    assert torch.allclose(conv(x), expected, atol=1e-6)
    before = conv(x)
    with torch.no_grad():  # a per-filter affine change of the stored weights changes nothing
        conv.weight.mul_(torch.arange(1.0, 6.0).view(5, 1, 1, 1)).add_(0.3)
    assert torch.allclose(conv(x), before, rtol=1e-3, atol=1e-3)  # up to the 1e-5 added to the std


def test_group_norm_groups_follow_the_middle_divisor():
    assert [group_count(c) for c in (64, 128, 256, 512, 4)] == [8, 16, 16, 32, 2]


def conv_params(kernel, c_in, c_out):
    return kernel * kernel * c_in * c_out + c_out  # every convolution here has a bias


def ws_block_params(c_in, c_out):
    """Two weight-standardised 3x3 convs, each with a GroupNorm (scale and shift per map)."""
    return conv_params(3, c_in, c_out) + 2 * c_out + conv_params(3, c_out, c_out) + 2 * c_out


def unet_params(channels, w):
    f = (w, 2 * w, 4 * w, 8 * w)
    encoder = ws_block_params(channels, f[0]) + sum(ws_block_params(a, b) for a, b in zip(f[:-1], f[1:]))
    decoder = sum(conv_params(2, f[i + 1], f[i]) + ws_block_params(2 * f[i], f[i]) for i in range(3))
    return encoder + decoder + conv_params(1, f[0], channels)


def cbr(c_in, c_out):  # conv, batch norm
    return conv_params(3, c_in, c_out) + 2 * c_out


def reconstructive_params(channels, b):
    encoder = (cbr(channels, b) + cbr(b, b) + cbr(b, 2 * b) + cbr(2 * b, 2 * b) + cbr(2 * b, 4 * b)
               + cbr(4 * b, 4 * b) + cbr(4 * b, 8 * b) + cbr(8 * b, 8 * b) + 2 * cbr(8 * b, 8 * b))
    decoder = sum(cbr(k, k) + cbr(k, k) + cbr(k, out) for k, out in ((8 * b, 4 * b), (4 * b, 2 * b), (2 * b, b),
                                                                       (b, b)))
    return encoder + decoder + conv_params(3, b, channels)


def discriminative_params(c_in, b, classes):
    widths = (b, 2 * b, 4 * b, 8 * b, 8 * b, 8 * b)
    encoder = cbr(c_in, b) + cbr(b, b) + sum(cbr(a, c) + cbr(c, c) for a, c in zip(widths[:-1], widths[1:]))
    decoder = (cbr(8 * b, 8 * b) + cbr(16 * b, 8 * b) + cbr(8 * b, 8 * b)      # up_b, db_b
               + cbr(8 * b, 4 * b) + cbr(12 * b, 4 * b) + cbr(4 * b, 4 * b)    # up1, db1
               + cbr(4 * b, 2 * b) + cbr(6 * b, 2 * b) + cbr(2 * b, 2 * b)     # up2, db2
               + cbr(2 * b, b) + cbr(3 * b, b) + cbr(b, b)                     # up3, db3
               + cbr(b, b) + cbr(2 * b, b) + cbr(b, b))                        # up4, db4
    return encoder + decoder + conv_params(3, b, classes)


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_network_sizes_and_shapes():
    """The documented defaults (U-Net 64-128-256-512, DRAEM widths 128 and 64), then shapes."""
    assert count(RestorationUNet(1, 1)) == unet_params(1, 64) == 7_701_825
    assert count(ReconstructiveSubNetwork(1, 1)) == reconstructive_params(1, 128)
    assert count(DiscriminativeSubNetwork(2, 1)) == discriminative_params(2, 64, 1)
    x = torch.rand(2, 2, 32, 64)
    assert RestorationUNet(2, 2, (4, 8, 16, 32))(x).shape == x.shape
    assert ReconstructiveSubNetwork(2, 2, 4)(x).shape == x.shape
    assert DiscriminativeSubNetwork(4, 1, 4)(torch.cat([x, x], 1)).shape == (2, 1, 32, 64)
    with pytest.raises(ValueError, match="divisible by 32"):
        DiscriminativeSubNetwork(2, 1, 4)(torch.rand(1, 2, 48, 64))
    with pytest.raises(ValueError, match="divisible by 8"):
        RestorationUNet(1, 1, (4, 8, 16, 32))(torch.rand(1, 1, 36, 32))


# ---- losses ---------------------------------------------------------------------------------------
def test_focal_loss_by_hand():
    """p = 0.5, 0.75 (anomalous) and 0.25 (normal): -(1 - p)^2 log p, -(1 - p)^2 log p, -p^2 log(1 - p)."""
    logits = torch.tensor([0.0, math.log(3.0), -math.log(3.0)])
    targets = torch.tensor([1.0, 1.0, 0.0])
    expected = (0.25 * math.log(2.0) + 0.0625 * -math.log(0.75) + 0.0625 * -math.log(0.75)) / 3
    assert focal_loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    # gamma 0 is the cross-entropy; alpha scales it
    logits, targets = torch.randn(2, 1, 5, 5), (torch.rand(2, 1, 5, 5) > 0.7).float()
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    assert focal_loss(logits, targets, alpha=1.0, gamma=0.0).item() == pytest.approx(bce.item(), rel=1e-5)
    assert focal_loss(logits, targets, alpha=0.5).item() == pytest.approx(0.5 * focal_loss(logits, targets).item())


def test_l1_and_l2_are_means():
    a, b = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, -2.0], [0.0, 3.0]]]])
    assert l1_loss(b, a).item() == pytest.approx(1.5) and l2_loss(b, a).item() == pytest.approx(3.5)


def reference_ssim(a: np.ndarray, b: np.ndarray, size: int, sigma: float = 1.5, data_range: float = 1.0) -> float:
    """SSIM of two 2D images with a zero-padded Gaussian window, pixel by pixel."""
    line = np.exp(-(np.arange(size) - size // 2) ** 2 / (2 * sigma ** 2))
    window = np.outer(line, line) / line.sum() ** 2
    r = size // 2
    pa, pb = np.pad(a, r), np.pad(b, r)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            wa, wb = pa[i:i + size, j:j + size], pb[i:i + size, j:j + size]
            mu_a, mu_b = (window * wa).sum(), (window * wb).sum()
            var_a = (window * wa * wa).sum() - mu_a ** 2
            var_b = (window * wb * wb).sum() - mu_b ** 2
            cov = (window * wa * wb).sum() - mu_a * mu_b
            values.append((2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))
    return float(np.mean(values))


def test_ssim_by_hand():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6) and ssim_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    # one pixel: the window is that pixel, no variance: (2xy + C1) / (x^2 + y^2 + C1)
    one, other = torch.tensor([[[[0.2]]]]), torch.tensor([[[[0.6]]]])
    assert ssim(one, other).item() == pytest.approx((0.24 + 1e-4) / (0.4 + 1e-4), rel=1e-6)
    # 5x5 images: the 11x11 window shrinks to 5x5; against a pixel-by-pixel computation
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 1, (5, 5)), rng.uniform(0, 1, (5, 5))
    value = ssim(torch.tensor(a)[None, None], torch.tensor(b)[None, None]).item()
    assert value == pytest.approx(reference_ssim(a, b, 5), rel=1e-9) and value < 1
    # 12x12: the full 11x11 window, zero padding as DRAEM's code
    a, b = rng.uniform(0, 1, (12, 12)), rng.uniform(0, 1, (12, 12))
    assert ssim(torch.tensor(a)[None, None], torch.tensor(b)[None, None]).item() == pytest.approx(
        reference_ssim(a, b, 11), rel=1e-9)


# ---- trainers on the demo dataset -----------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_folders(tmp_path_factory):
    """A small demo brain MRI dataset planned and preprocessed for twophase and draem (smoke), with
    narrow networks written into both plans (the CLI trains what the plans say)."""
    root = tmp_path_factory.mktemp("twophase")
    with autouad_folders(root) as folders:
        demo.convert(7, raw_folder=folders["raw"], seed=0, num_normal=2, num_patients=2, num_test=1, spacing=4.0)
        for method in TRAINERS:
            assert main_plan_and_preprocess(["-d", "7", "-m", method, "--schedule", "smoke", "--np", "1"]) == 0
            plans, path = find_plans(folders["preprocessed"] / DATASET, method)
            plans.method_settings["network"].update(SMALL_NETWORK)
            save_json(plans.to_dict(), path)
        yield folders


def small_trainer(folders, method, output, **schedule):
    plans, plans_path = find_plans(folders["preprocessed"] / DATASET, method)
    plans = copy.deepcopy(plans)
    plans.batch_size = 4
    trainer = TRAINERS[method](plans, 0, plans_path.parent, output, schedule_overrides=schedule)
    return ready_to_train(trainer)


def test_plans_and_phases(demo_folders, tmp_path):
    plans, _ = find_plans(demo_folders["preprocessed"] / DATASET, "draem")
    h, w = plans.slice_size
    assert h % 32 == 0 and w % 32 == 0 and plans.method_settings["lr_milestones"] == [0.8, 0.9]
    trainer = small_trainer(demo_folders, "twophase", tmp_path, phase1_epochs=3, max_iterations_per_epoch=None)
    per_epoch = math.ceil(len(trainer.normal_pool) / 4)
    assert [(p.name, p.iterations) for p in trainer.phases] == [("restoration", 3 * per_epoch),
                                                                ("segmentation", per_epoch)]
    # a small fold's single segmentation epoch is stretched to phase2_min_iterations
    trainer = small_trainer(demo_folders, "twophase", tmp_path, phase1_epochs=1, max_iterations_per_epoch=None,
                            phase2_min_iterations=per_epoch + 7)
    assert [p.iterations for p in trainer.phases] == [per_epoch, per_epoch + 7]
    trainer = small_trainer(demo_folders, "draem", tmp_path, phase1_epochs=5, max_iterations_per_epoch=3)
    assert [(p.name, p.iterations) for p in trainer.phases] == [("joint", 15)]  # DRAEM: joint training only
    assert [trainer.joint_learning_rate(i, 100) for i in (0, 79, 80, 89, 90, 99)] == pytest.approx(
        [1e-4, 1e-4, 2e-5, 2e-5, 4e-6, 4e-6])


def test_a_trainer_flushes_the_denormals_that_swish_gradients_make(demo_folders, tmp_path):
    """Swish's derivative is about 1e-33 at a pre-activation of -80 (the weight-standardised
    convolutions make such values common), so the gradient coming back from a pixel-averaged loss
    (about 1e-7) turns denormal there; on Intel CPUs each denormal operand costs a microcode assist
    (the restoration step ran 7x slower), so a trainer flushes them to zero."""
    def swish_gradient() -> float:
        x = torch.tensor([-80.0], requires_grad=True)
        F.silu(x).backward(torch.tensor([1e-7]))
        return float(x.grad)

    torch.set_flush_denormal(False)
    try:
        assert 0 < abs(swish_gradient()) < torch.finfo(torch.float32).tiny  # denormal
        small_trainer(demo_folders, "twophase", tmp_path)
        assert swish_gradient() == 0.0
    finally:
        torch.set_flush_denormal(True)


@pytest.mark.parametrize("method", ["twophase", "draem"])
def test_phase_two_leaves_the_restoration_net_untouched(demo_folders, tmp_path, method):
    """Weights and (DRAEM's) batch-norm statistics of the restoration net stay as phase 1 left them,
    and it gets no gradient; the segmentation net learns."""
    trainer = small_trainer(demo_folders, method, tmp_path, phase2_epochs=1)
    assert trainer.phases[-1].kind == "segmentation"
    first = trainer.restoration_step() if method == "twophase" else trainer.joint_step()
    assert all(torch.isfinite(v) for v in first.values())
    restoration, segmentation = state(trainer.networks["restoration"]), state(trainer.networks["segmentation"])
    if method == "draem":
        assert any("running_mean" in k for k in restoration)
    for network in trainer.networks.values():
        network.train()  # as the base does at every phase start
    trainer.optimizers["restoration"].zero_grad(set_to_none=True)  # phase 1's last gradients
    logs = trainer.segmentation_step()
    assert set(logs) == {"loss_segmentation", "anomaly_fraction"}
    assert same(restoration, state(trainer.networks["restoration"]))
    assert not same(segmentation, state(trainer.networks["segmentation"]))
    assert all(p.grad is None for p in trainer.networks["restoration"].parameters())


def test_draem_trains_both_networks_jointly(demo_folders, tmp_path):
    trainer = small_trainer(demo_folders, "draem", tmp_path)
    before = {name: state(net) for name, net in trainer.networks.items()}
    logs = trainer.joint_step()
    assert set(logs) == {"loss_draem", "l2", "ssim_loss", "focal", "anomaly_fraction"}
    assert logs["loss_draem"].item() == pytest.approx((logs["l2"] + logs["ssim_loss"] + logs["focal"]).item())
    for name, net in trainer.networks.items():
        assert not same(before[name], state(net)), name
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters()), name


def test_the_trainer_synthesises_inside_each_slices_roi_or_foreground(demo_folders, tmp_path):
    """The demo's ROI is the brain: masks stay inside it; a dataset without ROI (X-rays, say) gets
    masks inside the slices' non-zero foreground."""
    trainer = small_trainer(demo_folders, "twophase", tmp_path)
    stream = trainer.loaders["restoration"].stream
    for _ in range(3):
        position = stream.position
        roi = trainer.normal_pool.read_roi(next(trainer.loaders["restoration"])["indices"])
        stream.position = position
        originals, synthetic, masks = trainer.synthetic_batch("restoration")
        assert roi is not None and not (masks[:, 0].numpy().astype(bool) & ~roi).any()
        assert torch.equal(synthetic != originals, (masks > 0) & (synthetic != originals))
    trainer.normal_pool.read_roi = lambda indices: None
    originals, _, masks = trainer.synthetic_batch("restoration")
    assert masks.sum() > 0 and not ((masks > 0) & (originals <= 0)).any()


def test_anomaly_map_is_the_segmentation_probability(demo_folders, tmp_path):
    trainer = small_trainer(demo_folders, "twophase", tmp_path)
    images = torch.from_numpy(next(trainer.loaders["restoration"])["data"])
    for network in trainer.networks.values():
        network.eval()
    with torch.no_grad():
        maps = trainer.predict_anomaly_map(images)
        restored = trainer.networks["restoration"](images)
        logits = trainer.networks["segmentation"](torch.cat([restored, images], 1))
    assert maps.shape == (images.shape[0],) + images.shape[2:] and maps.min() >= 0 and maps.max() <= 1
    assert torch.allclose(maps, torch.sigmoid(logits[:, 0]), atol=1e-6)



@pytest.mark.parametrize("method", ["twophase", "draem"])
def test_cli_trains_and_predicts(demo_folders, tmp_path, method):
    """autouad_train with the smoke schedule (two iterations per phase), then autouad_predict on the
    demo's test scans: masks and maps in the scans' geometry, probabilities in [0, 1]."""
    keys = {"twophase": {"loss_restoration", "anomaly_fraction"},
            "draem": {"loss_draem", "l2", "ssim_loss", "focal", "anomaly_fraction", "learning_rate"}}
    assert train_main([DATASET, "0", "-m", method, "--device", "cpu"]) == 0
    fold = demo_folders["results"] / DATASET / f"{method}__autouadPlans_{method}" / "fold_0"
    log = load_json(fold / "training_log.json")
    phases = {"twophase": ["restoration", "segmentation"], "draem": ["joint"]}[method]
    assert log["finished"] and [p["name"] for p in log["phases"]] == phases
    assert [e["phase"] for e in log["entries"]] == [p for p in phases for _ in range(2)]
    assert set(log["entries"][0]) - {"step", "phase", "seconds"} == keys[method]
    assert all(np.isfinite(v) for e in log["entries"] for k, v in e.items() if k != "phase")
    assert (fold / "threshold.json").is_file() and (fold / "validation" / "summary.json").is_file()
    for case in log["validation_cases"]:
        maps = np.load(fold / "validation" / f"{case}.npy")
        assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1

    raw = demo_folders["raw"] / DATASET
    out = tmp_path / "predictions"
    assert predict_main(["-i", str(raw / "imagesTs"), "-o", str(out), "-d", "7", "-m", method,
                         "--rois", str(raw / "roisTs"), "--save-maps", "--device", "cpu"]) == 0
    record = load_json(out / "predictions.json")
    assert record["cases"] and record["num_failed"] == 0
    for case in record["cases"]:
        source = sitk.ReadImage(str(raw / "imagesTs" / f"{case}_0000.nii.gz"))
        mask = sitk.ReadImage(str(out / f"{case}.nii.gz"))
        probability = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "maps" / f"{case}.nii.gz")))
        assert mask.GetSize() == source.GetSize() and mask.GetSpacing() == source.GetSpacing()
        assert set(np.unique(sitk.GetArrayFromImage(mask))) <= {0, 1}
        assert probability.min() >= 0 and probability.max() <= 1
