"""Late-interaction scores and the two training losses of the JaColBERT papers.

Scores
------
``score(q, d) = sum_i max_j <q_i, d_j>`` over the query's vectors ``q_i`` (every query
position up to its length, ``[MASK]`` augmentation included) and the document's *kept*
vectors ``d_j`` (no padding, no punctuation): :func:`group_scores` for the n-way group of
each query, :func:`pairwise_scores` for every query against every document of a batch.

KL-divergence distillation (JaColBERTv2.5)
------------------------------------------
For one n-way group with student scores ``s`` and teacher scores ``t`` (positive first; the
order does not matter to the loss), both are min-max normalised *per group*::

    s_hat_i = (s_i - min_j s_j) / (max_j s_j - min_j s_j)        (same for t_hat)

so that both lie in [0, 1] whatever the scale of the teacher (a cross-encoder's logits,
BGE-M3's similarities) or of the student (a sum over up to 32+ query tokens). Then, with a
temperature ``tau`` (default 1, i.e. none: the v2.5 paper mentions none)::

    p = softmax(t_hat / tau)          q = softmax(s_hat / tau)
    loss = (1 / B) * sum_groups sum_i p_i * (log p_i - log q_i)     # KL(p || q), batchmean

which is ColBERTv2's KL loss (colbert-ai ``KLDivLoss(reduction='batchmean',
log_target=True)`` over log-softmaxed scores) applied to the normalised scores. It is zero
exactly when ``s_hat == t_hat`` (the normalised scores have min 0 and max 1, so equal
softmaxes mean equal vectors). A group whose scores are all equal normalises to all zeros
(a uniform distribution). ``normalize=False`` gives plain ColBERTv2 distillation.

A property of normalising the *student*: its lowest and highest documents always map to
0 and 1, so they receive gradient only through the other documents' normalised values
(``s_min`` and ``s_max`` appear in every ``s_hat_i``). Groups need n >= 3 for any
gradient at all; the usual 16 to 32-way groups train well.

Contrastive cross-entropy (JaColBERT v1)
----------------------------------------
``-log softmax(s / tau)[positive]`` over the group ``[pos, neg_1, ..., neg_{n-1}]``; with
in-batch negatives, over every document of the batch (the other queries' positives and
negatives too), the positive of query ``b`` being document ``b * n``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def query_mask(lengths: list[int] | torch.Tensor, width: int, device=None) -> torch.Tensor:
    """[batch, width] bool: positions a query owns (all of them for fixed-length queries)."""
    lengths = torch.as_tensor(lengths, device=device)
    return torch.arange(width, device=device).unsqueeze(0) < lengths.unsqueeze(1)


def _maxsim(similarities: torch.Tensor, doc_mask: torch.Tensor, q_mask: torch.Tensor):
    """similarities [..., Lq, Ld] -> [...] with doc_mask [..., 1, Ld], q_mask [..., Lq]."""
    lowest = torch.finfo(similarities.dtype).min
    best = similarities.masked_fill(~doc_mask, lowest).amax(dim=-1)
    return (best * q_mask.to(best.dtype)).sum(dim=-1)


def group_scores(
    queries: torch.Tensor,
    q_mask: torch.Tensor,
    documents: torch.Tensor,
    doc_mask: torch.Tensor,
) -> torch.Tensor:
    """MaxSim of each query against its own n documents.

    ``queries`` [B, Lq, dim], ``q_mask`` [B, Lq]; ``documents`` [B * n, Ld, dim] (the groups
    one after another), ``doc_mask`` [B * n, Ld]. Returns [B, n].
    """
    batch = queries.shape[0]
    if documents.shape[0] % batch:
        raise ValueError(
            f"{documents.shape[0]} documents do not split into {batch} groups of equal size"
        )
    n = documents.shape[0] // batch
    docs = documents.view(batch, n, *documents.shape[1:])
    mask = doc_mask.view(batch, n, 1, doc_mask.shape[-1]).bool()
    similarities = torch.einsum("bqd,bntd->bnqt", queries, docs)
    return _maxsim(similarities, mask, q_mask.bool().unsqueeze(1))


def pairwise_scores(
    queries: torch.Tensor,
    q_mask: torch.Tensor,
    documents: torch.Tensor,
    doc_mask: torch.Tensor,
) -> torch.Tensor:
    """MaxSim of every query against every document: [B, M] for M documents."""
    similarities = torch.einsum("bqd,mtd->bmqt", queries, documents)
    mask = doc_mask.bool().view(1, doc_mask.shape[0], 1, doc_mask.shape[1])
    return _maxsim(similarities, mask, q_mask.bool().unsqueeze(1))


def minmax_normalize(scores: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per row (last dimension): ``(s - min) / (max - min)``, all zeros for a constant row."""
    low = scores.amin(dim=-1, keepdim=True)
    high = scores.amax(dim=-1, keepdim=True)
    return (scores - low) / (high - low).clamp_min(eps)


def kl_distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    temperature: float = 1.0,
    normalize: bool = True,
) -> torch.Tensor:
    """KL(teacher || student) over n-way groups ([B, n] each), mean over groups.

    See the module docstring for the exact formula (JaColBERTv2.5: min-max normalised).
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"student scores {tuple(student.shape)} and teacher scores "
            f"{tuple(teacher.shape)} must have the same shape [groups, n]"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    student = student.float()
    teacher = teacher.detach().float().to(student.device)
    if normalize:
        student = minmax_normalize(student)
        teacher = minmax_normalize(teacher)
    log_q = F.log_softmax(student / temperature, dim=-1)
    log_p = F.log_softmax(teacher / temperature, dim=-1)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)


def contrastive_loss(scores: torch.Tensor, nway: int, *, temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy with the positive first in each group.

    ``scores`` is [B, n] (own group only, ``nway == n``) or [B, B * n] (in-batch negatives:
    every query against every document of the batch, groups in order): the positive of
    query ``b`` is column ``b * nway``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    batch = scores.shape[0]
    if scores.shape[1] == nway:
        labels = torch.zeros(batch, dtype=torch.long, device=scores.device)
    elif scores.shape[1] == batch * nway:
        labels = torch.arange(batch, device=scores.device) * nway
    else:
        raise ValueError(
            f"scores of shape {tuple(scores.shape)} are neither [B, nway={nway}] nor [B, B * nway]"
        )
    return F.cross_entropy(scores.float() / temperature, labels)
