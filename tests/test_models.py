"""The VMamba v2 backbone and the ZeroMamba head (docs/design.md §7): sizes, checkpoint layouts, the
SS2D math against an independent VMamba-style implementation, backend and pipeline equivalence,
torch.compile, checkpointing, and one training step."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F

from tests.inputs import DEVICES, backends_on, rel_err
from zeromamba import backends, reference
from zeromamba.models import SS2D, VSSM, VSSBlock, ZeroMamba, native_to_official, vssm, zsl_loss

TINY, SMALL, BASE = 30_249_064, 50_147_752, 88_557_800


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The models' small convolutions are dominated by thread start-up on a shared 2-core box.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def nano(seed: int = 0, **kw) -> VSSM:
    torch.manual_seed(seed)
    return vssm("nano", **kw)


# --------------------------------------------------------------------------- sizes and layouts


def official_vssm_layout(dims, depths, ssm_ratio, d_state=1, num_classes=1000) -> dict:
    """Parameter names and shapes of VMamba's VSSM (v05_noz, patch-embed v2, downsample v3,
    norm ln2d), written out from VMamba's classification/models/vmamba.py."""
    d0 = dims[0]
    shapes = {
        "patch_embed.0.weight": (d0 // 2, 3, 3, 3),
        "patch_embed.0.bias": (d0 // 2,),
        "patch_embed.2.weight": (d0 // 2,),
        "patch_embed.2.bias": (d0 // 2,),
        "patch_embed.5.weight": (d0, d0 // 2, 3, 3),
        "patch_embed.5.bias": (d0,),
        "patch_embed.7.weight": (d0,),
        "patch_embed.7.bias": (d0,),
    }
    for i, depth in enumerate(depths):
        dim = dims[i]
        inner, rank = int(ssm_ratio * dim), math.ceil(dim / 16)
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            shapes.update(
                {
                    p + "norm.weight": (dim,),
                    p + "norm.bias": (dim,),
                    p + "op.x_proj_weight": (4, rank + 2 * d_state, inner),
                    p + "op.dt_projs_weight": (4, inner, rank),
                    p + "op.dt_projs_bias": (4, inner),
                    p + "op.A_logs": (4 * inner, d_state),
                    p + "op.Ds": (4 * inner,),
                    p + "op.in_proj.weight": (inner, dim),
                    p + "op.conv2d.weight": (inner, 1, 3, 3),
                    p + "op.out_norm.weight": (inner,),
                    p + "op.out_norm.bias": (inner,),
                    p + "op.out_proj.weight": (dim, inner),
                    p + "norm2.weight": (dim,),
                    p + "norm2.bias": (dim,),
                    p + "mlp.fc1.weight": (4 * dim, dim),
                    p + "mlp.fc1.bias": (4 * dim,),
                    p + "mlp.fc2.weight": (dim, 4 * dim),
                    p + "mlp.fc2.bias": (dim,),
                }
            )
        if i < len(depths) - 1:
            p = f"layers.{i}.downsample."
            shapes.update(
                {
                    p + "1.weight": (dims[i + 1], dim, 3, 3),
                    p + "1.bias": (dims[i + 1],),
                    p + "3.weight": (dims[i + 1],),
                    p + "3.bias": (dims[i + 1],),
                }
            )
    shapes.update(
        {
            "classifier.norm.weight": (dims[-1],),
            "classifier.norm.bias": (dims[-1],),
            "classifier.head.weight": (num_classes, dims[-1]),
            "classifier.head.bias": (num_classes,),
        }
    )
    return shapes


def official_zeromamba_layout(backbone: dict, attributes: int, features: int) -> dict:
    """The official ZeroMamba checkpoint (train.py's ModuleDict) around a backbone layout."""
    shapes = {"VisionMamba." + k: v for k, v in backbone.items()}
    shapes.update(
        {
            "VisionMamba.classifier2.V": (attributes, 300),
            "VisionMamba.classifier2.W1": (300, features),
            "VisionMamba.classifier2.W2": (300, features),
            "clf_head.weight": (attributes, 1000),
            "clf_head2.0.weight": (512, attributes),
            "clf_head2.2.weight": (attributes, 512),
        }
    )
    return shapes


def shapes_of(module: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize(
    ("name", "count", "dims", "depths", "ratio"),
    [
        ("tiny", TINY, (96, 192, 384, 768), (2, 2, 8, 2), 1.0),
        ("small", SMALL, (96, 192, 384, 768), (2, 2, 15, 2), 2.0),
        ("base", BASE, (128, 256, 512, 1024), (2, 2, 15, 2), 2.0),
    ],
)
def test_configs_match_vmamba(name, count, dims, depths, ratio):
    with torch.device("meta"):
        model = vssm(name)
    assert sum(p.numel() for p in model.parameters()) == count
    layout = official_vssm_layout(dims, depths, ratio)
    assert shapes_of(model) == layout
    assert sum(math.prod(s) for s in layout.values()) == count


def test_official_vssm_checkpoint_loads_strict():
    model = nano()
    layout = official_vssm_layout(model.dims, (1, 1, 2, 1), 1.0)
    g = torch.Generator().manual_seed(1)
    ckpt = {k: torch.randn(s, generator=g) for k, s in layout.items()}
    model.load_state_dict(ckpt, strict=True)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ckpt[k], rtol=0, atol=0)


def test_official_zeromamba_checkpoint_loads_strict():
    model = ZeroMamba("nano", attributes=12)
    layout = official_zeromamba_layout(
        official_vssm_layout(model.backbone.dims, (1, 1, 2, 1), 1.0), 12, 256
    )
    g = torch.Generator().manual_seed(2)
    ckpt = {k: torch.randn(s, generator=g) for k, s in layout.items()}
    model.load_official(ckpt, strict=True)
    assert set(native_to_official(model.state_dict())) == set(layout)
    torch.testing.assert_close(model.slp.V, ckpt["VisionMamba.classifier2.V"])
    torch.testing.assert_close(model.slp_mlp[2].weight, ckpt["clf_head2.2.weight"])
    with pytest.raises(ValueError, match="grl_bias=True"):
        model.load_official({**ckpt, "clf_head.bias": torch.zeros(12)})
    ZeroMamba("nano", attributes=12, grl_bias=True).load_official(
        {**ckpt, "clf_head.bias": torch.zeros(12)}
    )


def test_state_dict_round_trip():
    model = ZeroMamba("nano", attributes=8, embed_dim=6).eval()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(123)
    other = ZeroMamba("nano", attributes=8, embed_dim=6).eval()
    other.load_state_dict(torch.load(buf), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)


def test_init_follows_vmamba():
    op = nano().layers[0].blocks[0].op
    assert torch.equal(op.A_logs, torch.zeros_like(op.A_logs))  # d_state 1: A = -1
    assert torch.equal(op.Ds, torch.ones_like(op.Ds))
    dt = F.softplus(op.dt_projs_bias)
    assert 1e-3 * 0.999 <= dt.min() and dt.max() <= 0.1 * 1.001
    assert op.dt_projs_weight.abs().max() <= op.dt_rank**-0.5
    names = nano().no_weight_decay()
    assert names and all(n.endswith(("A_logs", "Ds")) for n in names)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown VSSM config"):
        vssm("huge")
    with pytest.raises(ValueError, match="pipeline"):
        nano().set_pipeline("fast")
    with pytest.raises(ValueError, match="word_vectors"):
        ZeroMamba("nano", attributes=5, word_vectors=torch.randn(4, 300))


# --------------------------------------------------------------------------- the SS2D math


def vmamba_ss2d(op: SS2D, x: torch.Tensor) -> torch.Tensor:
    """VMamba's v05_noz forward written out: explicit flips and transposes for the four scan
    orders, one reference selective_scan, the merge, LayerNorm over channels, out_proj."""
    x = F.silu(op.conv2d(op.in_proj(x)))
    b, d, H, W = x.shape
    L = H * W
    hw, wh = x.flatten(2), x.transpose(2, 3).flatten(2)
    xs = torch.stack([hw, wh, hw.flip(-1), wh.flip(-1)], dim=1)  # (b, 4, d, L)
    x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, op.x_proj_weight)
    dts, Bs, Cs = torch.split(x_dbl, [op.dt_rank, op.d_state, op.d_state], dim=2)
    dts = torch.einsum("bkrl,kdr->bkdl", dts, op.dt_projs_weight)
    ys = reference.selective_scan(
        xs.reshape(b, 4 * d, L),
        dts.reshape(b, 4 * d, L),
        -torch.exp(op.A_logs),
        Bs,
        Cs,
        op.Ds,
        op.dt_projs_bias.flatten(),
        True,
    ).view(b, 4, d, L)
    y_rows = ys[:, 0] + ys[:, 2].flip(-1)
    y_cols = (ys[:, 1] + ys[:, 3].flip(-1)).view(b, d, W, H).transpose(2, 3).reshape(b, d, L)
    y = (y_rows + y_cols).view(b, d, H, W)
    y = F.layer_norm(y.permute(0, 2, 3, 1), (d,), op.out_norm.weight, op.out_norm.bias)
    return op.out_proj(y.permute(0, 3, 1, 2))


@pytest.mark.parametrize("pipeline", ["fused", "unfused"])
def test_ss2d_matches_vmamba_math(pipeline):
    torch.manual_seed(0)
    op = SS2D(24, d_state=2, ssm_ratio=1.5, pipeline=pipeline, backend="reference").double()
    with torch.no_grad():  # move the parameters off their symmetric init
        op.A_logs.normal_(0, 0.5)
        op.Ds.normal_()
    x = torch.randn(2, 24, 5, 7, dtype=torch.float64)
    assert rel_err(op(x), vmamba_ss2d(op, x)) < 1e-12


# --------------------------------------------------------------------------- execution


@pytest.mark.parametrize("size", [(32, 32), (32, 64)])
def test_forward_backward_shapes(size):
    model = ZeroMamba("nano", attributes=10, embed_dim=8)
    x = torch.randn(2, 3, *size, requires_grad=True)
    x_pre, logits = model.backbone(x)
    assert x_pre.shape == (2, 256, size[0] // 32, size[1] // 32)
    assert logits.shape == (2, 1000)
    pred = model(x)
    assert pred.shape == (2, 10)
    pred.square().sum().backward()
    assert x.grad.shape == x.shape and torch.isfinite(x.grad).all()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def _grads(module, x):
    x = x.detach().requires_grad_(True)
    out = module(x)
    out = out[1] if isinstance(out, tuple) else out
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    grads = [x.grad] + [p.grad for p in module.parameters()]
    module.zero_grad()
    return out.detach(), grads


def _assert_same(a, b, tol):
    out_a, grads_a = a
    out_b, grads_b = b
    assert rel_err(out_a, out_b) < tol
    for ga, gb in zip(grads_a, grads_b, strict=True):
        assert rel_err(ga, gb) < tol


def _dtype_for(device: str, backend: str) -> torch.dtype:
    # float64 runs on the CPU kernels and the reference (not on GPUs, nor Triton's interpreter)
    return torch.float64 if device == "cpu" and backend != "triton" else torch.float32


def _tol(dtype: torch.dtype) -> float:
    return 1e-9 if dtype == torch.float64 else 1e-4


ALL_BACKENDS = sorted({b for d in DEVICES for b in backends_on(d)})
# a whole model through the Triton interpreter is too slow for CI; its blocks are tested
MODEL_BACKENDS = [b for b in ALL_BACKENDS if b != "triton" or torch.cuda.is_available()]


def _check_backend(device, backend, net, input_shape, set_backend) -> None:
    """``net``'s output and gradients on ``backend`` match the reference backend's."""
    if backend not in backends_on(device):
        pytest.skip(f"{backend} does not run on {device}")
    dtype = _dtype_for(device, backend)
    net = net.to(device, dtype)
    x = torch.randn(*input_shape, device=device, dtype=dtype)
    set_backend(net, "reference")
    ref = _grads(net, x)
    set_backend(net, backend)
    _assert_same(_grads(net, x), ref, _tol(dtype))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_block_backend_matches_reference(device, backend):
    def set_backend(block, name):
        block.op.backend = name

    torch.manual_seed(0)
    block = VSSBlock(16, d_state=1, ssm_ratio=2.0)
    _check_backend(device, backend, block, (2, 16, 5, 3), set_backend)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", MODEL_BACKENDS)
def test_model_backend_matches_reference(device, backend):
    _check_backend(device, backend, nano(), (2, 3, 64, 32), VSSM.set_backend)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_fused_matches_unfused(device, memory_format):
    dtype = _dtype_for(device, backends.resolve(None, torch.device(device)))
    model = nano().to(device, dtype, memory_format=memory_format)
    x = torch.randn(2, 3, 32, 64, device=device, dtype=dtype).to(memory_format=memory_format)
    fused = _grads(model, x)
    model.set_pipeline("unfused")
    _assert_same(_grads(model, x), fused, _tol(dtype))


def test_gradient_checkpointing_is_transparent():
    model = nano().double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    plain = _grads(model, x)
    model.set_checkpointing(True)
    _assert_same(_grads(model, x), plain, 1e-12)


@pytest.mark.parametrize("pipeline", ["fused", "unfused"])
def test_block_compiles_without_graph_breaks(pipeline):
    torch.manual_seed(0)
    block = VSSBlock(16, d_state=1, ssm_ratio=1.0, pipeline=pipeline)
    x = torch.randn(2, 16, 5, 6)
    eager = _grads(block, x)
    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    _assert_same(_grads(compiled, x), eager, 1e-5)


def test_autocast_bfloat16_runs():
    model = ZeroMamba("nano", attributes=6, embed_dim=4)
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = model(x)
    assert torch.isfinite(pred).all()
    assert rel_err(pred, model(x)) < 0.05


# --------------------------------------------------------------------------- the ZeroMamba head


def test_slp_is_the_official_attention_pooling():
    torch.manual_seed(0)
    w2v = torch.randn(7, 20, dtype=torch.float64)
    model = ZeroMamba("nano", attributes=7, word_vectors=w2v).double()
    slp = model.slp
    torch.testing.assert_close(slp.V, F.normalize(w2v, dim=1))
    x = torch.randn(3, 256, 2, 3, dtype=torch.float64)
    # train.py's Classifier_custom.forward
    vv, av = F.normalize(slp.V, dim=1), F.normalize(x.reshape(3, 256, 6), dim=1)
    att = torch.softmax(torch.einsum("iv,vf,bfr->bir", vv, slp.W1, av), dim=-1)
    f_p = torch.einsum("bir,bfr->bif", att, av)
    expected = torch.einsum("iv,vf,bif->bi", vv, slp.W2, f_p)
    assert rel_err(slp(x), expected) < 1e-12


def test_zeromamba_forward_is_sef_of_grl_and_slp():
    model = ZeroMamba("nano", attributes=9, embed_dim=5).double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    x_pre, logits = model.backbone(x)
    local = model.slp_mlp(model.slp(x_pre))
    expected = model.grl(logits) + local / local.norm(dim=-1, keepdim=True)
    assert rel_err(model(x), expected) < 1e-12


def test_zsl_loss_is_the_official_loss():
    torch.manual_seed(0)
    pred, att = torch.randn(5, 8), torch.rand(4, 8)
    labels = torch.tensor([0, 3, 1, 1, 2])
    expected = F.cross_entropy(pred @ att.T, labels) + 0.3 * (pred - att[labels]).abs().mean()
    torch.testing.assert_close(zsl_loss(pred, labels, att, 0.3), expected)


def test_param_groups_cover_the_model_once():
    model = ZeroMamba("nano", attributes=5, embed_dim=4)
    groups = model.param_groups()
    ids = [id(p) for ps in groups.values() for p in ps]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    assert {id(p) for p in groups["backbone"]} >= {id(model.slp.V), id(model.slp.W1)}


def test_one_sgd_step_lowers_the_loss():
    torch.manual_seed(0)
    model = ZeroMamba("nano", attributes=16, embed_dim=8)
    att = F.normalize(torch.rand(5, 16), dim=1)
    x, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    before = zsl_loss(model(x), labels, att, 1.0)
    before.backward()
    opt.step()
    with torch.no_grad():
        after = zsl_loss(model(x), labels, att, 1.0)
    assert after < before
