"""MLP heads of MoCo v3 (paper §5 "MLP heads"; docs/method.md §1.3).

Every Linear is bias-free; each hidden Linear is followed by BN (affine) and ReLU; the last Linear is
followed by BN without affine parameters (SimCLR's head "with gamma removed"), except for the ResNet
predictor, which ends on the Linear. Heads keep PyTorch's default Linear init, as in the official code.
"""

from __future__ import annotations

from torch import nn


def build_mlp(num_layers: int, in_dim: int, hidden_dim: int, out_dim: int, last_bn: bool = True,
              use_bn: bool = True) -> nn.Sequential:
    """in_dim -> [hidden_dim, BN, ReLU] x (num_layers - 1) -> out_dim [-> BN(affine=False)].

    use_bn=False is the paper's "no BN in the heads" ablation (74.4 vs 76.5).
    """
    layers: list[nn.Module] = []
    dim = in_dim
    for i in range(num_layers):
        last = i == num_layers - 1
        width = out_dim if last else hidden_dim
        layers.append(nn.Linear(dim, width, bias=False))
        if not last:
            if use_bn:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU(inplace=True))
        elif last_bn and use_bn:
            layers.append(nn.BatchNorm1d(width, affine=False))
        dim = width
    return nn.Sequential(*layers)
