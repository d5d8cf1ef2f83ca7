"""ASC-Net: losses against hand-computed values, the networks against the paper's description, the
training stages (D frozen in the M step, stage 2's union set, the stopping rule) and exact resume."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from autouad.calibration.histogram_peaks import separated_peaks
from autouad.methods.ascnet.losses import discriminator_loss, fence_cut_loss, reconstruction_loss, wild_cut_loss
from autouad.methods.ascnet.network import ASCDiscriminator, ASCNetMain
from autouad.methods.ascnet.trainer import (INPUT_FENCE_CUT, REFERENCE, REFERENCE_FENCE_CUT, RESTART_SEED_STRIDE,
                                           ASCNetTrainer,
                                           orientation_figures)
from autouad.paths import preprocessed_root, results_root
from autouad.planning.plans_files import find_plans
from autouad.training.fold_data import TrainingError
from autouad.training.sampling import EpochStream


# ---- losses ----------------------------------------------------------------------------------------
def test_fence_cut_loss():
    assert fence_cut_loss(torch.tensor([0.5, -1.0])).item() == pytest.approx((0.5 + 2.0) / 2)


def test_wild_cut_loss_is_the_positive_dice_per_image():
    fc = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    wc = torch.tensor([[[[0.0, 1.0], [0.5, 0.5]]], [[[1.0, 1.0], [0.0, 0.0]]]])
    # image 1: overlap 0.5, sums 2 and 2 -> 0.25; image 2: overlap 2, sums 4 and 2 -> 2/3
    assert wild_cut_loss(fc, wc).item() == pytest.approx((0.25 + 2 / 3) / 2, rel=1e-6)
    assert wild_cut_loss(fc[:1], 1 - fc[:1]).item() == pytest.approx(0.25, rel=1e-6)


def test_reconstruction_and_discriminator_losses():
    assert reconstruction_loss(torch.tensor([0.0, 1.0, 0.2]), torch.tensor([0.5, 0.5, 0.2])).item() == \
        pytest.approx((0.25 + 0.25 + 0.0) / 3)
    # targets +1 for the reference, -1 for fence cuts: |0.9 - 1| and |-0.5 + 1|
    assert discriminator_loss(torch.tensor([0.9, -0.5]), torch.tensor([1.0, -1.0])).item() == pytest.approx(0.3)


# ---- networks --------------------------------------------------------------------------------------
def conv(cin, cout, k):
    return cin * cout * k * k + cout


def block(cin, cout):  # two 3x3 convolutions, each with batch norm (scale and shift)
    return conv(cin, cout, 3) + 2 * cout + conv(cout, cout, 3) + 2 * cout


FEATURES = [32, 64, 128, 256]


def encoder_parameters():
    ins = [1] + FEATURES[:-1]
    return sum(block(i, f) for i, f in zip(ins, FEATURES)) + block(256, 512)


def decoder_parameters():
    ins = [512, 256, 128, 64]
    return sum(conv(i, f, 2) + block(2 * f, f) for i, f in zip(ins, reversed(FEATURES))) + conv(32, 1, 1)


def test_network_parameter_counts_match_the_paper_description():
    main = ASCNetMain()
    expected_main = encoder_parameters() + 2 * decoder_parameters() + conv(2, 1, 1)
    assert sum(p.numel() for p in main.parameters()) == expected_main
    d = ASCDiscriminator((160, 160))
    assert sum(p.numel() for p in d.parameters()) == encoder_parameters() + 512 * 10 * 10 + 1
    # batch norm after every convolution, dropout 0.3 after every pooling, one per decoder block
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in main.encoder.modules()) == 10
    assert main.encoder.dropout.p == 0.3


def test_network_shapes_and_ranges():
    main, d = ASCNetMain().eval(), ASCDiscriminator((32, 48)).eval()
    x = torch.rand(3, 1, 32, 48)
    with torch.no_grad():
        outputs = main(x)
        score = d(outputs[0])
    for out in outputs:
        assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert score.shape == (3,) and float(score.abs().max()) <= 1
    with pytest.raises(ValueError, match="divisible by 16"):
        ASCDiscriminator((40, 48))


# ---- histogram peaks (the stopping rule) -----------------------------------------------------------
def gaussian_counts(centres, widths, weights, bins=256):
    x = np.arange(bins)
    return sum(w * np.exp(-0.5 * ((x - c) / s) ** 2) for c, s, w in zip(centres, widths, weights)) * 1e4


def test_separated_peaks():
    assert list(separated_peaks(gaussian_counts([60, 120, 200], [5, 5, 5], [1, 1, 0.3]))) == [60, 120, 200]
    # a valley above half the smaller peak's height: one peak, not two
    assert len(separated_peaks(gaussian_counts([100, 112], [6, 6], [1, 1]))) == 1
    # a bump holding far less than 0.1 % of the pixels per bin does not count
    assert list(separated_peaks(gaussian_counts([60, 200], [5, 2], [1, 1e-5]))) == [60]
    # a peak in the last bin counts
    counts = gaussian_counts([60], [5], [1])
    counts[-1] = counts.max()
    assert list(separated_peaks(counts)) == [60, 255]


# ---- the trainer -----------------------------------------------------------------------------------
@pytest.fixture
def trainer_factory(demo_planned, monkeypatch, tmp_path):
    for key, value in demo_planned.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AUTOUAD_results", str(tmp_path / "results"))

    def make(overrides=None, cls=ASCNetTrainer, fold=0):
        plans, path = find_plans(preprocessed_root() / "Dataset007_DemoBrainMRI", "ascnet")
        out = results_root() / "Dataset007_DemoBrainMRI" / "ascnet__autouadPlans_ascnet" / f"fold_{fold}"
        trainer = cls(plans, fold, path.parent, out, schedule_overrides=overrides)
        trainer.checkpoint_every = 1
        trainer.initialize()
        return trainer
    return make


def state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_pools_follow_the_reference_protocol(trainer_factory):
    trainer = trainer_factory()
    # demo: normal subjects are the reference, patients the input; the smaller set is duplicated
    assert trainer.pool_sizes["reference"] > 0 and trainer.pool_sizes["input"] > 0
    assert len(trainer.reference) == len(trainer.inputs) == trainer.pool_sizes["balanced"]
    for pool, role in ((trainer.reference, "normal"), (trainer.inputs, "unlabeled")):
        assert {trainer.data.train_cases[c].meta["role"] for c in np.unique(pool.refs[:, 0])} == {role}


def test_discriminator_is_frozen_during_the_main_step(trainer_factory):
    trainer = trainer_factory()
    d_before, m_before = state(trainer.networks["D"]), state(trainer.networks["M"])
    losses = trainer.main_step()
    assert set(losses) == {"loss_M", "loss_Cf", "loss_Cw", "loss_R", "d_fooled"}
    assert same(d_before, state(trainer.networks["D"]))  # weights and batch-norm statistics
    assert not same(m_before, state(trainer.networks["M"]))
    assert all(p.requires_grad for p in trainer.networks["D"].parameters())


def test_main_module_is_untouched_by_the_discriminator_step(trainer_factory):
    trainer = trainer_factory()
    d_before, m_before = state(trainer.networks["D"]), state(trainer.networks["M"])
    trainer.discriminator_step(1)
    assert same(m_before, state(trainer.networks["M"]))
    assert not same(d_before, state(trainer.networks["D"]))


def test_stage_two_feeds_the_discriminator_the_union_set(trainer_factory):
    trainer = trainer_factory()
    kinds = trainer.discriminator_kinds
    assert set(kinds[1]) == {REFERENCE, INPUT_FENCE_CUT}
    n = len(trainer.reference)
    assert [int((kinds[2] == k).sum()) for k in (REFERENCE, REFERENCE_FENCE_CUT, INPUT_FENCE_CUT)] == [n, n, 2 * n]
    loader = trainer.loaders["discriminator_stage2"]
    seen = set()
    for _ in range(6):
        start = loader.stream.position
        images, targets, batch_kinds = trainer.discriminator_batch(2)
        seen |= set(batch_kinds.tolist())
        replay = EpochStream(loader.stream.size, loader.stream.seed, loader.stream.name)
        replay.position = start
        raw = torch.from_numpy(loader._data.read(replay.take(trainer.batch_size)))
        main = trainer.networks["M"].eval()
        with torch.no_grad():
            cuts = main(raw)[0]
        for i, kind in enumerate(batch_kinds):
            expected = raw[i] if kind == REFERENCE else cuts[i]
            assert torch.allclose(images[i].cpu(), expected, atol=1e-6)
            assert targets[i].item() == (-1.0 if kind == INPUT_FENCE_CUT else 1.0)
    assert REFERENCE_FENCE_CUT in seen  # I_fc(R_d) counts as true in stage 2


def test_stopping_rule_ends_the_stage(trainer_factory, monkeypatch):
    trainer = trainer_factory({"stage1_cycles": 3})
    three_peaks = gaussian_counts([60, 120, 200], [5, 5, 5], [1, 1, 0.3]).astype(np.int64)
    monkeypatch.setattr(trainer, "validation_histogram", lambda max_slices: three_peaks)
    names = [p.name for p in trainer.phases]
    trainer.on_phase_end(names.index("stage1/cycle1/main"), trainer.phases[names.index("stage1/cycle1/main")])
    assert {names[i] for i in trainer.skipped_phases} == {f"stage1/cycle{c}/{k}" for c in (2, 3)
                                                         for k in ("discriminator", "main")}
    assert trainer.log.events[-1]["ends_stage"] and len(trainer.log.events[-1]["peaks"]) == 3



def without_times(entries):
    return [{k: v for k, v in e.items() if k != "seconds"} for e in entries]


def test_a_main_step_cap_gives_both_steps_the_same_fewer_epochs(trainer_factory):
    def steps(trainer):
        return {p.name: p.iterations for p in trainer.phases}
    uncapped = trainer_factory({"epochs_per_step": 6, "max_iterations_per_step": None})
    per_epoch = uncapped.iterations_per_epoch
    main, d1, d2 = (per_epoch(len(uncapped.inputs)), per_epoch(len(uncapped.discriminator_kinds[1])),
                    per_epoch(len(uncapped.discriminator_kinds[2])))
    assert steps(uncapped)["stage1/cycle1/main"] == 6 * main
    # a cap above the main step's iterations changes nothing (BraTS-6 at `fast`)
    assert steps(trainer_factory({"epochs_per_step": 6, "max_iterations_per_step": None,
                                  "max_main_iterations_per_step": 6 * main})) == steps(uncapped)
    capped = steps(trainer_factory({"epochs_per_step": 6, "max_iterations_per_step": None,
                                    "max_main_iterations_per_step": 3 * main}))
    assert capped["stage1/cycle1/main"] == capped["stage2/cycle1/main"] == 3 * main
    assert capped["stage1/cycle1/discriminator"] == 3 * d1 and capped["stage2/cycle1/discriminator"] == 3 * d2


def test_a_budget_scales_epochs_without_rounding_them_to_whole_ones(trainer_factory):
    """BraTS-6 fold 1 at 8 minutes: factor 0.135 of 10 epochs per step is 1.35 epochs; rounded to 1,
    the fold trained 6.0 minutes of its 8."""
    trainer = trainer_factory({"epochs_per_step": 10, "max_iterations_per_step": None,
                               "max_main_iterations_per_step": None})
    per_epoch = trainer.iterations_per_epoch(len(trainer.inputs))
    trainer.schedule = trainer.scaled_schedule(0.135)
    assert trainer.schedule["epochs_per_step"] == pytest.approx(1.35)
    main = {p.name: p.iterations for p in trainer.build_phases()}["stage1/cycle1/main"]
    assert main == max(1, round(1.35 * per_epoch)) and (per_epoch < 2 or main > per_epoch)
def grad_norm(loss, module):
    grads = torch.autograd.grad(loss, list(module.parameters()), retain_graph=True, allow_unused=True)
    return float(sum((g ** 2).sum() for g in grads if g is not None)) ** 0.5


def test_discriminator_gradients_reach_both_decoders(trainer_factory):
    """Loss_Cf reaches the fence-cut decoder (and the encoder) through D; the wild-cut decoder feels D
    through Loss_Cw, the Dice with I_fc (paper 000: Loss_Cf depends on I_fc alone); the combined loss
    reaches both."""
    trainer = trainer_factory()
    for _ in range(3):  # a D that has learned something, as the M step meets it
        trainer.discriminator_step(1)
    main = trainer.networks["M"]
    main.train()
    images = trainer.to_device(next(trainer.loaders["main"])["data"])
    losses = trainer.main_losses(images)
    assert 0 < losses["loss_Cf"].item() < 2  # D is not saturated on the fence cuts
    assert grad_norm(losses["loss_Cf"], main.fence_cut) > 1e-6
    assert grad_norm(losses["loss_Cf"], main.encoder) > 1e-6
    assert grad_norm(losses["loss_Cf"], main.wild_cut) == 0.0
    assert grad_norm(losses["loss_Cw"], main.wild_cut) > 1e-6
    assert grad_norm(losses["loss_Cw"], main.fence_cut) > 1e-6
    for decoder in (main.fence_cut, main.wild_cut):
        assert grad_norm(losses["loss_M"], decoder) > 1e-6
    trainer.optimizers["D"].zero_grad(set_to_none=True)
    losses["loss_M"].backward()
    assert all(p.grad is None for p in trainer.networks["D"].parameters())  # D stays frozen


def test_the_main_step_runs_d_with_the_fence_cuts_batch_statistics(trainer_factory):
    """As the authors' Keras 2.2 model did: D's weights and running statistics frozen, its batch norm
    normalising with the statistics of the batch it judges, dropout on (training phase)."""
    import copy
    trainer = trainer_factory()
    trainer.discriminator_step(1)
    d = trainer.networks["D"]
    frozen_state = state(d)
    x = torch.rand(4, 1, *trainer.plans.slice_size)
    torch.manual_seed(3)
    with trainer.frozen_discriminator() as frozen:
        judged = frozen(x)
    assert same(frozen_state, state(d))  # running statistics (and the batch counter) untouched
    assert all(p.requires_grad for p in d.parameters()) and d.training
    reference = copy.deepcopy(d).train()
    torch.manual_seed(3)
    assert torch.allclose(judged, reference(x), atol=1e-6)  # = D in training mode on this batch
    assert not torch.allclose(judged, copy.deepcopy(d).eval()(x), atol=1e-4)  # not the running statistics


def test_a_short_run_logs_a_discriminator_that_is_not_saturated(trainer_factory, monkeypatch):
    """Over a smoke-sized run D's accuracy is logged (``d_accuracy``) and does not sit at 100 %, and
    Loss_Cf does not sit at 2 (a saturated D: every fence cut at -1). The same run ends oriented,
    and with keep_checkpoint best_proxy keeps its best proxy point, oriented again."""
    trainer = trainer_factory({"stage1_cycles": 2, "stage2_cycles": 1, "max_iterations_per_step": 4,
                               "keep_checkpoint": "best_proxy"})
    real_sampling = trainer.sampled_map_and_input_values

    def brightest_inputs_as_outliers(pool, max_slices):
        # the demo's lesions are too few for the input-outlier proxy (under 2 % of I_in's pixels):
        # lift I_in's brightest 5 % beyond R_d's range, so that the real maps are scored on them
        maps, inputs = real_sampling(pool, max_slices)
        if pool is trainer.inputs:
            inputs = np.where(inputs > np.percentile(inputs, 95), inputs + 10.0, inputs)
        return maps, inputs

    monkeypatch.setattr(trainer, "sampled_map_and_input_values", brightest_inputs_as_outliers)
    trainer.checkpoint_every = 10 ** 6  # phase ends still write one
    trainer.run_training()
    entries = trainer.log.entries
    d_accuracy = [e["d_accuracy"] for e in entries if e["phase"].endswith("discriminator")]
    fence_cut_losses = [e["loss_Cf"] for e in entries if e["phase"].endswith("main")]
    assert len(d_accuracy) == 3 * 4 and len(fence_cut_losses) >= 3 * 2
    assert all(0.0 <= a <= 1.0 for a in d_accuracy) and min(d_accuracy) < 1.0
    assert max(fence_cut_losses) < 1.99
    assert all("d_fooled" in e for e in entries if e["phase"].endswith("main"))
    # the run ends with its orientation decided from the training sets (one training run for both checks)
    [event] = [e for e in trainer.log.events if e["event"] == "orientation"]
    assert event["expected_side"] == "above" and isinstance(event["inverted"], bool)
    assert 0.0 <= event["inputs_above_reference_p99"] <= 1.0 and 0.0 <= event["inputs_below_reference_p1"] <= 1.0
    assert event["decided_by"] in ("input_outliers", "map_tails") and 0.0 <= event["input_outliers"] <= 1.0
    assert trainer.networks["M"].inverted.item() == float(event["inverted"])
    # keep_checkpoint best_proxy: the curve's points carry ASC-Net's own proxy, the best point after
    # the start stands for the fold, and the orientation is decided again on its networks
    proxy = [e for e in trainer.log.events if e["event"] == "proxy"]
    assert len(proxy) >= 2 and all(0.5 <= e["value"] <= 1.0 and e["metric"].startswith("input outliers") for e in proxy)
    kept = trainer.use_kept_checkpoint()
    assert kept["step"] == max((e for e in proxy if e["step"] > 0), key=lambda e: e["value"])["step"]
    *_, again = [e for e in trainer.log.events if e["event"] == "orientation"]
    assert again is not event and trainer.networks["M"].inverted.item() == float(again["inverted"])


# ---- orientation of I_ro ---------------------------------------------------------------------------------
def test_the_label_free_proxy_scores_a_point_by_its_separation_of_the_inputs_outliers_either_way(
        trainer_factory, monkeypatch):
    """keep_checkpoint=best_proxy for ASC-Net: a curve point scores max(AUROC, 1 - AUROC) of I_in's
    input outliers under raw I_ro, so a map with the lesions in its dark cluster scores as high as
    one with them in its bright cluster, and a map that separates nothing scores 0.5; the fold's
    orientation and polarity gate are left as they were (and off while it samples raw I_ro);
    without input outliers there is no value."""
    trainer = trainer_factory()
    rng = np.random.default_rng(2)
    n = 20000
    reference = (rng.uniform(0.2, 0.8, n), rng.normal(0.0, 1.0, n))
    lesion = np.r_[np.zeros(n - 1000, bool), np.ones(1000, bool)]
    inputs = np.where(lesion, 4.0, rng.uniform(-1.0, 1.0, n))  # the lesion is I_in's only outlier
    background = rng.uniform(0.2, 0.8, n)
    main = trainer.networks["M"]
    main.inverted.fill_(1.0)
    main.set_polarity_gate(0.5, 0.4)
    seen = []

    def sampled(maps, input_values):
        values = iter([reference, (maps, input_values)])

        def fake(pool, max_slices):
            seen.append((max_slices, main.inverted.item(), main.polarity_gate[0].item() == 0.0))
            return next(values)
        return fake

    for lesion_map, expected in ((0.95, 1.0), (0.05, 1.0), (None, 0.5)):
        maps = np.where(lesion, lesion_map, background) if lesion_map is not None else background
        monkeypatch.setattr(trainer, "sampled_map_and_input_values", sampled(maps, inputs))
        quality = trainer.proxy_quality()
        assert quality["value"] == pytest.approx(expected, abs=0.02), lesion_map
        assert main.inverted.item() == 1.0 and main.polarity_gate.tolist() == pytest.approx([1.0, 0.5, 0.4])
    assert seen and all(m == trainer.proxy_orientation_slices and inverted == 0.0 and ungated
                        for m, inverted, ungated in seen)
    monkeypatch.setattr(trainer, "sampled_map_and_input_values", sampled(background, rng.uniform(-1.0, 1.0, n)))
    assert trainer.proxy_quality() is None


def test_orientation_follows_where_the_map_puts_the_inputs_own_outliers():
    """I_in's pixels beyond R_d's input range on the plans' side decide: ranked below the rest of
    I_in by I_ro, the anomalies are in I_ro's other end, even where no value of I_ro leaves R_d's
    range of I_ro (a flip the map's tails cannot see). Without such outliers the map's tails decide."""
    rng = np.random.default_rng(1)
    n = 20000
    reference_maps, reference_inputs = rng.uniform(0.2, 0.8, n), rng.normal(0.0, 1.0, n)
    lesion = np.r_[np.zeros(n - 1000, bool), np.ones(1000, bool)]
    bright_inputs = np.where(lesion, 4.0, rng.normal(0.0, 1.0, n))
    background = rng.uniform(0.2, 0.8, n)
    cases = [  # (lesion's I_ro values, inputs, expected_above, inverted, decided_by)
        (0.9, bright_inputs, True, False, "input_outliers"),
        (0.05, bright_inputs, True, True, "input_outliers"),
        (0.25, bright_inputs, True, True, "input_outliers"),  # low, but inside R_d's range of I_ro
        (0.9, -bright_inputs, False, False, "input_outliers"),  # dark lesions (leftmost polarity)
        (0.25, -bright_inputs, False, True, "input_outliers"),
    ]
    for lesion_map, inputs, expected_above, inverted, decided_by in cases:
        maps = np.where(lesion, lesion_map, background)
        figures = orientation_figures(reference_maps, reference_inputs if expected_above else -reference_inputs,
                                      maps, inputs, expected_above)
        assert (figures["inverted"], figures["decided_by"]) == (inverted, decided_by), (lesion_map, expected_above)
        assert figures["input_outliers"] == pytest.approx(0.05, abs=0.01)
        assert (figures["input_outliers_auroc"] < 0.5) is inverted
    # the 0.25 case: the tails alone would not have flipped it
    assert orientation_figures(reference_maps, reference_inputs, np.where(lesion, 0.25, background),
                               rng.normal(0.0, 1.0, n), True)["inverted"] is False
    # no input outliers: the map's tails decide (an excess below R_d's range of I_ro flips it)
    plain_inputs = rng.normal(0.0, 1.0, n)
    for lesion_map, inverted in ((0.05, True), (0.95, False), (0.5, False)):
        figures = orientation_figures(reference_maps, reference_inputs, np.where(lesion, lesion_map, background),
                                      plain_inputs, True)
        assert (figures["inverted"], figures["decided_by"], figures["input_outliers_auroc"]) == \
            (inverted, "map_tails", None), lesion_map


def test_a_fold_whose_anomalies_fell_into_the_dark_cluster_maps_one_minus_i_ro(trainer_factory, monkeypatch, tmp_path):
    """The trainer decides the orientation from the map and the input on R_d and I_in: a fold whose
    map ranks the input's own bright outliers low (the cluster flip of paper 001, Fig. 8) predicts
    1 - I_ro, one that ranks them high keeps I_ro; the choice travels with M's weights, and
    weights saved before it existed load as not inverted."""
    trainer = trainer_factory()
    assert trainer.plans.threshold.peak != "leftmost"  # the demo's lesions are bright: I_ro expected above
    rng = np.random.default_rng(0)
    reference = (rng.uniform(0.2, 0.8, 20000), rng.normal(0.0, 1.0, 20000))
    lesion = np.r_[np.zeros(18000, bool), np.ones(2000, bool)]
    input_values = np.where(lesion, 4.0, rng.normal(0.0, 1.0, 20000))
    dark_lesion = (np.where(lesion, rng.uniform(0.0, 0.1, 20000), rng.uniform(0.2, 0.8, 20000)), input_values)
    bright_lesion = (1.0 - dark_lesion[0], input_values)
    slices = torch.from_numpy(trainer.inputs.read(np.arange(2))).float()
    main = trainer.networks["M"]
    with torch.no_grad():
        main.eval()
        raw = main(slices)[2][:, 0]
    for inputs, inverted in ((dark_lesion, True), (bright_lesion, False)):
        values = iter([reference, inputs])
        monkeypatch.setattr(trainer, "sampled_map_and_input_values", lambda pool, max_slices: next(values))
        figures = trainer.orient()
        assert figures["inverted"] is inverted and main.inverted.item() == float(inverted)
        assert figures["decided_by"] == "input_outliers"
        expected = 1 - raw if inverted else raw
        # the polarity gate's levels: R_d's medians of the input and of the oriented map
        map_median = np.median(reference[0])
        assert main.polarity_gate.tolist() == pytest.approx(
            [1.0, np.median(reference[1]), 1 - map_median if inverted else map_median], abs=1e-4)
        torch.testing.assert_close(trainer.predict_anomaly_map_eval(slices), main.gated(expected, slices[:, 0], True))
        assert trainer.log.events[-1]["event"] == "orientation"
    # without input outliers the map's tails decide, and the gate stays off (the lesions need not
    # lie beyond the tissue's median: pneumonia in an X-ray's dark lung fields)
    values = iter([reference, (dark_lesion[0], rng.normal(0.0, 1.0, 20000))])
    monkeypatch.setattr(trainer, "sampled_map_and_input_values", lambda pool, max_slices: next(values))
    figures = trainer.orient()
    assert figures["decided_by"] == "map_tails" and main.polarity_gate[0].item() == 0.0
    # the real sampling: I_ro and the input at the same pixels, inside the ROI
    monkeypatch.delattr(trainer, "sampled_map_and_input_values")
    maps, inputs = trainer.sampled_map_and_input_values(trainer.inputs, 4)
    assert maps.shape == inputs.shape and np.all((0 <= maps) & (maps <= 1))
    np.testing.assert_array_equal(maps, trainer.sampled_map_values(trainer.inputs, 4))
    # the orientation is part of M's state: saved and loaded with it; older weights load as I_ro
    main.inverted.fill_(1.0)
    saved = state(main)
    assert saved["inverted"].item() == 1.0
    fresh = ASCNetMain(**trainer.network_kwargs())
    fresh.load_state_dict(saved)
    assert fresh.inverted.item() == 1.0
    older = {k: v for k, v in saved.items() if k not in ("inverted", "polarity_gate")}
    fresh.load_state_dict(older)
    assert fresh.inverted.item() == 0.0 and fresh.polarity_gate[0].item() == 0.0


def test_the_polarity_gate_keeps_pixels_on_the_non_anomalous_side_of_the_input_at_the_normal_level():
    """Where the input lies on the non-anomalous side of R_d's input median, the map is at most R_d's
    map median (at least, for dark lesions); elsewhere, and while the levels are unset (older
    weights, a fold still training), the map is untouched. The polarity gate keeps the darkest
    pixels, which an unseparated map can rate above the lesions, below the lesions' values."""
    main = ASCNetMain()
    anomaly_map = torch.tensor([0.9, 0.9, 0.2, 0.2, 0.7])
    inputs = torch.tensor([0.05, 0.8, 0.05, 0.8, 0.45])   # a dark rim, a bright lesion, ..., the median itself
    assert torch.equal(main.gated(anomaly_map, inputs, True), anomaly_map)  # no levels: no gate
    main.set_polarity_gate(0.45, 0.5)
    torch.testing.assert_close(main.gated(anomaly_map, inputs, True), torch.tensor([0.5, 0.9, 0.2, 0.2, 0.5]))
    # dark lesions: the anomalies are the map's low end, and pixels brighter than the median cannot be one
    torch.testing.assert_close(main.gated(anomaly_map, inputs, False), torch.tensor([0.9, 0.9, 0.2, 0.5, 0.7]))
    # the levels travel with M's weights
    fresh = ASCNetMain()
    fresh.load_state_dict(state(main))
    assert fresh.polarity_gate.tolist() == pytest.approx([1.0, 0.45, 0.5])
    main.set_polarity_gate(None)
    assert torch.equal(main.gated(anomaly_map, inputs, True), anomaly_map)


# ---- restarts ------------------------------------------------------------------------------------------
@pytest.fixture
def lifted_outliers(monkeypatch):
    """The demo's lesions are too few for input outliers (under 2 % of I_in's pixels): lift I_in's
    brightest 5 % of the input beyond R_d's range wherever the trainer samples the input."""
    real_inputs = ASCNetTrainer.sampled_input_values
    real_both = ASCNetTrainer.sampled_map_and_input_values

    def lift(trainer, pool, inputs):
        return np.where(inputs > np.percentile(inputs, 95), inputs + 10.0, inputs) if pool is trainer.inputs else inputs

    monkeypatch.setattr(ASCNetTrainer, "sampled_input_values",
                        lambda self, pool, n: lift(self, pool, real_inputs(self, pool, n)))

    def both(self, pool, n):
        maps, inputs = real_both(self, pool, n)
        return maps, lift(self, pool, inputs)
    monkeypatch.setattr(ASCNetTrainer, "sampled_map_and_input_values", both)


@pytest.mark.parametrize("separation_auroc,kept", [({1: 0.9, 2: 0.6}, 1), ({1: 0.55, 2: 0.2}, 2)])
def test_restarts_train_from_fresh_weights_and_keep_the_restart_whose_outliers_separate_most(
        trainer_factory, lifted_outliers, monkeypatch, separation_auroc, kept):
    """restarts=2: the stages run twice, the second from a new initialisation; at each restart's end
    the separation |AUROC - 0.5| of I_in's input outliers under raw I_ro is recorded, and the
    restart with the larger one (a flipped map counts as much as an upright one) stands for the
    fold, oriented on its own networks; its record and networks are saved for a resume."""
    trainer = trainer_factory({"restarts": 2, "stage1_cycles": 1, "stage2_cycles": 1, "max_iterations_per_step": 2})
    assert [p.name for p in trainer.phases][:2] == ["restart1/stage1/cycle1/discriminator", "restart1/stage1/cycle1/main"]
    assert [p.restart for p in trainer.phases] == [1] * 4 + [2] * 4
    real_figures = trainer.raw_orientation_figures
    networks_at_end = {}

    def figures(max_slices):
        restart = trainer.phases[min(trainer.position["phase"], len(trainer.phases) - 1)].restart
        networks_at_end.setdefault(restart, state(trainer.networks["M"]))
        auroc = separation_auroc[restart]
        return {**real_figures(max_slices), "decided_by": "input_outliers", "input_outliers_auroc": auroc,
                "inverted": auroc < 0.5}
    monkeypatch.setattr(trainer, "raw_orientation_figures", figures)
    first_init = state(trainer.networks["M"])
    trainer.checkpoint_every = 10 ** 6
    trainer.run_training()
    records = [e for e in trainer.log.events if e["event"] == "restart"]
    assert [(e["restart"], e["separation"]) for e in records] == \
        [(r, pytest.approx(abs(separation_auroc[r] - 0.5))) for r in (1, 2)]
    # the second restart started from fresh weights, not from the first one's or its initialisation
    second_start = [e for e in trainer.log.entries if e["phase"].startswith("restart2/")]
    assert second_start and not same(networks_at_end[1], networks_at_end[2]) and not same(first_init, networks_at_end[2])
    kept_weights = {k: v for k, v in state(trainer.networks["M"]).items() if k not in ("inverted", "polarity_gate")}
    assert same(kept_weights, networks_at_end[kept])
    [orientation] = [e for e in trainer.log.events if e["event"] == "orientation"]
    assert trainer.networks["M"].inverted.item() == float(separation_auroc[kept] < 0.5) == float(orientation["inverted"])
    saved = torch.load(trainer.output_folder / "checkpoint_final.pt", weights_only=True)
    assert set(saved["extra"]["restart_records"]) == {"1", "2"}
    saved_restart = torch.load(trainer.output_folder / f"checkpoint_restart{kept}.pt", weights_only=True)
    assert saved_restart["record"] == saved["extra"]["restart_records"][str(kept)]


def fixed_separations(trainer, monkeypatch, separation_auroc):
    """The restarts' separations as given, whatever the networks (the demo's maps are untrained)."""
    real_figures = trainer.raw_orientation_figures

    def figures(max_slices):
        restart = trainer.phases[min(trainer.position["phase"], len(trainer.phases) - 1)].restart
        auroc = separation_auroc[restart]
        return {**real_figures(max_slices), "decided_by": "input_outliers", "input_outliers_auroc": auroc,
                "inverted": auroc < 0.5}
    monkeypatch.setattr(trainer, "raw_orientation_figures", figures)
    return trainer


def test_a_run_interrupted_at_a_restarts_start_resumes_exactly_and_keeps_the_recorded_restart(
        trainer_factory, lifted_outliers, monkeypatch):
    """Killed in the first iteration of restart 2 (its fresh networks were saved with the phase end),
    the run resumes from fresh weights of restart 2's seed and ends with the same kept networks as a
    run never interrupted: restart 1's, read back from checkpoint_restart1.pt."""
    overrides = {"restarts": 2, "stage1_cycles": 1, "stage2_cycles": 1, "max_iterations_per_step": 2}
    separations = {1: 0.9, 2: 0.6}
    straight = fixed_separations(trainer_factory(overrides), monkeypatch, separations)
    straight.run_training()
    expected = {name: state(network) for name, network in straight.networks.items()}
    stop = next(e["step"] for e in straight.log.entries if e["phase"].startswith("restart2/"))
    shutil.rmtree(straight.output_folder)

    class Interrupted(Exception):
        pass

    class Killed(ASCNetTrainer):
        def train_iteration(self, phase, iteration):
            losses = super().train_iteration(phase, iteration)
            if self.position["step"] + 1 == stop:  # restart 2's first iteration, not recorded
                raise Interrupted
            return losses

    with pytest.raises(Interrupted):
        fixed_separations(trainer_factory(overrides, cls=Killed), monkeypatch, separations).run_training()
    resumed = fixed_separations(trainer_factory(overrides), monkeypatch, separations)
    resumed.resume()
    assert resumed.position == {"phase": 4, "iteration": 0, "step": stop - 1}
    resumed.run_training()
    assert all(same(expected[name], state(network)) for name, network in resumed.networks.items())
    assert set(resumed.restart_records) == {"1", "2"}
    # the finished run re-opened with a third restart (--continue --set restarts=3, no budget): restart 3
    # starts from its own fresh weights, not from the kept and oriented networks of restart 1
    reopened = fixed_separations(trainer_factory(dict(overrides, restarts=3)), monkeypatch, separations)
    reopened.resume()
    assert reopened.position["phase"] == 8 and not reopened.finished
    torch.manual_seed(reopened.seed + RESTART_SEED_STRIDE * 2)
    fresh = reopened.build_networks()
    assert all(same(state(fresh[name]), state(network)) for name, network in reopened.networks.items())


def test_restarts_refuse_a_kept_checkpoint_that_would_choose_again(trainer_factory, lifted_outliers):
    with pytest.raises(TrainingError, match="keep_checkpoint=final"):
        trainer_factory({"restarts": 2, "keep_checkpoint": "best_proxy"})


def test_the_stopping_rule_skips_only_its_own_restarts_cycles(trainer_factory, lifted_outliers, monkeypatch):
    trainer = trainer_factory({"restarts": 2, "stage1_cycles": 2})
    three_peaks = gaussian_counts([60, 120, 200], [5, 5, 5], [1, 1, 0.3]).astype(np.int64)
    monkeypatch.setattr(trainer, "validation_histogram", lambda max_slices: three_peaks)
    names = [p.name for p in trainer.phases]
    index = names.index("restart1/stage1/cycle1/main")
    trainer.on_phase_end(index, trainer.phases[index])
    assert {names[i] for i in trainer.skipped_phases} == {"restart1/stage1/cycle2/discriminator",
                                                         "restart1/stage1/cycle2/main"}


def test_restarts_need_input_outliers_to_choose_by(trainer_factory):
    """Without input outliers (the demo's unlifted inputs, as the Kermany X-rays) there is nothing to
    choose a restart by: the fold trains the paper's single run and logs why."""
    trainer = trainer_factory({"restarts": 3})
    assert trainer.restart_count == 1 and not any(p.name.startswith("restart") for p in trainer.phases)
    [event] = [e for e in trainer.log.events if e["event"] == "restarts"]
    assert event["asked"] == 3 and event["used"] is False and event["input_outliers"] < 0.02
