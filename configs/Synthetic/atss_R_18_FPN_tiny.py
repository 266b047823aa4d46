# Lazy twin of atss_R_18_FPN_tiny.yaml: the demo model on the bundled synthetic dataset.

from ..common.data.synthetic import dataloader  # noqa: F401  (exported)
from ..common.models.atss import model
from ..common.optim import SGD as optimizer  # noqa: F401  (exported)
from ..common.tiny import shrink_to_tiny, tiny_schedule

shrink_to_tiny(model)

optimizer.lr = 0.02
lr_multiplier, train = tiny_schedule("./output/atss_R_18_FPN_tiny_lazy")
