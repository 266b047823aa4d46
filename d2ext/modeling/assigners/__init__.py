from .atss import atss_assign
from .musu import MutualBags, mutual_bags

__all__ = ["MutualBags", "atss_assign", "mutual_bags"]
