"""Running parts of a model in float32 inside torch.autocast: label assignment, box decoding for
the losses, the losses and NMS stay float32 while the backbone and heads run in bfloat16 / float16
(mixed-precision training, d2ext.engine.amp)."""

import contextlib
import functools
import inspect

import torch

AUTOCAST_DEVICES = ("cpu", "cuda")


def autocast_enabled() -> bool:
    """Whether autocast is on for any device (float32_region's wrapper does nothing otherwise)."""
    return any(torch.is_autocast_enabled(d) for d in AUTOCAST_DEVICES)


@contextlib.contextmanager
def autocast_off():
    """Disables autocast on every device where it is enabled (a no-op outside autocast)."""
    with contextlib.ExitStack() as stack:
        for device in AUTOCAST_DEVICES:
            if torch.is_autocast_enabled(device):
                stack.enter_context(torch.autocast(device_type=device, enabled=False))
        yield


def to_float32(x):
    """x with every half / bfloat16 tensor in it (nested in lists, tuples, dicts) cast to float32."""
    if isinstance(x, torch.Tensor):
        return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    if isinstance(x, (list, tuple)):
        return type(x)(to_float32(v) for v in x)
    if isinstance(x, dict):
        return {k: to_float32(v) for k, v in x.items()}
    return x


def float32_region(*arg_names: str):
    """
    Decorator: the function runs with autocast off, and the tensors of the arguments named
    ``arg_names`` (the head's predictions; not the features, whose copies would cost memory and
    which the decorated code only reads shapes of) are cast to float32 first.

    TorchScript cannot compile the wrapper (it would compile the wrapped source with this module's
    names): a method on a scripted path (e.g. ATSSBase.forward_inference) is left undecorated and
    hands over to a decorated twin inside ``if not torch.jit.is_scripting():``, a branch the
    compiler skips, when ``autocast_enabled()``.
    """

    def decorate(fn):
        signature = inspect.signature(fn)
        missing = [n for n in arg_names if n not in signature.parameters]
        if missing:
            raise TypeError(f"float32_region: {fn.__qualname__} has no argument(s) {missing}")

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if not autocast_enabled():
                return fn(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            for name in arg_names:
                if name in bound.arguments:
                    bound.arguments[name] = to_float32(bound.arguments[name])
            with autocast_off():
                return fn(*bound.args, **bound.kwargs)

        return wrapper

    return decorate
