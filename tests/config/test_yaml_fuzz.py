"""Fuzzing d2ext's yaml loading (d2ext.config.load_config on a .yaml file): for any file, a
config or a d2ext ConfigError — no other exception, no code run, bounded time. Inputs: configs
built from a grammar of keys (real and made-up), values, anchors / aliases, tags (python ones
included) and nesting, and byte mutations of the repository's own configs. A fixed seed and
example count keep the run the same in every CI (about 20 s on 2 cores)."""

import glob
import os
import time

from conftest import CONFIGS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from d2ext.config import load_config
from d2ext.errors import ConfigError

MARKER = "/tmp/d2ext_yaml_fuzz_ran"
FUZZ = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
KEYS = [
    "MODEL",
    "DEVICE",
    "SEED",
    "SOLVER",
    "BASE_LR",
    "STEPS",
    "VERSION",
    "_BASE_",
    "ATSS",
    "NUM_CLASSES",
    "INPUT",
    "MIN_SIZE_TRAIN",
    "X",
    "&a",
    "? [1]",
    "'q'",
]
SCALARS = [
    "1",
    "-3",
    "0.5",
    "1e400",
    "cpu",
    "''",
    "null",
    "~",
    "true",
    "2020-13-45",
    "[]",
    "{}",
    "*a",
    "*b",
    "&a 3",
    "&b [1, *a]",
    f'!!python/object/apply:os.system ["touch {MARKER}"]',
    "!!python/name:os.system",
    "!!binary aGk=",
    "!!set {a, b}",
    "!!timestamp 2001-12-14",
    "!custom x",
    "[[[[[[1]]]]]]",
    "{a: {b: {c: 1}}}",
    '"\\x00"',
    "| \n  text",
]


@st.composite
def yaml_documents(draw, depth=0):
    lines = []
    for _ in range(draw(st.integers(1, 5))):
        key = draw(st.sampled_from(KEYS))
        if depth < 3 and draw(st.booleans()):
            child = draw(yaml_documents(depth=depth + 1))
            lines.append(f"{key}:")
            lines += ["  " + line for line in child.splitlines()]
        else:
            lines.append(f"{key}: {draw(st.sampled_from(SCALARS))}")
    return "\n".join(lines) + "\n"


REAL = sorted(glob.glob(os.path.join(CONFIGS, "Synthetic", "*.yaml")))[:4]


@st.composite
def mutated_configs(draw):
    data = bytearray(open(draw(st.sampled_from(REAL)), "rb").read())
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[at : at + draw(st.integers(1, 40))]
        else:
            data[at:at] = draw(
                st.sampled_from(
                    [b"&a ", b"*a", b"!!python/tuple ", b"\n  - ", b": ", b"{", b"[", b"\t"]
                )
            )
    return bytes(data)


def check_one(tmp_path, content: bytes):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(content)
    start = time.perf_counter()
    try:
        load_config(str(path))
    except ConfigError:
        pass
    assert time.perf_counter() - start < 5, content[:300]
    assert not os.path.exists(MARKER), content[:300]


@FUZZ
@given(yaml_documents())
def test_generated_configs_load_or_raise_config_error(tmp_path, text):
    check_one(tmp_path, text.encode())


@FUZZ
@given(mutated_configs())
def test_mutated_configs_load_or_raise_config_error(tmp_path, content):
    check_one(tmp_path, content)


def test_deep_nesting_is_a_config_error(tmp_path):
    check_one(tmp_path, b"[" * 100_000)
    check_one(tmp_path, b"a:\n" + b"".join(b" " * i + b"b:\n" for i in range(1, 3000)))
