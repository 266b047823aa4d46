from .atss import atss_assign
from .fcos import fcos_assign, level_ranges
from .musu import MutualBags, mutual_bags

__all__ = ["MutualBags", "atss_assign", "fcos_assign", "level_ranges", "mutual_bags"]
