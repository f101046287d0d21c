"""Builds gankern._C (CUDA kernels, when nvcc is found) and gankern._sim (the same kernels against the CPU
simulation of csrc/sim, for the tests) with CMake + Ninja. Pure Python is installed when nvcc is absent.

Environment: GANKERN_CUDA_ARCH (CMake CUDA_ARCHITECTURES, default "80-real;90-real;90-virtual"),
GANKERN_NO_CUDA=1 (skip the CUDA build), CUDA_HOME (where nvcc is), GANKERN_SIM_SANITIZED=1 (also build
gankern._sim_asan, the simulation under AddressSanitizer + UBSan, for the tests).
"""
import json
import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


def find_nvcc():
    if os.environ.get("GANKERN_NO_CUDA") == "1":
        return None, "GANKERN_NO_CUDA=1 at install"
    cuda_home = os.environ.get("CUDA_HOME")
    for cand in (cuda_home and os.path.join(cuda_home, "bin", "nvcc"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand, None
    return None, "nvcc not found at install (set CUDA_HOME or put nvcc on PATH, then reinstall)"


class CMakeBuild(build_ext):
    """One CMake build makes every module; it runs for the first extension and lands them all in its folder."""

    _built = False

    def build_extension(self, ext):
        import pybind11

        if CMakeBuild._built:
            return
        CMakeBuild._built = True

        outdir = os.path.dirname(os.path.abspath(self.get_ext_fullpath(ext.name)))
        nvcc, reason = find_nvcc()
        archs = os.environ.get("GANKERN_CUDA_ARCH", "80-real;90-real;90-virtual")
        build_dir = os.path.join(ROOT, "build", f"py{sys.version_info.major}{sys.version_info.minor}")
        os.makedirs(build_dir, exist_ok=True)
        args = [
            "cmake", "-S", ROOT, "-B", build_dir, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
            f"-DPython_EXECUTABLE={sys.executable}", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DGANKERN_OUTPUT_DIR={outdir}", f"-DGANKERN_WITH_CUDA={'ON' if nvcc else 'OFF'}",
            f"-DGANKERN_SIM_SANITIZED={'ON' if SIM_SANITIZED else 'OFF'}",
        ]
        if nvcc:
            args += [f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DCMAKE_CUDA_ARCHITECTURES={archs}"]
        subprocess.check_call(args)
        subprocess.check_call(["cmake", "--build", build_dir, "--parallel", str(os.cpu_count() or 2)])
        info = {"cuda": bool(nvcc), "sim": True, "sim_asan": SIM_SANITIZED, "archs": archs if nvcc else None,
                "reason": f"built with {nvcc}" if nvcc else reason}
        for d in {outdir, os.path.join(ROOT, "gankern")}:
            with open(os.path.join(d, "_build.json"), "w") as f:
                json.dump(info, f)


NVCC, _ = find_nvcc()
SIM_SANITIZED = os.environ.get("GANKERN_SIM_SANITIZED") == "1"
MODULES = ["gankern._sim"] + (["gankern._sim_asan"] if SIM_SANITIZED else []) + (["gankern._C"] if NVCC else [])
setup(ext_modules=[Extension(name, sources=[]) for name in MODULES], cmdclass={"build_ext": CMakeBuild})
