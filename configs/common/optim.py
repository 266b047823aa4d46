# SGD as the ATSS-family references train: bias LR x2 and no weight decay on biases.
from detectron2.model_zoo import get_config

SGD = get_config("common/optim.py").SGD
SGD.lr = 0.01
SGD.params.base_lr = "${..lr}"
SGD.params.bias_lr_factor = 2.0
SGD.params.weight_decay_bias = 0.0
