import pytest
import torch

from opso_nb.ml.loss import BCEWithLogitsLoss_hot, CrossEntropyLoss_hot, ResampleLoss, reduce_loss, weight_reduce_loss


def test_bce_hot_and_label_smoothing():
    logits = torch.tensor([[2.0, -1.0]])
    y = torch.tensor([[1, 0]])
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.float())
    assert BCEWithLogitsLoss_hot()(logits, y) == pytest.approx(float(plain))
    smoothed = BCEWithLogitsLoss_hot(label_smoothing=0.2)(logits, y)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([[0.9, 0.1]]))
    assert float(smoothed) == pytest.approx(float(expected))


def test_cross_entropy_hot_checks_one_hot():
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    y = torch.tensor([[1, 0], [0, 1]])
    assert float(CrossEntropyLoss_hot()(logits, y)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]))))
    with pytest.raises(ValueError, match="one positive"):
        CrossEntropyLoss_hot()(logits, torch.tensor([[1, 1], [0, 1]]))


def test_reduce_helpers():
    loss = torch.tensor([1.0, 3.0])
    assert float(reduce_loss(loss, "sum")) == 4.0
    assert float(weight_reduce_loss(loss, torch.tensor([1.0, 0.0]), "mean")) == 0.5
    assert float(weight_reduce_loss(loss, None, "mean", avg_factor=4)) == 1.0
    with pytest.raises(ValueError):
        reduce_loss(loss, "max")


def test_resample_loss_prefers_correct_predictions_and_trains():
    torch.manual_seed(0)
    loss_fn = ResampleLoss(class_freq=[90, 10], train_num=100)
    y = torch.tensor([[1, 0], [0, 1], [0, 0]])
    good = torch.tensor([[4.0, -4.0], [-4.0, 4.0], [-4.0, -4.0]])
    assert float(loss_fn(good, y)) < float(loss_fn(-good, y))
    # gradient descent on free logits drives them to the labels
    z = torch.zeros(3, 2, requires_grad=True)
    opt = torch.optim.SGD([z], lr=5.0)
    for _ in range(200):
        opt.zero_grad()
        loss_fn(z, y).backward()
        opt.step()
    assert ((z > 0).int() == y).all()
