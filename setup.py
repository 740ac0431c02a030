"""Thin setup: the only custom step is build_ext, which compiles csrc/ with CMake into codesign._C."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


def _find_cxx() -> str | None:
    for cand in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if cand and shutil.which(cand.split()[0]):
            return cand
    return None


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        if _find_cxx() is None:
            raise SystemExit(
                "codesign: no C++ compiler found (tried $CXX, c++, g++, clang++). "
                "Install one (Debian/Ubuntu: apt-get install g++) and run pip install again."
            )
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / ext.name
        build_dir.mkdir(parents=True, exist_ok=True)
        cfg = [
            f"-S{ROOT}",
            f"-B{build_dir}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
        if os.environ.get("CODESIGN_PORTABLE"):
            cfg.append("-DCODESIGN_NATIVE=OFF")
        try:
            subprocess.run(["cmake", *cfg], check=True)
            subprocess.run(["cmake", "--build", str(build_dir), "--parallel", "2"], check=True)
        except FileNotFoundError as exc:
            raise SystemExit(f"codesign: cmake not found ({exc}); pip installs it as a build requirement") from exc
        except subprocess.CalledProcessError as exc:
            raise SystemExit(f"codesign: building the C++ core failed ({exc}); see the compiler output above") from exc


setup(ext_modules=[CMakeExtension("codesign._C")], cmdclass={"build_ext": CMakeBuild})
