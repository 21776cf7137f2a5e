import math

import pytest
import torch

from compstudy import distill
from compstudy.distill import DistillConfig, kd_loss


def _direct(s, t, labels, T, alpha, divergence):
    """Element by element, with explicit softmax sums."""
    B, L, V = s.shape
    ce = kl = 0.0
    n = 0
    for b in range(B):
        for i in range(L - 1):
            zs, zt = s[b, i].tolist(), t[b, i].tolist()
            lse = math.log(sum(math.exp(z) for z in zs))
            ce += lse - zs[labels[b, i + 1]]
            ps = [math.exp(z / T) for z in zs]
            pt = [math.exp(z / T) for z in zt]
            ps = [p / sum(ps) for p in ps]
            pt = [p / sum(pt) for p in pt]
            p, q = (pt, ps) if divergence == "forward" else (ps, pt)
            kl += sum(a * math.log(a / c) for a, c in zip(p, q))
            n += 1
    return alpha * ce / n + (1 - alpha) * T * T * kl / n


@pytest.mark.parametrize("divergence", ["forward", "reverse"])
@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (2.0, 0.0), (4.0, 0.3), (0.5, 1.0)])
def test_kd_loss_equals_direct_computation(divergence, T, alpha):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 4, 5, generator=g), torch.randn(2, 4, 5, generator=g)
    labels = torch.randint(0, 5, (2, 4), generator=g)
    got = kd_loss(s, t, labels, T, alpha, divergence)
    assert float(got) == pytest.approx(_direct(s, t, labels, T, alpha, divergence), rel=1e-5)


@pytest.mark.parametrize("divergence", ["forward", "reverse"])
def test_kl_part_is_zero_for_equal_logits(divergence):
    z = torch.randn(3, 6, 11)
    labels = torch.randint(0, 11, (3, 6))
    assert float(kd_loss(z, z.clone(), labels, 3.0, 0.0, divergence)) == pytest.approx(0.0, abs=1e-6)


def test_gradients_reach_the_student_only(tiny_baseline):
    teacher = tiny_baseline.model
    student = distill.make_student(teacher, DistillConfig())
    batch = torch.randint(0, 500, (2, 16))
    with torch.no_grad():
        t_logits = teacher(input_ids=batch).logits
    kd_loss(student(input_ids=batch).logits, t_logits, batch).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


@pytest.mark.parametrize("fixture", ["tiny_baseline", "tiny_llama"])
def test_student_shape_and_teacher_init(fixture, request):
    teacher = request.getfixturevalue(fixture).model
    student = distill.make_student(teacher, DistillConfig(n_layer=1))
    assert student.config.num_hidden_layers == 1
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    layer = "transformer.h" if fixture == "tiny_baseline" else "model.layers"
    copied = [k for k in s_sd if k.startswith(f"{layer}.0.")]
    assert copied and all(torch.equal(s_sd[k], t_sd[k]) for k in copied)  # layer 0 <- teacher layer 0
    assert all(torch.equal(s_sd[k], t_sd[k]) for k in s_sd if layer not in k)  # embeddings, final norm
    assert distill.teacher_layer_indices(6, 3) == [0, 2, 4] and distill.teacher_layer_indices(12, 6) == [0, 2, 4, 6, 8, 10]
    rand = distill.make_student(teacher, DistillConfig(n_layer=1, init="random"))
    assert not torch.equal(rand.state_dict()[copied[0]], t_sd[copied[0]]) or "bias" in copied[0]


def test_narrow_student(tiny_baseline):
    student = distill.make_student(tiny_baseline.model, DistillConfig(n_layer=1, n_embd=32, init="random"))
    assert student.config.n_embd == 32
    assert student(input_ids=torch.randint(0, 500, (1, 8))).logits.shape == (1, 8, 512)


def test_bad_parameters_fail_early(tiny_baseline):
    for bad, match in [(dict(temperature=0), "temperature must be > 0"), (dict(temperature=-1), "temperature"),
                       (dict(hard_label_weight=1.5), "hard_label_weight must be in \\[0, 1\\]"),
                       (dict(hard_label_weight=-0.1), "hard_label_weight"),
                       (dict(divergence="js"), "divergence must be one of"), (dict(init="copy"), "init must be one of"),
                       (dict(n_embd=32), "use init='random'")]:
        with pytest.raises(ValueError, match=match):
            DistillConfig(**bad)
    with pytest.raises(ValueError, match="n_layer=3 is deeper than its teacher \\(2 layers\\)"):
        distill.get_distilled(tiny_baseline, DistillConfig(n_layer=3), ["wikitext-2:valid"])


def test_distilled_student_is_cached_with_its_cost(tiny_baseline):
    cfg = DistillConfig(n_layer=1, tokens=4096, batch_size=8, seq_len=32)
    art = distill.get_distilled(tiny_baseline, cfg, ["tinyshakespeare:train"], device="cpu", progress=False)
    assert art.cost["seconds"] > 0 and art.history is not None and art.model.config.n_layer == 1
    again = distill.get_distilled(tiny_baseline, cfg, ["tinyshakespeare:train"], device="cpu", progress=False)
    assert again.key == art.key and again.cost == art.cost
