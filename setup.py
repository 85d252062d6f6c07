"""Packaging beyond pyproject.toml: a wheel carries the repository's top-level `conf/` as the package
data `rlhf_lab/conf/`, so that a non-editable install (`pip install .`) finds its configs from any
directory (`rlhf_lab.api.CONF_DIR`). An editable install reads `conf/` in the checkout instead."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONF = Path(__file__).resolve().parent / "conf"


class BuildPyWithConf(build_py):
    """build_py, then a copy of conf/ into the built package (never into the source tree)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "rlhf_lab" / "conf"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(CONF, target, ignore=shutil.ignore_patterns("__pycache__", "*.py[cod]"))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        if getattr(self, "editable_mode", False):
            return super().get_outputs(include_bytecode)
        target = Path(self.build_lib) / "rlhf_lab" / "conf"
        conf = [str(target / path.relative_to(CONF)) for path in sorted(CONF.rglob("*.yaml"))]
        return [*super().get_outputs(include_bytecode), *conf]


setup(cmdclass={"build_py": BuildPyWithConf})
