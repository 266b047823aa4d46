#!/usr/bin/env python
"""Builds d2ext and its compiled ops, d2ext._C, from d2ext/layers/csrc.

C++ sources always; CUDA sources too when torch sees a GPU or FORCE_CUDA=1 (then CUDA_HOME must
name the toolkit nvcc comes from). Dependencies are pinned in requirements.txt, not here, so that
`pip install -e . --no-build-isolation` works inside an environment that already has torch and
Detectron2.
"""

import glob
import os
import shutil

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("d2ext", "layers", "csrc")


def want_cuda() -> bool:
    if os.environ.get("FORCE_CUDA", "0") == "1":
        if CUDA_HOME is None:
            raise RuntimeError("FORCE_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME.")
        return True
    return torch.cuda.is_available() and CUDA_HOME is not None


def cpu_flags():
    """
    -O3, and -fopenmp: at::parallel_for is an inline `omp parallel` region in torch's headers, so
    without it every CPU launcher runs on one thread (torch's own libgomp.so.1, loaded first,
    serves the extension). The `omp simd` hints vectorise the loss loops. No FMA
    contraction (nor --fmad on CUDA): the ATSS assignment must round exactly as its Python
    reference, on both devices. -fno-trapping-math: no FP exception flags are read, and GCC
    otherwise keeps branches (clamps, selects) that it could turn into SIMD blends.
    The library targets the compiler's baseline (x86-64: SSE2), so a wheel runs on any CPU torch
    runs on; the launcher loops are compiled again for AVX2 and AVX-512 and picked at load time
    (csrc/cpu_isa.h). D2EXT_CPU_ARCH=native (or another -march value) builds the whole library for
    one kind of CPU instead; that build runs only on CPUs like it. -Wno-psabi: GCC notes that
    the 32/64-byte vector types of the variants change an ABI no exported function uses.
    """
    flags = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-trapping-math", "-Wno-psabi"]
    arch = os.environ.get("D2EXT_CPU_ARCH", "")
    if arch:
        flags.append(f"-march={arch}")
    return flags


def get_extensions():
    sources = sorted(glob.glob(os.path.join(CSRC, "**", "*.cpp"), recursive=True))
    extra_compile_args = {"cxx": cpu_flags()}
    define_macros = [("D2EXT_OMP_SIMD", None)]
    extension = CppExtension
    if want_cuda():
        extension = CUDAExtension
        sources += sorted(glob.glob(os.path.join(CSRC, "**", "*.cu"), recursive=True))
        define_macros.append(("WITH_CUDA", None))
        nvcc_flags = os.environ.get("NVCC_FLAGS", "").split()
        extra_compile_args["nvcc"] = [
            "-O3",
            "--expt-relaxed-constexpr",
            "--fmad=false",
        ] + nvcc_flags
    return [
        extension(
            "d2ext._C",
            sources,
            include_dirs=[os.path.join(HERE, CSRC)],
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
            extra_link_args=["-fopenmp"],
        )
    ]


def get_model_zoo_configs():
    """Copies top-level configs/ into d2ext/model_zoo/configs so they ship with the package."""
    source = os.path.join(HERE, "configs")
    destination = os.path.join(HERE, "d2ext", "model_zoo", "configs")
    if os.path.islink(destination):
        os.unlink(destination)
    elif os.path.isdir(destination):
        shutil.rmtree(destination)
    try:
        # An editable install sees the live folder through a link.
        os.symlink(source, destination)
    except OSError:
        shutil.copytree(source, destination)
    files = glob.glob(os.path.join("configs", "**", "*.yaml"), recursive=True)
    files += glob.glob(os.path.join("configs", "**", "*.py"), recursive=True)
    return files


setup(
    name="d2ext",
    version="0.1.0",
    description="Dense-detector training recipes (ATSS, DynamicATSS, GFL, VFNet, MuSu, AP-loss, "
    "Libra R-CNN) for Detectron2",
    license="Apache-2.0",
    python_requires=">=3.9",
    # What the package registry can provide (lower bounds only: requirements.txt pins the tested
    # versions, and a user's own torch build must not be replaced). Detectron2 itself has no
    # official release there: install it first (README "Install"). OpenCV (cv2) is needed too but
    # not declared: opencv-python and opencv-python-headless are both fine, and declaring one
    # installs a second copy beside a user's other.
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "fvcore>=0.1.5",
        "pycocotools>=2.0.7",
        "numpy",
        "omegaconf>=2.1",
        "pyyaml>=5.1",
        "matplotlib>=3.5",
        "tqdm>=4.60",
    ],
    packages=find_packages(exclude=("configs", "tests*", "tools*")),
    package_data={"d2ext.model_zoo": get_model_zoo_configs()},
    ext_modules=get_extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    # The tools of tools/*.py, for installed packages (tools/ is not shipped).
    entry_points={
        "console_scripts": [
            "d2ext-train=d2ext.tools.train_net:main",
            "d2ext-demo=d2ext.tools.demo:main",
            "d2ext-export=d2ext.tools.export_model:main",
            "d2ext-visualize-predictions=d2ext.tools.visualize_predictions:main",
            "d2ext-convert-mmdet-checkpoint=d2ext.tools.convert_mmdet_checkpoint:main",
            "d2ext-compare=d2ext.tools.compare_methods:main",
            "d2ext-visualize-data=d2ext.tools.visualize_data:main",
            "d2ext-visualize-json-results=d2ext.tools.visualize_json_results:main",
            "d2ext-analyze-errors=d2ext.tools.analyze_errors:main",
            "d2ext-analyze-model=d2ext.tools.analyze_model:main",
            "d2ext-benchmark=d2ext.tools.benchmark:main",
        ]
    },
)
