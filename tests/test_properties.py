"""Properties: shapes, dtypes, chunking invariance, determinism, the model left as found."""


import pytest
import torch
from helpers import assert_close_rel, assert_unchanged, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nets import double, resnet_like, small_cnn, twin
from torch import nn

import gradaudit as ga
from gradaudit.methods.path import quadrature

INPUT_METHODS = [
    ga.Saliency(), ga.InputXGradient(), ga.IntegratedGradients(steps=5), ga.SmoothGrad(samples=3),
    ga.SmoothGrad(ga.IntegratedGradients(steps=3), samples=2, kind="var"),
    ga.GuidedBackprop(), ga.Deconvnet(), ga.GuidedGradCAM("layer1.conv2"), ga.Random(),
]
LAYER_METHODS = [
    ga.GradCAM("layer2"), ga.GradCAMPlusPlus("layer2"), ga.SmoothGradCAMPlusPlus("layer2", samples=3),
    ga.LayerSaliency("layer1", virtual="depthwise3x3", aggregate="max"), ga.NormGrad("stem"),
    ga.LinearApprox("layer2.conv1"), ga.Combine([ga.NormGrad("layer1"), ga.GradCAM("layer2")]),
]
SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def resnet_input(batch=3, dtype=torch.float64, size=8):
    torch.manual_seed(20)
    return torch.randn(batch, 3, size, size, dtype=dtype)


@pytest.mark.parametrize("method", INPUT_METHODS + LAYER_METHODS, ids=lambda m: type(m).__name__)
def test_shapes_device_dtype(method):
    model, x = double(resnet_like()), resnet_input()
    out = method(model, x)
    expected = x.shape if method in INPUT_METHODS else (len(x), *x.shape[2:])
    assert out.shape == expected and out.dtype == x.dtype and out.device == x.device
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("method", LAYER_METHODS[:-1], ids=lambda m: type(m).__name__)
def test_layer_methods_keep_layer_resolution_without_upsampling(method):
    model, x = double(resnet_like()), resnet_input(size=8)
    raw = type(method)(**{**method.__dict__, "upsample": False})(model, x)
    assert raw.shape == (3, 8, 8)  # this net keeps the spatial size; now check a pooled layer
    cnn, xc = double(small_cnn()), torch.randn(2, 1, 8, 8, dtype=torch.float64)
    assert ga.GradCAM("3", upsample=False)(cnn, xc).shape == (2, 4, 4)
    assert ga.GradCAM("3")(cnn, xc).shape == (2, 8, 8)


@pytest.mark.parametrize("method", INPUT_METHODS + LAYER_METHODS, ids=lambda m: type(m).__name__)
def test_in_place_model_gives_the_same_maps_as_its_out_of_place_twin(method):
    model, x = double(resnet_like()), resnet_input()
    assert_close_rel(method(model, x, 1), method(double(twin(model)), x, 1), 1e-10)


@pytest.mark.parametrize("method", [ga.Saliency(), ga.IntegratedGradients(steps=7), ga.SmoothGrad(samples=5),
                                    ga.SmoothGradCAMPlusPlus("layer2", samples=4), ga.GradCAM("layer1"),
                                    ga.Combine([ga.NormGrad("layer1"), ga.NormGrad("layer2")])],
                         ids=lambda m: type(m).__name__)
@SETTINGS
@given(batch_size=st.integers(1, 40))
def test_any_batch_size_gives_the_same_result(method, batch_size):
    model, x = double(resnet_like()), resnet_input(batch=4)
    assert_close_rel(method(model, x, batch_size=batch_size), method(model, x), 1e-10)


@SETTINGS
@given(dtype=st.sampled_from([torch.float32, torch.float64]), batch=st.integers(1, 4),
       size=st.sampled_from([4, 6, 8]))
def test_float32_and_float64_agree(dtype, batch, size):
    model, x = resnet_like(), resnet_input(batch, torch.float64, size)
    model = model.to(dtype)
    out = ga.IntegratedGradients(steps=6)(model, x.to(dtype), 0)
    ref = ga.IntegratedGradients(steps=6)(double(model), x, 0)
    assert out.dtype == dtype and out.shape == x.shape
    assert_close_rel(out, ref, 1e-4 if dtype == torch.float32 else 1e-10)


def _exact_linear(dtype):
    """Flatten + Linear(16, 2) with weights in multiples of 1/16 and no bias: exact in bfloat16, so its
    input gradient for class 0 is exactly w = (0, 1/16, ..., 15/16) whatever the dtype."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.arange(32).view(2, 16) / 16)
        model[1].bias.zero_()
    return model.to(dtype).eval()


def _added_one_at_a_time(terms, dtype):
    """The sum of ``terms`` in an accumulator of ``dtype``, rounded after every addition."""
    total = torch.zeros_like(terms[0], dtype=dtype)
    for term in terms:
        total = total + term.to(dtype)
    return total


def test_bfloat16_inputs_work_and_accumulate_in_float32():
    model, x = small_cnn().to(torch.bfloat16), torch.randn(2, 1, 8, 8).to(torch.bfloat16)
    out = ga.SmoothGrad(samples=4)(model, x, 0)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()

    # Many samples / steps, each pass one sample of the 3 examples (batch_size=3, as for a model too big
    # for more rows): every per-sample contribution is added to the accumulator on its own. On a linear
    # model each contribution is exact in bfloat16 (SmoothGrad: w; IG step k: w * weight_k rounded), so the
    # only error left is how they are summed. A bfloat16 sum (8 significant bits) stalls once the total
    # is large next to a term; a float32 sum does not.
    torch.manual_seed(0)
    x = torch.randn(3, 1, 4, 4).to(torch.bfloat16)
    w = _exact_linear(torch.bfloat16)[1].weight[0].view(1, 1, 4, 4)
    samples, steps, rel = 100, 128, 5e-3
    weights = torch.as_tensor(quadrature("gausslegendre", steps)[1], dtype=torch.bfloat16)
    cases = [(ga.SmoothGrad(samples=samples, noise=0.1), [w] * samples, lambda total: total / samples),
             (ga.IntegratedGradients(steps=steps), [w * k for k in weights], lambda total: x * total)]
    for method, terms, finish in cases:
        reference = method(_exact_linear(torch.float64), x.double(), 0)         # float64 throughout
        out = method(_exact_linear(torch.bfloat16), x, 0, batch_size=len(x))
        assert out.dtype == torch.bfloat16
        assert_close_rel(out, reference, rel)
        # The tolerance separates the two accumulators: the same terms summed in float32 pass it,
        # summed in bfloat16 they miss it (SmoothGrad ~8% off, IG ~2.5%; float32: <= 0.2%, the output's rounding).
        assert_close_rel(finish(_added_one_at_a_time(terms, torch.float32)).expand_as(x), reference, rel)
        with pytest.raises(AssertionError, match="max abs error"):
            assert_close_rel(finish(_added_one_at_a_time(terms, torch.bfloat16)).expand_as(x), reference, rel)


# layer1, not layer2: right before pooling + linear the gradient is the same for every input.
@pytest.mark.parametrize("method", [ga.SmoothGrad(samples=4), ga.Random(),
                                    ga.SmoothGradCAMPlusPlus("layer1", samples=3)],
                         ids=lambda m: type(m).__name__)
def test_same_seed_same_result_other_seed_other_result(method):
    model, x = double(resnet_like()), resnet_input()
    first, again = method(model, x), method(model, x)
    other = type(method)(**{**method.__dict__, "seed": 99})(model, x)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


@pytest.mark.parametrize("method", INPUT_METHODS + LAYER_METHODS, ids=lambda m: type(m).__name__)
def test_model_left_exactly_as_found_after_success_and_after_error(method):
    model = resnet_like().double().train()
    model.layer1.conv1.weight.requires_grad_(False)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    model.layer2.bn1.eval()
    before = snapshot(model)
    with pytest.warns(UserWarning, match="model is in train mode; gradaudit evaluates it in eval mode"):
        method(model, resnet_input())
    assert_unchanged(model, before)
    if isinstance(method, ga.Random):
        return  # it never evaluates the model, so it has no target to reject
    with pytest.raises(ValueError, match="out of range"), pytest.warns(UserWarning, match="train mode"):
        method(model, resnet_input(), target=17)
    assert_unchanged(model, before)


class CountingWrapper(torch.nn.Module):
    """Records the batch size of every forward call of the wrapped model."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.sizes = inner, []

    def forward(self, x):
        self.sizes.append(len(x))
        return self.inner(x)


def test_automatic_chunks_stay_under_the_memory_budget(monkeypatch):
    from gradaudit.engine.chunks import auto_rows, bytes_per_row

    model, x = CountingWrapper(double(resnet_like())).eval(), resnet_input(batch=4)
    per_row = bytes_per_row(model, x)
    assert bytes_per_row(model, resnet_input(batch=1, size=16)) > 3 * per_row  # grows with the image
    monkeypatch.setattr(ga.config, "memory_budget", 5 * per_row)
    assert auto_rows(model, x) == 5
    model.sizes.clear()
    limited = ga.IntegratedGradients(steps=9)(model, x, 0)
    assert max(model.sizes) <= 5 and sum(model.sizes) >= 4 * 9
    monkeypatch.setattr(ga.config, "memory_budget", 1)
    assert auto_rows(model, x) == 1
    monkeypatch.setattr(ga.config, "memory_budget", 10**15)
    assert auto_rows(model, x) == min(ga.config.max_chunk, max(ga.config.min_chunk,
                                                               ga.config.cpu_working_set // per_row))
    monkeypatch.setattr(ga.config, "cpu_working_set", 10**15)
    assert auto_rows(model, x) == ga.config.max_chunk
    assert_close_rel(ga.IntegratedGradients(steps=9)(model, x, 0), limited, 1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", INPUT_METHODS + LAYER_METHODS, ids=lambda m: type(m).__name__)
def test_cuda_results_match_cpu_and_stay_on_the_device(method):
    model, x = double(resnet_like()), resnet_input()
    on_gpu = method(double(resnet_like()).cuda(), x.cuda(), 1)
    assert on_gpu.device.type == "cuda"
    assert_close_rel(on_gpu.cpu(), method(model, x, 1), 1e-8)


def test_passes_without_gradients_are_sized_by_one_layers_activations():
    from gradaudit.engine.chunks import auto_rows, bytes_per_row, forward_bytes_per_row

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(6 * 10 * 10, 3)).eval()
    x = torch.rand(4, 1, 10, 10)
    assert forward_bytes_per_row(model, x) == 2 * 6 * 10 * 10 * 4          # the ReLU's input and output, float32
    assert all(not m._forward_hooks for m in model.modules())              # its hooks lived for one forward
    assert bytes_per_row(model, x) > forward_bytes_per_row(model, x)        # autograd keeps every layer's
    working_set = ga.config.cpu_working_set
    assert auto_rows(model, x, gradients=False) == min(ga.config.max_chunk, working_set // (2 * 6 * 10 * 10 * 4))
