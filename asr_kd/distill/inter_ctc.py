"""Inter-KD: auxiliary CTC heads on intermediate student layers, trained with CTC and KD.

Inter-KD (Kim et al., arXiv 2211.15075) extends intermediate CTC (Lee & Watanabe, ICASSP 2021)
with distillation: each chosen student layer gets its own head, ``Linear(D -> V)`` +
``log_softmax``, and that head is trained with the same mix as the final layer, CTC on the
transcript and frame KL to the teacher's posteriors (:func:`asr_kd.distill.losses.distill_loss`,
same alpha, temperature and knobs). The total loss is

    loss = (1 - w) * final_layer_loss + w * mean over heads (head_loss)

The heads are a training-only :class:`asr_kd.distill.kd_term.KDTerm` named ``inter_ctc``:
:class:`asr_kd.training.task.AsrTask` keeps them in ``task.kd_modules["inter_ctc"]``, outside
``task.model``, so they are optimised and saved in Lightning checkpoints (a resume restores them),
while :func:`asr_kd.models.loading.load_model` (``model.`` keys only) and every export leave them
out.

Shapes (legend): B batch, T student output frames, D the student's d_model, V vocabulary.

Usage:
    layers = resolve_inter_layers(kd.inter_layers, num_layers=len(student.layers))
    heads = InterCTCHeads(layers, d_model=64, vocab_size=29, weight=0.3,
                          loss_options=dict(alpha=0.5, temperature=2.0))
    log_probs, out_lens, hidden = student(feats, feat_lens, return_hidden=True)
    aux = inter_ctc_loss(heads(hidden), out_lens, tokens, token_lens, ids, probs,
                         alpha=0.5, temperature=2.0)
    loss, aux = heads.add_to(loss, KDStep(batch, out_lens, hidden, teacher))   # the same aux
"""

from __future__ import annotations

import torch
from torch import nn

from asr_kd.distill.kd_term import KDStep, KDTerm
from asr_kd.distill.losses import distill_loss
from asr_kd.errors import ConfigError

__all__ = ["InterCTCHeads", "inter_ctc_loss", "resolve_inter_layers"]


def resolve_inter_layers(layers: list[int] | None, num_layers: int) -> list[int]:
    """The 1-based student layers that get a head; None = the middle layer.

    The last layer already has the model's own CTC head, so the range is 1 .. num_layers - 1.

    >>> resolve_inter_layers(None, 3), resolve_inter_layers(None, 6), resolve_inter_layers([1, 2], 3)
    ([2], [3], [1, 2])
    """
    if layers is None:
        layers = [(num_layers + 1) // 2]
    layers = [int(layer) for layer in layers]
    bad = [layer for layer in layers if not 1 <= layer < num_layers]
    if bad or not layers or len(set(layers)) != len(layers):
        raise ConfigError(
            f"distill.inter_layers={layers}: expected distinct student layers in 1 .. "
            f"{num_layers - 1} (1-based; the student has {num_layers} layers and the last one "
            f"has the model's own CTC head); choose layers in range or null for the middle one"
        )
    return layers


class InterCTCHeads(KDTerm):
    """One ``Linear(D -> V)`` + ``log_softmax`` head per chosen (1-based) student layer; as a KD
    term, ``(1 - weight) * loss + weight * inter_ctc_loss(heads, ...)``.

    Args:
        layers: 1-based student layers with a head; d_model: D; vocab_size: V.
        weight: ``distill.inter_weight``. loss_options: the final layer's knobs
            (``KDConfig.loss_options()``), which the heads' losses share.

    >>> heads = InterCTCHeads([2], d_model=8, vocab_size=5, weight=0.3)
    >>> hidden = tuple(torch.randn(2, 7, 8) for _ in range(3))  # every layer's (B, T, D)
    >>> [tuple(lp.shape) for lp in heads(hidden)]
    [(2, 7, 5)]
    """

    name = "inter_ctc"

    def __init__(
        self,
        layers: list[int],
        d_model: int,
        vocab_size: int,
        weight: float,
        loss_options: dict | None = None,
    ):
        super().__init__()
        self.layers = list(layers)
        self.heads = nn.ModuleList(nn.Linear(d_model, vocab_size) for _ in self.layers)
        self.weight, self.loss_options = weight, dict(loss_options or {})

    def forward(self, hidden: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """Every layer's output, layer 1 first (B, T, D) -> one (B, T, V) log-probs per head."""
        return [
            head(hidden[layer - 1]).log_softmax(dim=-1)
            for layer, head in zip(self.layers, self.heads, strict=True)
        ]

    def add_to(self, loss: torch.Tensor, step: KDStep) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1 - weight) * loss + weight * aux`` and ``aux``, the heads' mean loss (CTC, plus KD
        with the final layer's knobs when the step has a teacher)."""
        options = {}
        if step.teacher is not None:
            ids, probs, teacher_lens, _hidden = step.teacher
            options = dict(teacher_ids=ids, teacher_probs=probs, teacher_lens=teacher_lens,
                           **self.loss_options)  # fmt: skip
        batch = step.batch
        aux = inter_ctc_loss(
            self(step.student_hidden), step.out_lens, batch["tokens"], batch["token_lens"],
            **options,
        )  # fmt: skip
        return (1.0 - self.weight) * loss + self.weight * aux, aux.detach()


def inter_ctc_loss(
    head_log_probs: list[torch.Tensor],
    out_lens: torch.Tensor,
    tokens: torch.Tensor,
    token_lens: torch.Tensor,
    teacher_ids: torch.Tensor | None = None,
    teacher_probs: torch.Tensor | None = None,
    **loss_options,
) -> torch.Tensor:
    """Mean over heads of :func:`distill_loss` (CTC, plus KD when ``teacher_probs`` is given).

    Args:
        head_log_probs: one (B, T, V) log-softmax per head (:class:`InterCTCHeads`).
        out_lens, tokens, token_lens, teacher_ids, teacher_probs, loss_options: as for
            :func:`distill_loss` (``alpha``, ``temperature``, ``teacher_lens``, ...).
    Returns:
        scalar tensor.
    """
    losses = [
        distill_loss(lp, out_lens, tokens, token_lens, teacher_ids, teacher_probs, **loss_options)
        for lp in head_log_probs
    ]
    return torch.stack([loss.loss for loss in losses]).mean()
