import math

import pytest
import torch

from geoseg.classes import IGNORE_INDEX
from geoseg.errors import ConfigError
from geoseg.tasks.losses import LOSSES, WeightedSumLoss, balanced_class_weights, build_loss


def _batch(seed=0, k=3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, k, 8, 8, generator=g, requires_grad=True)
    target = torch.randint(0, k, (2, 8, 8), generator=g)
    target[:, :3] = IGNORE_INDEX
    return logits, target


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_ignored_pixels_do_not_affect_loss(name):
    logits, target = _batch()
    loss_fn = build_loss(name)
    a = loss_fn(logits, target)
    changed = logits.detach().clone()
    changed[:, :, :3] = torch.randn_like(changed[:, :, :3]) * 50  # only ignored rows
    b = loss_fn(changed, target)
    assert torch.isfinite(a)
    assert float(a.detach()) == pytest.approx(float(b), rel=1e-5, abs=1e-6)
    a.backward()
    assert logits.grad is not None
    assert torch.all(logits.grad[:, :, :3] == 0)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_confident_correct_prediction_has_low_loss(name):
    _, target = _batch()
    perfect = torch.nn.functional.one_hot(target.clamp(min=0), 3).permute(0, 3, 1, 2) * 80.0 - 40
    wrong = torch.roll(perfect, 1, dims=1)
    fn = build_loss(name)
    assert float(fn(perfect, target)) < 0.05
    assert float(fn(wrong, target)) > float(fn(perfect, target)) + 0.3


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_all_ignored_batch_gives_zero_not_nan(name):
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), IGNORE_INDEX)
    loss = build_loss(name)(logits, target)
    assert float(loss.detach()) == 0.0
    loss.backward()


def test_weighted_sum_is_sum_of_parts():
    logits, target = _batch(1)
    combo = build_loss({"ce": 1.0, "dice": 0.5, "lovasz": 0.25})
    assert isinstance(combo, WeightedSumLoss)
    expected = (
        build_loss("ce")(logits, target)
        + 0.5 * build_loss("dice")(logits, target)
        + 0.25 * build_loss("lovasz")(logits, target)
    )
    assert float(combo(logits, target)) == pytest.approx(float(expected), rel=1e-5)


def test_class_weights_change_ce():
    logits, target = _batch(2)
    plain = build_loss("ce")(logits, target)
    same = build_loss("ce", class_weights=[1.0, 1.0, 1.0])(logits, target)
    heavy = build_loss("ce", class_weights=[10.0, 1.0, 1.0])(logits, target)
    assert float(plain) == pytest.approx(float(same))
    assert float(heavy) != pytest.approx(float(plain))


def test_unknown_loss_names_valid_ones():
    with pytest.raises(ConfigError, match="valid names are") as err:
        build_loss({"ce": 1.0, "dcie": 1.0})
    assert "dice" in str(err.value)
    with pytest.raises(ConfigError, match="weight"):
        build_loss({"ce": "heavy"})
    with pytest.raises(ConfigError, match="empty"):
        build_loss({})


def test_loss_options_passed_and_checked():
    logits, target = _batch(3)
    g2 = build_loss("focal")(logits, target)
    g0 = build_loss("focal", options={"focal": {"gamma": 0.0}})(logits, target)
    assert float(g0) > float(g2)
    with pytest.raises(ConfigError, match=r"loss_options\.focal"):
        build_loss("focal", options={"focal": {"gama": 1.0}})


def test_balanced_class_weights_hand_checked():
    w = balanced_class_weights([10, 30, 0])
    # N / (K * n_k) with K = 2 present classes, N = 40
    assert w.tolist() == pytest.approx([2.0, 40 / 60, 0.0])
    assert math.isclose(float((w * torch.tensor([10.0, 30.0, 0.0])).sum()) / 40, 1.0)
    with pytest.raises(ConfigError):
        balanced_class_weights([0, 0])
