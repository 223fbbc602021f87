import pytest
import torch

from lightly_glare.models import UniAdapter, count_adapter_parameters


def test_zero_init_is_exact_identity_branch() -> None:
    adapter = UniAdapter(dim=32, bottleneck=8)
    x = torch.randn(2, 5, 32)
    assert torch.equal(adapter(x), torch.zeros_like(x))


def test_formula_matches_reference() -> None:
    adapter = UniAdapter(dim=32, bottleneck=8, scale=0.3, zero_init=False)
    x = torch.randn(2, 5, 32)
    normed = torch.nn.functional.layer_norm(
        x, (32,), adapter.norm.weight, adapter.norm.bias
    )
    hidden = torch.relu(normed @ adapter.down.weight.T + adapter.down.bias)
    expected = 0.3 * (hidden @ adapter.up.weight.T + adapter.up.bias)
    torch.testing.assert_close(adapter(x), expected)
    assert adapter(x).abs().max() > 0


@pytest.mark.parametrize(("dim", "bottleneck"), [(384, 64), (768, 64), (32, 8)])
def test_parameter_count_formula(dim: int, bottleneck: int) -> None:
    adapter = UniAdapter(dim, bottleneck)
    assert sum(p.numel() for p in adapter.parameters()) == count_adapter_parameters(
        dim, bottleneck
    )


def test_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="bottleneck"):
        UniAdapter(dim=32, bottleneck=0)
