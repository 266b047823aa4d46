"""The CPU variants of d2ext._C (csrc/cpu_isa.h): the default build runs on any x86-64 CPU and
picks, at load time, a variant this CPU supports; every variant it can run computes what the
references compute; AVX / AVX-512 instructions appear only inside their own variant."""

import os
import platform
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

import d2ext
from d2ext.layers import cpu_capability, has_ops

pytestmark = pytest.mark.skipif(not has_ops(), reason="d2ext._C is not built")
X86 = platform.machine() in ("x86_64", "AMD64")
# /proc/cpuinfo's names of the features each variant is compiled for (cpu_isa.h).
REQUIRED_FLAGS = {
    "avx2": {"avx2", "fma"},
    "avx512": {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"},
}
# The op tests that compare every launcher with its reference (CPU parts only).
OP_TESTS = [
    "tests/layers/test_box_iou.py",
    "tests/layers/test_fused_losses.py",
    "tests/layers/test_atss_assign_op.py",
    "tests/layers/test_ap_loss.py",
]


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def runnable_variants():
    """The variants this CPU can run, best first."""
    if not X86:
        return ["default"]
    flags = cpu_flags()
    return [v for v in ("avx512", "avx2") if REQUIRED_FLAGS[v] <= flags] + ["default"]


def unforced_env(**env):
    """This process's environment without a forced variant, plus `env`."""
    full_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("D2EXT_CPU_CAPABILITY", "ATEN_CPU_CAPABILITY")
    }
    full_env.update(env)
    return full_env


def python(code, **env):
    return subprocess.run(
        [sys.executable, "-c", code],
        env=unforced_env(**env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_variant_in_use_is_the_best_this_cpu_supports():
    chosen = python("import d2ext.layers as L; print(L.cpu_capability())")
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.split()[-1] == runnable_variants()[0]
    if os.environ.get("D2EXT_CPU_CAPABILITY") in (None, ""):
        assert cpu_capability() == runnable_variants()[0]


@pytest.mark.parametrize("variable", ["D2EXT_CPU_CAPABILITY", "ATEN_CPU_CAPABILITY"])
def test_a_variant_can_be_forced(variable):
    for variant in runnable_variants():
        out = python(
            "import d2ext.layers as L; print(L.cpu_capability())", **{variable: variant.upper()}
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[-1] == variant


def test_a_bad_or_unsupported_variant_is_an_error_naming_the_variable():
    out = python("import d2ext.layers", D2EXT_CPU_CAPABILITY="avx9000")
    assert out.returncode != 0 and "D2EXT_CPU_CAPABILITY=avx9000" in out.stderr
    assert "default, avx2 and avx512" in out.stderr
    missing = [v for v in ("avx512", "avx2") if v not in runnable_variants()]
    for variant in missing:  # only on CPUs without AVX-512 / AVX2
        out = python("import d2ext.layers", D2EXT_CPU_CAPABILITY=variant)
        assert out.returncode != 0 and f"this CPU does not support {variant}" in out.stderr
        # ATen's variable is a request, as for ATen: the best supported variant instead.
        out = python(
            "import d2ext.layers as L; print(L.cpu_capability())", ATEN_CPU_CAPABILITY=variant
        )
        assert out.returncode == 0 and out.stdout.split()[-1] == runnable_variants()[0]


@pytest.mark.parametrize("variant", ["default", "avx2"])
def test_every_op_matches_its_reference_in_a_forced_variant(variant):
    """The auto-chosen variant runs the whole suite; these run the op tests again with the
    others (AVX-512 machines: avx2 and default; the default variant is what a CPU without AVX2
    runs)."""
    if variant not in runnable_variants():
        pytest.skip(f"this CPU cannot run the {variant} variant")
    if variant == runnable_variants()[0]:
        pytest.skip(f"{variant} is this CPU's own variant: the rest of the suite runs it")
    env = unforced_env(D2EXT_CPU_CAPABILITY=variant)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-o",
            "addopts=",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            "-m",
            "not cuda",
            *OP_TESTS,
        ],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert re.search(r"\d+ passed", out.stdout)


def functions_with(disassembly, pattern):
    """Names of the functions whose instructions match `pattern`."""
    found, name = set(), None
    for line in disassembly.splitlines():
        header = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if header:
            name = header.group(1)
        elif name and "\t" in line and re.search(pattern, line):
            found.add(name)
    return found


@pytest.mark.skipif(not X86 or shutil.which("objdump") is None, reason="needs x86-64 and objdump")
@pytest.mark.skipif(
    bool(os.environ.get("D2EXT_CPU_ARCH")), reason="built for one CPU (D2EXT_CPU_ARCH)"
)
def test_wide_instructions_only_inside_their_variants():
    """What makes the default build portable: outside the isa_avx512 functions no AVX-512 register
    (zmm, xmm/ymm16-31, mask k1-k7) is touched, outside the AVX2 and AVX-512 ones no ymm register
    or VEX-encoded instruction; the baseline (SSE2) code is everything else, dispatch included."""
    library = d2ext._C.__file__
    text = subprocess.run(
        ["objdump", "-d", "-C", "--no-show-raw-insn", library],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    avx512 = functions_with(text, r"%zmm|%[xy]mm(1[6-9]|2[0-9]|3[01])\b|%k[1-7]\b")
    avx = functions_with(
        text, r"%ymm|\tv[a-z0-9]+\s"
    )  # any VEX / EVEX instruction (vaddps, vmovdqu, ...)
    assert avx512 and avx, "no variant code found: was the library built with the variants?"
    assert {f for f in avx512 if "isa_avx512::" not in f} == set()
    assert {f for f in avx if "isa_avx512::" not in f and "isa_avx2::" not in f} == set()
