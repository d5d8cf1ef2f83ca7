"""HealthyGAN (paper 003): the compositions and losses against hand-computed values, the networks'
shapes against the paper's tables, the Fréchet distance against closed forms, which weights each
update touches, the 2:1 update ratio, the learning-rate decay, the model selection, an exact resume,
and autouad_train + autouad_predict on a tiny 2D X-ray dataset."""
from __future__ import annotations

import copy
import csv
import math

import numpy as np
import pytest
import torch

from autouad.cli.plan_and_preprocess import main_plan_and_preprocess
from autouad.cli.predict import main as predict_main
from autouad.cli.train import main as train_main
from autouad.methods.caae.losses import critic_loss, generator_adversarial_loss, gradient_penalty
from autouad.methods.healthygan.frechet import (FeatureNetwork, feature_statistics, frechet_distance,
                                                frechet_distance_of_features)
from autouad.methods.healthygan.losses import (focus_loss, identity_loss, reconstructed_image, reconstruction_loss,
                                               translated_image)
from autouad.methods.healthygan.network import HealthyGenerator, PatchDiscriminator, discriminator_layers
from autouad.methods.healthygan.trainer import HealthyGANTrainer, decayed_learning_rate
from autouad.planning.plans_files import find_plans
from autouad.training.checkpoint import load_checkpoint
from autouad.utils.files import load_json
from tests.conftest import autouad_folders, ready_to_train, same, state, write_xray_dataset

DATASET = "Dataset031_TinyXrayGAN"
# Narrow networks keep the in-process trainings fast; the CLI test and the shape tests use the paper's.
SMALL_NETWORK = {"generator_features": 8, "residual_blocks": 2, "discriminator_features": 8}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- compositions and losses ------------------------------------------------------------------------
def test_translated_and_reconstructed_images_by_hand():
    a = torch.tensor([[[[0.2, -0.4], [1.0, 0.0]]]])           # input x (set A)
    b_int = torch.tensor([[[[-1.0, 0.6], [0.5, 0.3]]]])        # intermediate healthy image
    m = torch.tensor([[[[1.0, 0.0], [0.5, 0.25]]]])            # mask: 1 = rewritten by the generator
    # eq. 1: B' = B_int * M + A * (1 - M)
    expected_b = torch.tensor([[[[-1.0, -0.4], [0.75, 0.075]]]])
    # eq. 2: A' = A * M + B_int * (1 - M)
    expected_a = torch.tensor([[[[0.2, 0.6], [0.75, 0.225]]]])
    assert torch.allclose(translated_image(a, b_int, m), expected_b)
    assert torch.allclose(reconstructed_image(a, b_int, m), expected_a)
    # one mask for every channel
    two = torch.cat([a, -a], 1)
    assert torch.allclose(translated_image(two, torch.cat([b_int, b_int], 1), m)[:, 1],
                          (b_int * m - a * (1 - m))[:, 0])


def test_l1_terms_are_pixel_means():
    x = torch.zeros(2, 1, 2, 2)
    y = torch.tensor([[[[1.0, -1.0], [0.0, 2.0]]], [[[0.0, 0.0], [4.0, 0.0]]]])
    assert identity_loss(x, y).item() == pytest.approx(8.0 / 8)
    assert reconstruction_loss(x, y).item() == pytest.approx(1.0)


def test_focus_loss_by_hand():
    mask = torch.tensor([[[[0.0, 1.0], [0.5, 0.25]]]])
    eps = 0.01
    size = ((0.0 + 1.0 + 0.5 + 0.25) / 4) ** 2
    zero_one = (1 / (0.5 + eps) + 1 / (0.5 + eps) + 1 / (0.0 + eps) + 1 / (0.25 + eps)) / 4
    assert size == pytest.approx(0.19140625) and zero_one == pytest.approx(26.941930, rel=1e-6)
    assert focus_loss(mask).item() == pytest.approx(size + zero_one, rel=1e-6)
    assert focus_loss(mask, lambda_size=2.0, lambda_zero_one=0.5).item() == pytest.approx(2 * size + 0.5 * zero_one,
                                                                                          rel=1e-6)
    # per mask, then the batch mean: a full and an empty mask give (1 + 0) / 2 for the size term
    batch = torch.stack([torch.ones(1, 2, 2), torch.zeros(1, 2, 2)])
    assert focus_loss(batch, 1.0, 0.0).item() == pytest.approx(0.5)
    assert focus_loss(batch, 0.0, 1.0).item() == pytest.approx(1 / (0.5 + eps), rel=1e-6)


def test_wgan_gp_terms_on_patch_scores():
    fake, real = torch.tensor([[[[1.0, 3.0]]], [[[5.0, 7.0]]]]), torch.tensor([[[[0.0, 2.0]]], [[[2.0, 0.0]]]])
    # eq. 3's Wasserstein term E_A[D(G(x))] - E_B[D(x)] and eq. 4's -E[D(G(x))], means over patches and images
    assert critic_loss(fake, real).item() == pytest.approx(4.0 - 1.0)
    assert generator_adversarial_loss(fake).item() == pytest.approx(-4.0)
    # a 1x1 conv critic w * x + b scores each pixel; the gradient of an image's summed patch scores is w
    # at every one of its 4 pixels: ||grad|| = 2|w|, the penalty (2|w| - 1)^2, its weight gradient
    # 2 (2|w| - 1) * 2 sign(w)
    critic = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        critic.weight.fill_(-1.5)
        critic.bias.fill_(0.3)
    points = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    penalty = gradient_penalty(critic, points)
    assert penalty.item() == pytest.approx((3.0 - 1.0) ** 2)
    penalty.backward()
    assert critic.weight.grad.item() == pytest.approx(2 * 2.0 * 2 * -1.0)


# ---- networks -----------------------------------------------------------------------------------------
def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("channels, size", [(1, (64, 64)), (3, (32, 48))])
def test_generator_shapes_and_mask_range(channels, size):
    torch.manual_seed(0)
    generator = HealthyGenerator(channels, features=16, residual_blocks=2)
    images = torch.rand(2, channels, *size) * 2 - 1
    intermediate, mask = generator(images)
    assert intermediate.shape == images.shape and mask.shape == (2, 1, *size)
    assert intermediate.abs().max() <= 1 and 0 <= mask.min() and mask.max() <= 1
    with pytest.raises(ValueError, match="divisible by 4"):
        generator(torch.zeros(1, channels, 30, 32))


def test_paper_generator_has_table_3_layers():
    generator = HealthyGenerator(3)  # table 3: 3 channels in, 4 out
    assert generator.output.out_channels == 4 and generator.output.kernel_size == (7, 7)
    assert len(generator.bottleneck) == 6
    convs = [generator.encoder[0], generator.encoder[3], generator.encoder[6]]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [(64, (7, 7), (1, 1)), (128, (4, 4), (2, 2)),
                                                                          (256, (4, 4), (2, 2))]
    ups = [generator.decoder[0], generator.decoder[3]]
    assert all(isinstance(u, torch.nn.ConvTranspose2d) for u in ups) and [u.out_channels for u in ups] == [128, 64]
    block = 2 * (9 * 256 * 256 + 2 * 256)  # two 3x3 convs and two affine instance norms
    expected = (49 * 3 * 64 + 2 * 64 + 16 * 64 * 128 + 2 * 128 + 16 * 128 * 256 + 2 * 256 + 6 * block
                + 16 * 256 * 128 + 2 * 128 + 16 * 128 * 64 + 2 * 64 + 49 * 64 * 4)
    assert count(generator) == expected


@pytest.mark.parametrize("size, layers, grid", [(256, 6, 4), (128, 6, 2), (64, 5, 2), (32, 4, 2), (48, 4, 3)])
def test_discriminator_layers_and_patch_grid(size, layers, grid):
    assert discriminator_layers((size, size)) == layers
    widest = 64 * 2 ** (layers - 1)
    if size >= 128:  # table 2: six 4x4 stride-2 convs, 64 to 2048 maps, LeakyReLU 0.01, 3x3 output conv
        assert widest == 2048
        discriminator = PatchDiscriminator(3, (size, size))
        convs = [m for m in discriminator.body if isinstance(m, torch.nn.Conv2d)]
        assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1024, 2048]
        assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) for c in convs)
        assert all(m.negative_slope == 0.01 for m in discriminator.body if isinstance(m, torch.nn.LeakyReLU))
        assert discriminator.output.kernel_size == (3, 3)
        assert count(discriminator) == sum(16 * a * b + b for a, b in zip([3, 64, 128, 256, 512, 1024],
                                                                           [64, 128, 256, 512, 1024, 2048])) + 9 * 2048
    else:
        discriminator = PatchDiscriminator(1, (size, size), features=8)
    with torch.no_grad():
        scores = discriminator(torch.zeros(2, discriminator.body[0].in_channels, size, size))
    assert scores.shape == (2, 1, grid, grid)


# ---- Fréchet distance -----------------------------------------------------------------------------------
def test_frechet_distance_by_hand():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(50, 4))
    assert frechet_distance_of_features(features, features) == pytest.approx(0.0, abs=1e-9)
    # 1-D: (mu1 - mu2)^2 + (s1 - s2)^2 with standard deviations s
    assert frechet_distance([1.0], [[4.0]], [3.5], [[9.0]]) == pytest.approx(2.5 ** 2 + (2.0 - 3.0) ** 2)
    # diagonal covariances: the 1-D formula per dimension, summed
    assert frechet_distance([0.0, 1.0], np.diag([1.0, 16.0]), [1.0, 1.0], np.diag([4.0, 1.0])) == pytest.approx(
        1.0 + 1.0 + 9.0)
    # a general pair against the matrix square root of S1 S2
    from scipy.linalg import sqrtm
    a, b = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    s1, s2 = a @ a.T + 0.1 * np.eye(3), b @ b.T + 0.1 * np.eye(3)
    mu1, mu2 = rng.normal(size=3), rng.normal(size=3)
    reference = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * np.real(sqrtm(s1 @ s2)))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-8)
    # statistics of samples: unbiased covariance
    mu, sigma = feature_statistics(np.array([[0.0], [2.0]]))
    assert mu == pytest.approx([1.0]) and sigma.shape == (1, 1) and sigma[0, 0] == pytest.approx(2.0)


def test_feature_network_shapes():
    network = FeatureNetwork(1, (4, 8, 8))
    images = torch.zeros(3, 1, 20, 28)
    assert network.features(images).shape == (3, 8) and network(images).shape == (3,)


def test_learning_rate_decays_linearly_over_the_last_iterations():
    rates = [decayed_learning_rate(1e-4, i, 8, 4) for i in range(8)]
    assert rates == pytest.approx([1e-4] * 5 + [0.75e-4, 0.5e-4, 0.25e-4])
    assert decayed_learning_rate(1e-4, 0, 2, 4) == pytest.approx(1e-4)  # the decay clipped to the schedule
    assert decayed_learning_rate(1e-4, 3, 4, 0) == pytest.approx(1e-4)


# ---- trainers on a tiny 2D X-ray dataset ----------------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """12 normal and 12 unlabeled (half abnormal) training X-rays and 6 test X-rays, planned for
    HealthyGAN with the smoke schedule (32x32)."""
    root = tmp_path_factory.mktemp("healthygan")
    with autouad_folders(root) as folders:
        write_xray_dataset(31, "TinyXrayGAN", 12, [i % 2 == 1 for i in range(12)])
        assert main_plan_and_preprocess(["-d", "31", "-m", "healthygan", "--schedule", "smoke", "--np", "1"]) == 0
        yield folders


def small_trainer(folders, output, iterations=4, **schedule):
    plans, plans_path = find_plans(folders["preprocessed"] / DATASET, "healthygan")
    plans = copy.deepcopy(plans)
    plans.batch_size = 4
    plans.method_settings["network"].update(SMALL_NETWORK)
    plans.method_settings["model_selection"]["feature_maps"] = [4, 8, 8]
    trainer = HealthyGANTrainer(plans, 0, plans_path.parent, output,
                                schedule_overrides={"iterations": iterations, **schedule})
    return ready_to_train(trainer)


def test_plans_pools_and_paper_settings(folders, tmp_path):
    trainer = small_trainer(folders, tmp_path)
    assert trainer.plans.task == "image" and trainer.plans.preprocessing.slice_size == [32, 32]
    assert trainer.critic_steps == 2
    assert {k: trainer.lam(k) for k in ("gp", "id", "rec", "f", "fz", "fs")} == {
        "gp": 10, "id": 1, "rec": 1, "f": 0.1, "fz": 1, "fs": 1}
    # set A: the unlabeled training slices; set B: the reference (normal) slices
    unlabeled, normal = trainer.loaders["unlabeled"]._data, trainer.loaders["normal"]._data
    names = {pool: {pool.cases[c].name.split("_")[0] for c, _ in pool.refs} for pool in (unlabeled, normal)}
    assert names[unlabeled] == {"unlabeled"} and names[normal] == {"normal"}
    assert len(unlabeled) + len(normal) == len(trainer.data.train_cases)
    translated, real = trainer.selection_sets["translated"], trainer.selection_sets["real"]
    assert {translated[0].cases[c].name.split("_")[0] for c, _ in translated[0].refs} == {"unlabeled"}
    assert {real[0].cases[c].name.split("_")[0] for c, _ in real[0].refs} == {"normal"}
    assert all(case in trainer.data.validation_cases for case in translated[0].cases + real[0].cases)
    schedules = load_json(folders["preprocessed"] / DATASET / "autouadPlans_healthygan.json")["schedule"]
    assert schedules["name"] == "smoke"
    from autouad.planning.method_plans import load_method_plans
    paper = load_method_plans("healthygan")["schedules"]["paper"]
    assert paper["iterations"] == 400000 and paper["lr_decay_iterations"] == 100000


def test_each_update_changes_only_its_own_network(folders, tmp_path):
    trainer = small_trainer(folders, tmp_path)
    before = {name: state(net) for name, net in trainer.networks.items()}
    logs, batches = trainer.discriminator_step()
    after_d = {name: state(net) for name, net in trainer.networks.items()}
    assert not same(before["discriminator"], after_d["discriminator"])
    assert same(before["generator"], after_d["generator"]) and same(before["feature_network"], after_d["feature_network"])
    assert logs["loss_discriminator"].item() == pytest.approx(
        (-logs["wasserstein_estimate"] + 10 * logs["gradient_penalty"]).item(), rel=1e-5)

    trainer.optimizers["discriminator"].zero_grad(set_to_none=True)
    trainer.generator_step(*batches)
    after_g = {name: state(net) for name, net in trainer.networks.items()}
    assert same(after_d["discriminator"], after_g["discriminator"])
    assert not same(after_d["generator"], after_g["generator"])
    assert all(p.grad is None for p in trainer.networks["discriminator"].parameters())
    assert all(p.requires_grad for p in trainer.networks["discriminator"].parameters())


def test_generator_loss_is_the_weighted_sum_of_its_terms(folders, tmp_path):
    trainer = small_trainer(folders, tmp_path)
    logs = trainer.generator_step(trainer.next_images("unlabeled"), trainer.next_images("normal"))
    expected = logs["adversarial"] + logs["reconstruction"] + logs["identity"] + 0.1 * logs["focus"]
    assert logs["loss_generator"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_two_discriminator_updates_per_generator_update(folders, tmp_path):
    trainer = small_trainer(folders, tmp_path, iterations=3, lr_decay_iterations=2)
    calls = []
    for name, optimizer in trainer.optimizers.items():
        step = optimizer.step

        def counted(*args, _name=name, _step=step, **kwargs):
            calls.append(_name)
            return _step(*args, **kwargs)
        optimizer.step = counted
    training = trainer.phases[1]
    for iteration in range(3):
        trainer.train_iteration(training, iteration)
    assert calls == ["discriminator", "discriminator", "generator"] * 3
    # the learning rate of both follows the decay: the last of 3 iterations, decayed over 2
    assert trainer.optimizers["generator"].param_groups[0]["lr"] == pytest.approx(0.5e-4)
    assert trainer.optimizers["discriminator"].param_groups[0]["lr"] == pytest.approx(0.5e-4)


def test_anomaly_map_is_the_translation_residual_in_stored_units(folders, tmp_path):
    trainer = small_trainer(folders, tmp_path)
    generator = trainer.networks["generator"].eval()
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        intermediate, mask = generator(images * 2 - 1)
        expected = ((images * 2 - 1 - translated_image(images * 2 - 1, intermediate, mask)).abs() / 2)[:, 0]
        maps = trainer.predict_anomaly_map(images)
    assert maps.shape == (2, 64, 64) and torch.allclose(maps, expected, atol=1e-6)
    assert torch.allclose(maps, (mask * (images - (intermediate + 1) / 2).abs())[:, 0], atol=1e-6)

    class Constant(torch.nn.Module):  # B_int = 0 (0.5 stored) everywhere, the whole image rewritten
        def forward(self, x):
            return torch.zeros_like(x), torch.ones_like(x[:, :1])
    trainer.networks["generator"] = Constant()
    two_channels = torch.stack([torch.full((4, 4), 1.0), torch.full((4, 4), 0.0)])[None]
    assert torch.allclose(trainer.predict_anomaly_map(two_channels), torch.full((1, 4, 4), 0.5))


def test_model_selection_keeps_the_best_generator(folders, tmp_path):
    trainer = small_trainer(folders, tmp_path, iterations=4, selection_every=1)
    distances = iter([3.0, 1.0, 2.0, 5.0])
    trainer.frechet_distance = lambda translate=True: next(distances) if translate else 4.0
    generators = []
    original_step = trainer.generator_step

    def remember(*args):
        out = original_step(*args)
        generators.append(state(trainer.networks["generator"]))
        return out
    trainer.generator_step = remember
    trainer.run_training()
    events = [e for e in trainer.log.events if e["event"] == "frechet_distance"]
    assert [(e["value"], e["best"]) for e in events] == [(3.0, True), (1.0, True), (2.0, False), (5.0, False)]
    assert trainer.best_step == trainer.phases[0].iterations + 2
    assert same(state(trainer.networks["generator"]), generators[1])
    final = load_checkpoint(tmp_path / "checkpoint_final.pt")
    assert same(final["networks"]["generator"], generators[1])
    assert final["extra"]["best_frechet_distance"] == 1.0
    assert final["log"]["events"][-1]["event"] == "model_selection"


def test_real_frechet_distance_is_logged_and_finite(folders, tmp_path):
    trainer = small_trainer(folders, tmp_path, iterations=2)
    trainer.run_training()
    events = {e["event"]: e for e in trainer.log.events}
    assert np.isfinite(events["frechet_distance_untranslated"]["value"])
    assert np.isfinite(events["frechet_distance"]["value"]) and events["model_selection"]["generator"] == "best"
    entries = trainer.log.entries
    assert {"feature_network_loss", "feature_network_accuracy"} <= set(entries[0])
    assert {"loss_discriminator", "gradient_penalty", "adversarial", "reconstruction", "identity", "focus",
            "lr"} <= set(entries[-1])



def test_cli_trains_and_predicts_scores(folders, tmp_path, monkeypatch):
    """autouad_train with the plans' own (paper-sized) networks for two iterations, then autouad_predict."""
    for kind, folder in folders.items():
        monkeypatch.setenv(f"AUTOUAD_{kind}", str(folder))
    assert train_main([DATASET, "0", "-m", "healthygan", "--device", "cpu", "--iterations", "2"]) == 0
    fold = folders["results"] / DATASET / "healthygan__autouadPlans_healthygan" / "fold_0"
    log = load_json(fold / "training_log.json")
    assert log["finished"] and log["entries"][-1]["step"] == 2 + 2
    assert all(math.isfinite(v) for e in log["entries"] for k, v in e.items() if k != "phase")
    assert [e["event"] for e in log["events"]][-1] == "model_selection"
    threshold = load_json(fold / "threshold.json")
    assert threshold["image"]["strategy"] == "normal_percentile"
    out = tmp_path / "out"
    inputs = folders["raw"] / DATASET / "imagesTs"
    assert predict_main(["-i", str(inputs), "-o", str(out), "-d", "31", "-m", "healthygan", "--device", "cpu"]) == 0
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == [f"test_{i:02d}" for i in range(6)]
    # scores on the fold's normal scale (autouad.inference.predictor.FoldImageScore): the cut is 1
    assert all(math.isfinite(float(r["score"])) and float(r["threshold"]) == 1.0 for r in rows)
    assert all(int(r["decision"]) == (float(r["score"]) >= float(r["threshold"])) for r in rows)
