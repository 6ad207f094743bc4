"""CAS keeps shapes, suppresses channels by the class's importance weights (the label in
training, the auxiliary prediction at test), and its loss trains the auxiliary head."""

import pytest
import torch

from training.models.cas import CAS, cas_loss


def test_shape_and_suppression_follow_the_class_weights():
    cas = CAS(channels=4, num_classes=3)
    with torch.no_grad():
        cas.importance.weight.copy_(
            torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
        )
    f = torch.ones(2, 4, 5, 5)
    out = cas(f, labels=torch.tensor([1, 2]))
    assert out.shape == f.shape
    assert out[0, :, 0, 0].tolist() == [0.0, 2.0, 0.0, 0.0]  # only class 1's channel, x2
    assert out[1, :, 0, 0].tolist() == [0.0, 0.0, 1.0, 1.0]


def test_without_labels_the_auxiliary_prediction_chooses_the_weights():
    cas = CAS(channels=2, num_classes=2)
    with torch.no_grad():
        cas.importance.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    f = torch.zeros(1, 2, 3, 3)
    f[:, 1] = 5.0  # channel 1 is active: the auxiliary head predicts class 1
    out = cas(f)
    assert cas.aux_logits.argmax(1).item() == 1
    assert torch.equal(out, f * torch.tensor([0.0, 1.0])[None, :, None, None])


def test_cas_loss_is_beta_times_the_mean_cross_entropy_and_trains_the_head():
    torch.manual_seed(0)
    modules = [CAS(8, 3), CAS(8, 3)]
    f = torch.randn(16, 8, 4, 4)
    y = torch.randint(0, 3, (16,))
    for m in modules:
        m(f, y)
    loss = cas_loss(modules, y, beta=2.0)
    expected = (
        2.0
        * torch.stack([torch.nn.functional.cross_entropy(m.aux_logits, y) for m in modules]).mean()
    )
    assert torch.allclose(loss, expected)
    opt = torch.optim.SGD([p for m in modules for p in m.parameters()], lr=0.5)
    first = loss.item()
    for _ in range(20):
        for m in modules:
            m(f, y)
        loss = cas_loss(modules, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_cas_loss_needs_a_forward_pass():
    with pytest.raises(ValueError):
        cas_loss([CAS(2, 2)], torch.tensor([0]))
