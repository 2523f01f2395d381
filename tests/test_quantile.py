import pytest
import torch

from taskarith_core.errors import InputError
from taskarith_core.quantile import linear_quantile


@pytest.mark.parametrize("q", [0.0, 0.1, 0.25, 0.5, 0.7, 0.8, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 1000, 12345])
def test_matches_torch_quantile_over_all_elements(q, n):
    x = torch.randn(n, generator=torch.Generator().manual_seed(n))
    assert torch.equal(linear_quantile(x, q), torch.quantile(x, q, interpolation="linear"))


@pytest.mark.parametrize("q", [0.0, 0.3, 0.5, 0.7, 0.8, 1.0])
@pytest.mark.parametrize("n_tasks", [2, 3, 6, 8])
def test_matches_torch_quantile_along_task_axis(q, n_tasks):
    x = torch.rand(n_tasks, 5, 7, generator=torch.Generator().manual_seed(n_tasks))
    expected = torch.quantile(x, q, dim=0, interpolation="linear")
    assert torch.equal(linear_quantile(x, q, dim=0), expected)


def test_hand_computed_sta_eq16():
    # N = 4 sorted values 1, 2, 4, 8; p = 0.5 -> L_p = 1 + 3 * 0.5 = 2.5 -> 2 + (4 - 2) * 0.5 = 3
    assert linear_quantile(torch.tensor([8.0, 1.0, 4.0, 2.0]), 0.5).item() == 3.0
    assert linear_quantile(torch.tensor([8.0, 1.0, 4.0, 2.0]), 1.0).item() == 8.0
    assert linear_quantile(torch.tensor([8.0, 1.0, 4.0, 2.0]), 0.0).item() == 1.0


@pytest.mark.parametrize("q", [0.0, 0.1, 0.5, 0.7, 0.9, 1.0])
@pytest.mark.parametrize("shape,dim", [((5000,), None), ((6, 300), 0), ((4, 7, 9), 1)])
def test_selection_path_agrees_with_torch(q, shape, dim):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    expected = torch.quantile(x, q, dim=dim, interpolation="linear")
    got = linear_quantile(x, q, dim=dim, limit=2)  # force the kthvalue route
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=5e-7)


@pytest.mark.parametrize("dtype", [torch.float32])
def test_works_beyond_torch_quantile_limit(dtype):
    n = (1 << 24) + 4  # older torch.quantile refuses inputs this large; we select instead
    x = torch.randn(n, generator=torch.Generator().manual_seed(0)).to(dtype)
    ordered = x.sort().values
    for q in (0.25, 0.9):
        rank = q * (n - 1)
        below = int(rank)
        expected = torch.lerp(
            ordered[below], ordered[below + 1], torch.tensor(rank - below, dtype=dtype)
        )
        assert linear_quantile(x, q).item() == expected.item()


@pytest.mark.parametrize("q", [-0.1, 1.5, float("nan")])
def test_rejects_q_outside_unit_interval(q):
    with pytest.raises(InputError, match="outside"):
        linear_quantile(torch.ones(3), q)
