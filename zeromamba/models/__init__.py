"""Models: the VMamba v2 backbone and the ZeroMamba head (DESIGN §3).

Backbone::

    from zeromamba.models import vssm, VSSM
    net = vssm("small")                 # VMamba vmambav2_small_224: 50,147,752 parameters
    net = vssm("tiny", num_classes=10)  # any VSSM argument can be overridden
    net = vssm("nano")                  # dims 32, depths 1-1-2-1: CPU tests on 32-64 px images
    x_pre, logits = net(images)         # (b, dims[-1], H/32, W/32), (b, num_classes)
    x_pre = net.forward_features(images)  # the map alone (x_pre is before the head's norm)
    net.load_state_dict(torch.load(ckpt)["model"])  # official VMamba checkpoints, strict

Configs ("tiny", "small", "base" = VMamba's vmambav2v_tiny_224, vmambav2_small_224,
vmambav2_base_224; "nano"): see ``CONFIGS``. Runtime switches: ``net.set_backend(name | None)``
(kernel backend; None = $ZEROMAMBA_BACKEND or the fastest for the device),
``net.set_pipeline("fused" | "unfused")`` (``ss2d_scan`` vs VMamba's cross_scan +
selective_scan + cross_merge, same output), ``net.set_checkpointing(True)`` (per block);
the same as VSSM constructor arguments ``backend``, ``pipeline``, ``use_checkpoint``.

ZeroMamba::

    from zeromamba.models import ZeroMamba, zsl_loss
    model = ZeroMamba("small", attributes=312, word_vectors=w2v)   # w2v: (312, 300) or None
    model = ZeroMamba("nano", attributes=16, word_vectors=None, embed_dim=8)
    pred = model(images)                                     # (b, A)
    loss = zsl_loss(pred, labels, seen_att, lambda_l1)       # labels index seen_att's rows
    groups = model.param_groups()   # {"backbone", "grl", "slp_mlp"}: official lr groups
    model.load_official(torch.load("CUB_bestGZSL.pth"))     # official checkpoint layout

Official recipe (train.py): SGD momentum 0.9, weight decay 1e-3; lr backbone (incl. SLP's V, W1,
W2) 1e-3, grl 1e-3, slp_mlp 1e-4; MultiStepLR [10, 20, 30, 40] x 0.5; 448 px; batch 32.
Scores for evaluation: ``pred @ class_att.T`` over the candidate classes.
"""

from .vmamba import CONFIGS, PIPELINES, SS2D, VSSM, Permute, VSSBlock, vssm
from .zeromamba import (
    SemanticProjection,
    ZeroMamba,
    native_to_official,
    official_to_native,
    zsl_loss,
)

__all__ = [
    "CONFIGS",
    "PIPELINES",
    "SS2D",
    "VSSM",
    "Permute",
    "SemanticProjection",
    "VSSBlock",
    "ZeroMamba",
    "native_to_official",
    "official_to_native",
    "vssm",
    "zsl_loss",
]
