# Importing LibraRPN registers it in PROPOSAL_GENERATOR_REGISTRY.
from .libra_rpn import LibraRPN

__all__ = ["LibraRPN"]
