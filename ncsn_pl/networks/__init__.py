"""Score networks of NCSN (v1) and NCSNv2, plus a toy MLP: plain ``nn.Module``s with ``forward(x, levels)``."""

from ncsn_pl.networks.base import NoScoreNetwork, ScoreNetwork, upgrade_network_config
from ncsn_pl.networks.layers import ConditionalInstanceNorm2dPlus, InstanceNorm2dPlus, instance_norm_plus
from ncsn_pl.networks.mlp import ToyScoreMLP
from ncsn_pl.networks.ncsn import NCSN, RefineNetDilated
from ncsn_pl.networks.ncsnv2 import NCSNv2, NCSNv2Deeper, NCSNv2Deepest, SigmaScaledRefineNet
from ncsn_pl.networks.official import extract_state_dict, load_official_checkpoint

__all__ = [
    "NCSN",
    "NCSNv2",
    "NCSNv2Deeper",
    "NCSNv2Deepest",
    "NoScoreNetwork",
    "ScoreNetwork",
    "ToyScoreMLP",
    "RefineNetDilated",
    "SigmaScaledRefineNet",
    "ConditionalInstanceNorm2dPlus",
    "InstanceNorm2dPlus",
    "instance_norm_plus",
    "load_official_checkpoint",
    "extract_state_dict",
    "upgrade_network_config",
]
