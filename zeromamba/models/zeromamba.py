"""ZeroMamba (Hou et al., AAAI 2025) on a VMamba v2 backbone, docs/design.md §7.2, after the official code
(DingjieFu/ZeroMamba, train.py).

pred = GRL(logits) + l2_normalize(MLP(SLP(x_pre))) with
* GRL  (global representation learning): Linear(num_classes, A, bias=False) on the backbone's
  ImageNet logits;
* SLP  (semantic-aware local projection): attribute queries q = normalize(V) @ W attend over the
  L2-normalised regions of the last-stage map, fused in ``zeromamba.ops.slp_project``;
* MLP  A -> 512 -> A, ReLU, no bias;
* SeF  (semantic fusion): the sum above.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from .vmamba import VSSM, vssm

# official checkpoint prefix -> ours; the SLP lives inside the official backbone module
_OFFICIAL_PREFIXES = (
    ("VisionMamba.classifier2.", "slp."),
    ("VisionMamba.", "backbone."),
    ("clf_head2.", "slp_mlp."),
    ("clf_head.", "grl."),
)


class SemanticProjection(nn.Module):
    """SLP: attribute-guided attention pooling of region features.

    V (A, E) attribute embeddings (initialised from word vectors, rows normalised), W1, W2 (E, F).
    ``forward(x (b, F, h, w)) -> (b, A)``: with feat = x as (b, F, h*w) L2-normalised over F,
    q1 = normalize(V) @ W1, q2 = normalize(V) @ W2,
    out[b, i] = sum_r softmax_r(q1[i] . feat[:, r]) (q2[i] . feat[:, r]).
    """

    def __init__(
        self,
        attributes: int,
        features: int,
        word_vectors: Tensor | None = None,
        embed_dim: int = 300,
        backend: str | None = None,
    ):
        super().__init__()
        if word_vectors is not None:
            if word_vectors.dim() != 2 or word_vectors.shape[0] != attributes:
                raise ValueError(
                    f"word_vectors must have shape (attributes={attributes}, E), "
                    f"got {tuple(word_vectors.shape)}"
                )
            V = F.normalize(word_vectors.detach().float(), dim=1)
        else:
            V = torch.randn(attributes, embed_dim)
        self.V = nn.Parameter(V.clone())
        self.W1 = nn.Parameter(torch.randn(V.shape[1], features))
        self.W2 = nn.Parameter(torch.randn(V.shape[1], features))
        self.backend = backend

    def queries(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (b, F, h, w) -> (feat (b, F, R), q1 (A, F), q2 (A, F)), R = h*w, feat L2-normalised
        over F: the operands of ``slp_project``."""
        feat = F.normalize(x.flatten(2), dim=1)
        v = F.normalize(self.V, dim=1)
        q1, q2 = (v @ self.W1).to(feat.dtype), (v @ self.W2).to(feat.dtype)
        return feat, q1, q2

    def forward(self, x: Tensor, return_attention: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x (b, F, h, w) -> out (b, A); with ``return_attention`` also the attention weights
        (b, A, h, w) float32, softmax over the h*w regions of q1 . feat: the weights the fused
        op applies internally but never materialises."""
        feat, q1, q2 = self.queries(x)
        out = ops.slp_project(feat, q1, q2, backend=self.backend)
        if not return_attention:
            return out
        scores = torch.einsum("af,bfr->bar", q1.float(), feat.float())
        return out, torch.softmax(scores, dim=-1).unflatten(-1, x.shape[-2:])


class ZeroMamba(nn.Module):
    """ZeroMamba: images -> predicted attribute vector (b, A).

    Args:
        backbone: a VSSM, or a config name for ``vssm(name)`` ("tiny", "small", "base", "nano").
        attributes: A, the number of class attributes (CUB 312, SUN 102, AWA2 85).
        word_vectors: (A, E) attribute word embeddings that initialise V (official: 300-d w2v);
            None: V random normal (A, embed_dim).
        embed_dim: E when no word vectors are given.
        mlp_hidden: hidden width of the SLP MLP (official 512).
        grl_bias: a bias on the GRL linear (the official train.py has none; its test.py builds one).
        backend: kernel backend for the scans and the SLP (None: $ZEROMAMBA_BACKEND or fastest).
        **backbone_overrides: VSSM arguments when ``backbone`` is a name.

    Parameter names: ``backbone.*`` (VMamba's names), ``slp.{V,W1,W2}``, ``grl.weight``,
    ``slp_mlp.{0,2}.weight``; ``load_official`` reads the official checkpoint layout.
    """

    def __init__(
        self,
        backbone: str | VSSM,
        attributes: int,
        word_vectors: Tensor | None = None,
        *,
        embed_dim: int = 300,
        mlp_hidden: int = 512,
        grl_bias: bool = False,
        backend: str | None = None,
        **backbone_overrides,
    ):
        super().__init__()
        if isinstance(backbone, str):
            backbone = vssm(backbone, backend=backend, **backbone_overrides)
        elif backbone_overrides:
            raise ValueError("backbone overrides need a config name, not a built VSSM")
        elif backend is not None:
            backbone.set_backend(backend)
        self.backbone = backbone
        self.slp = SemanticProjection(
            attributes, backbone.num_features, word_vectors, embed_dim, backend
        )
        self.grl = nn.Linear(backbone.num_classes, attributes, bias=grl_bias)
        self.slp_mlp = nn.Sequential(
            nn.Linear(attributes, mlp_hidden, bias=False),
            nn.ReLU(),
            nn.Linear(mlp_hidden, attributes, bias=False),
        )

    def forward(
        self, images: Tensor, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """(b, 3, H, W) -> pred (b, A); with ``return_attention`` also the SLP's attention
        weights (b, A, h, w) over the last-stage map's regions (each map sums to 1)."""
        x_pre, logits = self.backbone(images)
        if return_attention:
            slp, attention = self.slp(x_pre, return_attention=True)
        else:
            slp = self.slp(x_pre)
        pred = self.grl(logits) + F.normalize(self.slp_mlp(slp), dim=-1)
        return (pred, attention) if return_attention else pred

    def set_backend(self, backend: str | None) -> None:
        """Kernel backend of every op of the model (None: default selection)."""
        self.backbone.set_backend(backend)
        self.slp.backend = backend

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """The official optimizer groups: "backbone" (VSSM and the SLP's V, W1, W2, which the
        official code keeps inside the backbone module), "grl", "slp_mlp"."""
        return {
            "backbone": [*self.backbone.parameters(), *self.slp.parameters()],
            "grl": list(self.grl.parameters()),
            "slp_mlp": list(self.slp_mlp.parameters()),
        }

    def load_official(self, state_dict: Mapping[str, Tensor], strict: bool = True):
        """Load a checkpoint of the official code (keys ``VisionMamba.*``,
        ``VisionMamba.classifier2.{V,W1,W2}``, ``clf_head.*``, ``clf_head2.*``)."""
        if "clf_head.bias" in state_dict and self.grl.bias is None:
            raise ValueError(
                "the checkpoint has a GRL bias (clf_head.bias): build the model with grl_bias=True"
            )
        return self.load_state_dict(official_to_native(state_dict), strict=strict)


def _rename(state_dict: Mapping[str, Tensor], pairs) -> dict[str, Tensor]:
    out = {}
    for key, value in state_dict.items():
        for src, dst in pairs:
            if key.startswith(src):
                key = dst + key[len(src) :]
                break
        out[key] = value
    return out


def official_to_native(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Official ZeroMamba checkpoint keys -> ZeroMamba's (a leading ``module.`` is dropped)."""
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    return _rename(state_dict, _OFFICIAL_PREFIXES)


def native_to_official(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """ZeroMamba's keys -> the official checkpoint layout (inverse of ``official_to_native``)."""
    pairs = [(dst, src) for src, dst in _OFFICIAL_PREFIXES]
    return _rename(state_dict, pairs)


def zsl_loss(pred: Tensor, labels: Tensor, class_att: Tensor, lambda_l1: float) -> Tensor:
    """The official training loss: CE(pred @ class_att^T, labels) + lambda_l1 L1(pred,
    class_att[labels]) (mean L1, no temperature).

    pred: (b, A); labels: (b,) indices into class_att's rows (the seen classes);
    class_att: (classes, A) class attribute vectors.
    """
    pred = pred.float()
    class_att = class_att.to(pred.dtype)
    return F.cross_entropy(pred @ class_att.T, labels) + lambda_l1 * F.l1_loss(
        pred, class_att[labels]
    )
