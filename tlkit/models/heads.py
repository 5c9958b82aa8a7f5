"""Classification heads that sit on a backbone's pooled features."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from tlkit.errors import ConfigError


@dataclass(frozen=True)
class HeadSpec:
    """What a head looks like; stored in ``model.json`` so the head can be rebuilt exactly."""

    kind: str  # "linear" or "mlp"
    in_dim: int
    num_classes: int
    hidden_dim: int = 512
    dropout: float = 0.0
    norm: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def make_head(spec: HeadSpec) -> nn.Module:
    """A linear head (optionally with input BatchNorm and dropout) or a one-hidden-layer MLP.

    >>> make_head(HeadSpec("mlp", 32, 3, hidden_dim=16, dropout=0.1, norm=True))(__import__("torch").zeros(4, 32)).shape
    torch.Size([4, 3])
    """
    if spec.num_classes < 2:
        raise ConfigError(f"a head needs at least 2 classes, got {spec.num_classes}")
    layers: list[nn.Module] = []
    if spec.kind == "linear":
        if spec.norm:
            layers.append(nn.BatchNorm1d(spec.in_dim))
        if spec.dropout > 0:
            layers.append(nn.Dropout(spec.dropout))
        layers.append(nn.Linear(spec.in_dim, spec.num_classes))
    elif spec.kind == "mlp":
        layers.append(nn.Linear(spec.in_dim, spec.hidden_dim))
        if spec.norm:
            layers.append(nn.BatchNorm1d(spec.hidden_dim))
        layers.append(nn.GELU())
        if spec.dropout > 0:
            layers.append(nn.Dropout(spec.dropout))
        layers.append(nn.Linear(spec.hidden_dim, spec.num_classes))
    else:
        raise ConfigError(f"model.head must be 'linear' or 'mlp', got {spec.kind!r}")
    return nn.Sequential(*layers)
