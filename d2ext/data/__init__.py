from .synthetic import prepare_split, register_synthetic

register_synthetic()

__all__ = ["prepare_split", "register_synthetic"]
