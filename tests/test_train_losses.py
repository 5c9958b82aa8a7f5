"""tlkit.train.losses: pure functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tlkit.train.losses import balanced_class_weights, calibrated_nll, classification_loss, mix_batch


def test_soft_one_hot_targets_equal_class_indices() -> None:
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    soft = F.one_hot(y, 4).float()
    for smoothing in (0.0, 0.1):
        torch.testing.assert_close(classification_loss(logits, soft, label_smoothing=smoothing),
                                   classification_loss(logits, y, label_smoothing=smoothing))


def test_balanced_weights_even_out_the_classes() -> None:
    labels = torch.tensor([0] * 6 + [1] * 2)
    w = balanced_class_weights(labels, 3)
    assert w[0] * 6 == w[1] * 2 and w[2] > 0  # an absent class gets a finite weight


def test_mixing_is_repeatable_and_keeps_targets_probabilities() -> None:
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 4
    for mixup, cutmix in ((0.4, 0.0), (0.0, 1.0), (0.4, 1.0)):
        a = mix_batch(x, y, 4, mixup=mixup, cutmix=cutmix, generator=torch.Generator().manual_seed(5))
        b = mix_batch(x, y, 4, mixup=mixup, cutmix=cutmix, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a[1].sum(1), torch.ones(8))
        assert not torch.equal(a[0], x)
    same = mix_batch(x, y, 4, mixup=0.0, cutmix=0.0, generator=torch.Generator())
    assert same[0] is x and same[1] is y


def test_calibrated_loss_ignores_the_temperature() -> None:
    logits = torch.tensor([[3.0, 0.0], [0.0, 3.0], [2.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    sharp = calibrated_nll(torch.log_softmax(logits * 4, 1), labels)
    soft = calibrated_nll(torch.log_softmax(logits / 4, 1), labels)
    assert abs(sharp - soft) < 0.02  # same ranking, different confidence: about the same calibrated loss
    assert calibrated_nll(torch.empty(0, 2), torch.empty(0, dtype=torch.long)) != calibrated_nll(torch.empty(0, 2), torch.empty(0, dtype=torch.long))
