"""The constrained AAE of Chen & Konukoglu and its AAE / VAE baselines: losses against hand-computed
values, the networks' shapes and sizes against the documented architecture, which weights each
update may touch, and small end-to-end trainings on the demo dataset, including an exact resume."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from autouad.cli.plan_and_preprocess import main_plan_and_preprocess
from autouad.cli.train import main as train_main
from autouad.methods.caae.losses import (critic_loss, generator_adversarial_loss, gradient_penalty, interpolate,
                                         kl_divergence_loss, latent_consistency_loss, reconstruction_loss)
from autouad.methods.caae.network import (LatentCritic, ResNetDecoder, ResNetEncoder,
                                          frozen_running_statistics)
from autouad.methods.caae.trainer import AAETrainer, CAAETrainer, VAETrainer
from autouad.planning.plans_files import find_plans
from autouad.utils.files import load_json
from dataset_conversion import demo
from tests.conftest import autouad_folders, ready_to_train, same, state

DATASET = "Dataset007_DemoBrainMRI"
TRAINERS = {"caae": CAAETrainer, "aae": AAETrainer, "vae": VAETrainer}
# Narrow networks and small batches keep the in-process trainings fast; the CLI test runs the defaults.
SMALL_NETWORK = {"features": [8, 16, 32, 64], "latent_dim": 16}


# ---- losses ---------------------------------------------------------------------------------------
def test_reconstruction_loss_sums_pixels_and_averages_samples():
    images = torch.zeros(2, 1, 2, 2)
    reconstructions = torch.tensor([[[[1.0, 2.0], [0.0, 0.0]]], [[[0.0, 0.0], [3.0, 0.0]]]])
    # sample 0: 1 + 4 = 5, sample 1: 9; batch mean 7
    assert reconstruction_loss(images, reconstructions).item() == pytest.approx(7.0)


def test_latent_consistency_loss():
    z = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    z_of_reconstruction = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert latent_consistency_loss(z, z_of_reconstruction).item() == pytest.approx((5.0 + 2.0) / 2)


def test_kl_divergence_by_hand_and_against_torch_distributions():
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # sample 0: 1/2 (1 + 1 - 1 - 0) + 1/2 (0 + 2 - 1 - ln 2); sample 1: 0
    expected = (0.5 + 0.5 * (1.0 - math.log(2.0))) / 2
    assert kl_divergence_loss(mu, logvar).item() == pytest.approx(expected)

    generator = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 7, generator=generator), torch.randn(5, 7, generator=generator)
    posterior = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    prior = torch.distributions.Normal(torch.zeros(5, 7), torch.ones(5, 7))
    reference = torch.distributions.kl_divergence(posterior, prior).sum(1).mean()
    assert kl_divergence_loss(mu, logvar).item() == pytest.approx(reference.item(), rel=1e-5)


def test_wgan_critic_and_generator_terms():
    encoded_scores, prior_scores = torch.tensor([1.0, 3.0]), torch.tensor([5.0, 7.0])
    assert critic_loss(encoded_scores, prior_scores).item() == pytest.approx(2.0 - 6.0)
    assert generator_adversarial_loss(encoded_scores).item() == pytest.approx(-2.0)


def test_interpolate_between_prior_and_encoded_codes():
    prior, encoded = torch.tensor([[2.0, 4.0], [1.0, 1.0]]), torch.tensor([[0.0, 0.0], [3.0, 5.0]])
    points = interpolate(prior, encoded, torch.tensor([[0.25], [1.0]]))
    assert torch.equal(points, torch.tensor([[0.5, 1.0], [1.0, 1.0]]))


def test_gradient_penalty_of_a_linear_critic():
    """D(z) = w . z + b has gradient w everywhere: the penalty is (||w|| - 1)^2 at any point, and its
    gradient with respect to w is 2 (||w|| - 1) w / ||w|| (so the penalty trains the critic)."""
    critic = torch.nn.Linear(2, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 4.0]]))
        critic.bias.fill_(0.7)
    points = torch.randn(6, 2, generator=torch.Generator().manual_seed(1))
    penalty = gradient_penalty(lambda z: critic(z).squeeze(1), points)
    assert penalty.item() == pytest.approx((5.0 - 1.0) ** 2)
    penalty.backward()
    assert torch.allclose(critic.weight.grad, torch.tensor([[2 * 4.0 * 3 / 5, 2 * 4.0 * 4 / 5]]))
    assert critic.bias.grad is None or critic.bias.grad.abs().max() == 0


def test_gradient_penalty_uses_each_samples_own_gradient_norm():
    """D(z) = ||z||^2 / 2 has gradient z: the penalty is the mean of (||z_i|| - 1)^2 over the samples."""
    points = torch.tensor([[3.0, 4.0], [0.0, 0.5], [1.0, 0.0]])
    penalty = gradient_penalty(lambda z: 0.5 * (z ** 2).sum(1), points)
    assert penalty.item() == pytest.approx((16.0 + 0.25 + 0.0) / 3)
    assert points.grad is None  # the caller's tensor is left alone


# ---- networks -------------------------------------------------------------------------------------
def conv_params(kernel, c_in, c_out, bias=False):
    return kernel * kernel * c_in * c_out + (c_out if bias else 0)


def linear_params(n_in, n_out):
    return n_in * n_out + n_out


def block_params(c_in, c_out):
    """BN, 3x3 conv, BN, 3x3 conv, 1x1 shortcut (every block of the documented networks resamples)."""
    return 2 * c_in + conv_params(3, c_in, c_out) + 2 * c_out + conv_params(3, c_out, c_out) + conv_params(1, c_in, c_out)


def encoder_params(channels, h, w, out, features):
    pairs = list(zip(features[:-1], features[1:]))
    return (conv_params(3, channels, features[0]) + sum(block_params(a, b) for a, b in pairs)
            + 2 * features[-1] + linear_params(features[-1] * (h // 8) * (w // 8), out))


def decoder_params(channels, h, w, latent, features):
    pairs = list(zip(features[:-1], features[1:]))
    return (linear_params(latent, features[-1] * (h // 8) * (w // 8)) + sum(block_params(b, a) for a, b in pairs)
            + 2 * features[0] + conv_params(3, features[0], channels, bias=True))


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("channels, size", [(1, (32, 32)), (2, (24, 40))])
def test_network_shapes_and_parameter_counts(channels, size):
    features, latent = (32, 64, 128, 256), 128
    encoder = ResNetEncoder(channels, size, latent, features)
    decoder = ResNetDecoder(channels, size, latent, features)
    critic = LatentCritic(latent)
    images = torch.randn(3, channels, *size)
    codes = encoder(images)
    assert codes.shape == (3, latent)
    assert decoder(codes).shape == (3, channels, *size)
    assert critic(codes).shape == (3,)
    assert count(encoder) == encoder_params(channels, *size, latent, features)
    assert count(decoder) == decoder_params(channels, *size, latent, features)
    assert count(critic) == linear_params(latent, 512) + linear_params(512, 512) + linear_params(512, 1)
    if size == (32, 32):  # the numbers of the documented default, spelled out once
        assert (count(encoder), count(decoder), count(critic)) == (1_730_784, 1_153_697, 329_217)
    assert count(ResNetEncoder(channels, size, 2 * latent, features)) == encoder_params(channels, *size, 2 * latent,
                                                                                       features)


def test_slice_size_must_allow_three_halvings():
    with pytest.raises(ValueError, match="divisible by 8"):
        ResNetEncoder(1, (32, 36), 16)
    with pytest.raises(ValueError, match="divisible by 8"):
        ResNetDecoder(1, (20, 32), 16)


def test_frozen_running_statistics_keep_buffers_and_gradients():
    torch.manual_seed(0)
    encoder = ResNetEncoder(1, (16, 16), 4, (4, 8, 8, 8)).train()
    buffers = {k: v.clone() for k, v in encoder.named_buffers()}
    images = torch.randn(5, 1, 16, 16)
    with frozen_running_statistics(encoder):
        codes = encoder(images)
    assert all(torch.equal(buffers[k], v) for k, v in encoder.named_buffers())
    codes.sum().backward()  # after the block: the graph must still be intact
    assert encoder.stem.weight.grad is not None
    plain = encoder(images)  # batch statistics all the same; now the running statistics move
    assert torch.allclose(plain, codes, atol=1e-6)
    assert not torch.equal(buffers["head.0.running_mean"], encoder.head[0].running_mean)


# ---- trainers on the demo dataset -----------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_folders(tmp_path_factory):
    """A small demo dataset, planned and preprocessed for caae, aae and vae (smoke schedule)."""
    root = tmp_path_factory.mktemp("caae")
    with autouad_folders(root) as folders:
        demo.convert(7, raw_folder=folders["raw"], seed=0, num_normal=2, num_patients=2, num_test=0, spacing=4.0)
        for method in TRAINERS:
            assert main_plan_and_preprocess(["-d", "7", "-m", method, "--schedule", "smoke", "--np", "1"]) == 0
        yield folders


def small_trainer(folders, method, output, iterations=4, **settings):
    plans, plans_path = find_plans(folders["preprocessed"] / DATASET, method)
    plans = copy.deepcopy(plans)
    plans.batch_size = 8
    plans.method_settings["network"].update(SMALL_NETWORK)
    if method != "vae":
        plans.method_settings["critic_steps_per_generator_step"] = 3
    plans.method_settings.update(settings)
    trainer = TRAINERS[method](plans, 0, plans_path.parent, output, schedule_overrides={"iterations": iterations})
    return ready_to_train(trainer)


def test_each_update_changes_only_its_own_networks(demo_folders, tmp_path):
    trainer = small_trainer(demo_folders, "caae", tmp_path)
    before = {name: state(net) for name, net in trainer.networks.items()}
    trainer.critic_step()
    after_critic = {name: state(net) for name, net in trainer.networks.items()}
    assert not same(before["critic"], after_critic["critic"])
    # weights and batch-norm statistics of the auto-encoder stay as they were
    assert same(before["encoder"], after_critic["encoder"]) and same(before["decoder"], after_critic["decoder"])

    trainer.autoencoder_step()
    after_autoencoder = {name: state(net) for name, net in trainer.networks.items()}
    assert same(after_critic["critic"], after_autoencoder["critic"])
    assert not same(after_critic["encoder"], after_autoencoder["encoder"])
    assert not same(after_critic["decoder"], after_autoencoder["decoder"])
    assert all(p.requires_grad for p in trainer.networks["critic"].parameters())


def test_critic_gets_no_gradient_from_the_autoencoder_update(demo_folders, tmp_path):
    trainer = small_trainer(demo_folders, "caae", tmp_path)
    trainer.optimizers["critic"].zero_grad(set_to_none=True)
    trainer.autoencoder_step()
    assert all(p.grad is None for p in trainer.networks["critic"].parameters())


def test_running_statistics_follow_the_real_batch_only(demo_folders, tmp_path):
    """The auto-encoder update moves the encoder's batch-norm statistics exactly as one training-mode
    pass over its batch X would: the pass over the reconstructions X' leaves them alone."""
    trainer = small_trainer(demo_folders, "caae", tmp_path)
    encoder_before = copy.deepcopy(trainer.networks["encoder"])
    stream = trainer.loaders["autoencoder"].stream
    position = stream.position
    trainer.autoencoder_step()
    stream.position = position
    with torch.no_grad():
        encoder_before(trainer.next_images("autoencoder"))
    expected, actual = dict(encoder_before.named_buffers()), dict(trainer.networks["encoder"].named_buffers())
    assert all(torch.allclose(expected[k].float(), actual[k].float(), atol=1e-6) for k in expected)


def test_vae_inference_decodes_mu_and_maps_average_channels(demo_folders, tmp_path):
    trainer = small_trainer(demo_folders, "vae", tmp_path)
    for network in trainer.networks.values():
        network.eval()
    images = trainer.next_images("autoencoder")
    with torch.no_grad():
        torch.manual_seed(1)
        first = trainer.predict_anomaly_map(images)
        torch.manual_seed(2)
        second = trainer.predict_anomaly_map(images)
        mu = trainer.networks["encoder"](images)[:, :SMALL_NETWORK["latent_dim"]]
        expected = (images - trainer.networks["decoder"](mu)).abs()[:, 0]
    assert first.shape == images.shape[:1] + images.shape[2:]
    assert torch.equal(first, second) and torch.allclose(first, expected, atol=1e-6)

    two_channels = torch.stack([torch.full((4, 4), 1.0), torch.full((4, 4), -3.0)])[None]
    trainer.reconstruct = lambda x: torch.zeros_like(x)
    assert torch.equal(trainer.predict_anomaly_map(two_channels), torch.full((1, 4, 4), 2.0))


def test_vae_refuses_critic_steps(demo_folders, tmp_path):
    from autouad.training.fold_data import TrainingError
    with pytest.raises(TrainingError, match="no critic"):
        small_trainer(demo_folders, "vae", tmp_path, critic_steps_per_generator_step=5)



def test_cli_trains_caae_aae_and_vae(demo_folders):
    """The plans' own settings (default networks, 20 critic steps), for two iterations."""
    keys = {"caae": {"loss_critic", "gradient_penalty", "reconstruction", "adversarial", "latent_consistency"},
            "aae": {"loss_critic", "gradient_penalty", "reconstruction", "adversarial"},
            "vae": {"reconstruction", "kl"}}
    preprocessed = demo_folders["preprocessed"] / DATASET
    for method in TRAINERS:
        assert train_main([DATASET, "0", "-m", method, "--device", "cpu", "--iterations", "2"]) == 0
        fold = demo_folders["results"] / DATASET / f"{method}__autouadPlans_{method}" / "fold_0"
        for name in ("checkpoint_final.pt", "training_log.json", "progress.png"):
            assert (fold / name).is_file(), (method, name)
        log = load_json(fold / "training_log.json")
        assert log["method"] == method and log["finished"] and log["entries"][-1]["step"] == 2
        logged = set(log["entries"][-1]) - {"step", "phase", "seconds", "loss_autoencoder", "wasserstein_estimate"}
        assert logged == keys[method], method
        assert all(np.isfinite(v) for e in log["entries"] for k, v in e.items() if k not in ("phase",))
        plans = load_json(preprocessed / f"autouadPlans_{method}.json")
        for case in log["validation_cases"]:
            maps = np.load(fold / "validation" / f"{case}.npy")
            data = np.load(preprocessed / plans["preprocessing"]["data_folder"] / f"{case}.npy", mmap_mode="r")
            assert maps.shape == (data.shape[0],) + data.shape[2:] and np.isfinite(maps).all() and maps.min() >= 0
