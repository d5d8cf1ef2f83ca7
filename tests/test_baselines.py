"""The non-learned baselines against brute force."""
import numpy as np
import pytest

from autouad.evaluation.baselines import knn_scores, shrink


def test_shrink_averages_areas_and_standardises():
    image = np.random.default_rng(0).random((64, 96))
    out = shrink(image, 32)
    blocks = image.reshape(32, 2, 32, 3).mean((1, 3))
    expected = (blocks - blocks.mean()) / blocks.std()
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert shrink(np.full((10, 10), 3.0), 4).tolist() == np.zeros((4, 4)).tolist()  # constant: no division by 0


def test_knn_scores_equal_brute_force():
    rng = np.random.default_rng(1)
    normal, queries = rng.normal(size=(50, 12)), rng.normal(size=(7, 12))
    for k in (1, 3):
        brute = [np.sort(np.linalg.norm(normal - q, axis=1))[:k].mean() for q in queries]
        np.testing.assert_allclose(knn_scores(normal, queries, k, chunk=3), brute, rtol=1e-9)
    assert knn_scores(normal, normal[:2], 1) == pytest.approx([0.0, 0.0], abs=1e-6)
    with pytest.raises(ValueError):
        knn_scores(normal, queries, 51)
