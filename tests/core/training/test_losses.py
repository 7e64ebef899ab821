"""Scores and losses: MaxSim with masks, KL distillation with min-max normalisation, CE."""

from __future__ import annotations

import math

import pytest
import torch

from jacolbert_core.training import losses


def _unit(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=g), dim=-1)


def _reference_maxsim(q: torch.Tensor, d: torch.Tensor) -> float:
    return float((q @ d.T).max(dim=1).values.sum())


def test_group_and_pairwise_scores_match_a_loop_with_masks():
    batch, nway, lq, ld, dim = 3, 4, 5, 7, 8
    q = _unit(batch, lq, dim, seed=1)
    d = _unit(batch * nway, ld, dim, seed=2)
    q_lengths = [5, 3, 4]
    d_lengths = torch.randint(
        1, ld + 1, (batch * nway,), generator=torch.Generator().manual_seed(3)
    )
    d_mask = torch.arange(ld).unsqueeze(0) < d_lengths.unsqueeze(1)
    q_mask = losses.query_mask(q_lengths, lq)
    grouped = losses.group_scores(q, q_mask, d, d_mask)
    pairwise = losses.pairwise_scores(q, q_mask, d, d_mask)
    assert grouped.shape == (batch, nway) and pairwise.shape == (batch, batch * nway)
    for b in range(batch):
        for m in range(batch * nway):
            expected = _reference_maxsim(q[b, : q_lengths[b]], d[m, : int(d_lengths[m])])
            assert pairwise[b, m].item() == pytest.approx(expected, abs=1e-5)
            if m // nway == b:
                assert grouped[b, m % nway].item() == pytest.approx(expected, abs=1e-5)


def test_minmax_normalize():
    out = losses.minmax_normalize(torch.tensor([[2.0, 4.0, 3.0], [5.0, 5.0, 5.0]]))
    assert out.tolist() == [[0.0, 1.0, 0.5], [0.0, 0.0, 0.0]]


def test_kl_is_zero_when_normalised_scores_agree():
    teacher = torch.tensor([[9.0, 1.0, 5.0, 3.0], [0.2, 0.1, 0.4, 0.3]])
    student = teacher * 7.5 + 100.0  # another scale and offset: same after min-max
    loss = losses.kl_distillation_loss(student, teacher)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert losses.kl_distillation_loss(student, teacher, normalize=False).item() > 0.1


def test_kl_matches_the_documented_formula():
    student = torch.tensor([[3.0, 1.0, 2.0]])
    teacher = torch.tensor([[0.5, 2.5, 1.5]])
    tau = 0.5
    s = [(x - 1.0) / 2.0 for x in (3.0, 1.0, 2.0)]
    t = [(x - 0.5) / 2.0 for x in (0.5, 2.5, 1.5)]

    def softmax(v):
        e = [math.exp(x / tau) for x in v]
        return [x / sum(e) for x in e]

    p, q = softmax(t), softmax(s)
    expected = sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))
    loss = losses.kl_distillation_loss(student, teacher, temperature=tau)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_kl_gradients_flow_to_the_student_only():
    student = torch.tensor([[1.0, 3.0, 2.0, 2.5, 1.2]], requires_grad=True)
    teacher = torch.tensor([[3.0, 1.0, 2.0, 0.0, 0.5]], requires_grad=True)
    loss = losses.kl_distillation_loss(student, teacher)
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None
    # descending the gradient moves the student's ranking towards the teacher's
    with torch.no_grad():
        moved = student - 0.1 * student.grad
    assert losses.kl_distillation_loss(moved, teacher) < loss


def test_kl_gradients_reach_token_vectors():
    q = _unit(2, 4, 8, seed=4).requires_grad_()
    d = _unit(2 * 3, 6, 8, seed=5).requires_grad_()
    mask = torch.ones(6, 6, dtype=torch.bool)
    scores = losses.group_scores(q, losses.query_mask([4, 4], 4), d, mask)
    losses.kl_distillation_loss(scores, torch.tensor([[3.0, 1.0, 0.0], [2.0, 0.0, 1.0]])).backward()
    assert q.grad.abs().sum() > 0 and d.grad.abs().sum() > 0


def test_kl_rejects_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        losses.kl_distillation_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        losses.kl_distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0)


def test_contrastive_loss_group_and_in_batch():
    scores = torch.tensor([[5.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    expected = -torch.log_softmax(scores, dim=1)[:, 0].mean()
    assert losses.contrastive_loss(scores, 3).item() == pytest.approx(expected.item())
    full = torch.randn(2, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss = losses.contrastive_loss(full, 3)
    manual = -(torch.log_softmax(full, 1)[0, 0] + torch.log_softmax(full, 1)[1, 3]) / 2
    assert loss.item() == pytest.approx(manual.item(), rel=1e-6)
    loss.backward()
    assert full.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="neither"):
        losses.contrastive_loss(torch.zeros(2, 5), 3)
