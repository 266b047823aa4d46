from .mmdet import convert_mmdet_checkpoint, is_mmdet_checkpoint
from .safe_resume import SafeResumeCheckpointer
from .torchvision import convert_torchvision_resnet, is_torchvision_resnet


class Checkpointer(SafeResumeCheckpointer):
    """
    d2ext's checkpointer: Detectron2's DetectionCheckpointer with the guards of
    :class:`SafeResumeCheckpointer` (resume only inside save_dir, unreadable files named) that
    also loads, converting on load as Detectron2 does Caffe2 ``.pkl`` files:

    - mmdetection 2.x/3.x detector checkpoints (``state_dict`` with ``backbone.``, ``neck.``,
      ``bbox_head.`` ... keys) into the matching configs/MMDet/ model
      (d2ext/checkpoint/mmdet.py);
    - torchvision ImageNet ResNet ``.pth`` files into the model's ResNet.

    Names are converted exactly (no name-matching heuristics); a key of a converted module the
    file cannot fill is an error naming it, a file key no table maps is logged by name.
    """

    def _load_file(self, filename):
        loaded = super()._load_file(filename)
        content = loaded["model"]
        if not isinstance(content, dict):
            return loaded
        target = self.model.state_dict()
        if is_mmdet_checkpoint(content):
            model = convert_mmdet_checkpoint(content, target, source_name=filename)
            return {"model": model, "__author__": "mmdetection", "matching_heuristics": False}
        if is_torchvision_resnet(content):
            model = convert_torchvision_resnet(content, target, source_name=filename)
            return {"model": model, "__author__": "torchvision", "matching_heuristics": False}
        return loaded
