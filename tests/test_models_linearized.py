"""The linearised forward: hand-computed Taylor expansion, linearity in tau, the tower wrapper."""

from __future__ import annotations

import torch
from torch import nn

from taskarith_core.models.fast_forward import tower_forward
from taskarith_core.models.linearized import LinearizedTower, is_linearized, linearized_forward


class TwoLayer(nn.Module):
    """y = W2 tanh(W1 x): small enough to write its Jacobian by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.tensor([[1.0, -0.5], [0.25, 2.0]]))
        self.w2 = nn.Parameter(torch.tensor([[0.5, 1.5]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.w1.T) @ self.w2.T


def test_linearized_forward_is_the_hand_computed_taylor_expansion():
    net = TwoLayer()
    theta0 = {n: p.detach().clone() for n, p in net.named_parameters()}
    d1 = torch.tensor([[0.1, 0.0], [0.0, -0.2]])
    d2 = torch.tensor([[0.3, -0.1]])
    theta = {"w1": theta0["w1"] + d1, "w2": theta0["w2"] + d2}
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
    h = x @ theta0["w1"].T
    # J . delta = dW2 tanh(W1 x) + W2 (sech^2(W1 x) * (dW1 x))
    expected = torch.tanh(h) @ theta0["w2"].T
    expected = (
        expected + torch.tanh(h) @ d2.T + ((1 - torch.tanh(h) ** 2) * (x @ d1.T)) @ theta0["w2"].T
    )
    got = linearized_forward(net, theta0, theta, x)
    assert torch.allclose(got, expected, atol=1e-6)
    # the non-linear model at theta differs: the expansion is not the tower
    with torch.no_grad():
        net.w1.copy_(theta["w1"])
        net.w2.copy_(theta["w2"])
    assert not torch.allclose(net(x), expected, atol=1e-3)


def test_task_vectors_add_linearly_in_the_linearised_model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3))
    theta0 = {n: p.detach().clone() for n, p in net.named_parameters()}
    tau1 = {n: torch.randn_like(p) * 0.3 for n, p in theta0.items()}
    tau2 = {n: torch.randn_like(p) * 0.3 for n, p in theta0.items()}
    x = torch.randn(5, 4)

    def f(a: float, b: float) -> torch.Tensor:
        theta = {n: theta0[n] + a * tau1[n] + b * tau2[n] for n in theta0}
        return linearized_forward(net, theta0, theta, x)

    f0 = f(0, 0)
    assert torch.allclose(f(2, -1) - f0, 2 * (f(1, 0) - f0) - (f(0, 1) - f0), atol=1e-5)


def test_tower_wrapper_keeps_names_and_trains():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    lin = LinearizedTower(net)
    assert list(lin.state_dict()) == list(net.state_dict())
    assert tower_forward(lin) is lin
    x = torch.randn(6, 4)
    assert torch.equal(lin(x), net(x))  # at theta0 the expansion is the tower
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)
    loss = lin(x).pow(2).mean()
    loss.backward()
    opt.step()
    theta = dict(net.named_parameters())
    expected = linearized_forward(net, lin.theta0, theta, x)
    assert torch.allclose(lin(x), expected) and lin(x).pow(2).mean() < loss
    assert is_linearized("l-lora") and is_linearized("linearized") and not is_linearized("lota")
