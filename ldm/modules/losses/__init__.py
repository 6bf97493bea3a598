"""First-stage training losses: `LPIPSWithDiscriminator` (KL) and `VQLPIPSWithDiscriminator` (VQ)."""
from ldm.modules.losses.contperceptual import LPIPSWithDiscriminator
from ldm.modules.losses.vqperceptual import VQLPIPSWithDiscriminator

__all__ = ["LPIPSWithDiscriminator", "VQLPIPSWithDiscriminator"]
