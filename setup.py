"""Package discovery only; everything else is in pyproject.toml.

conf/ stays at the top of the repository and ships inside the wheel as ``asr_kd.conf`` (its
YAML files as package data), so an installed wheel has its configs at ``asr_kd/conf``
(asr_kd/config.py finds them there, or beside the package in a checkout). setuptools cannot
discover a package mapped from another directory, hence this file: it lists conf/ and its
group folders (conf/model, conf/hydra/help, ...) as ``asr_kd.conf.*`` for any group added later.
"""

from setuptools import find_namespace_packages, find_packages, setup

CONF_PACKAGES = ["asr_kd.conf", *(f"asr_kd.conf.{p}" for p in find_namespace_packages("conf"))]

setup(
    # asr_kd.data.texts: data only (the synthetic corpus's sentences, asr_kd.data.synth_text.AUSTEN)
    packages=[*find_packages(include=["asr_kd*"]), "asr_kd.data.texts", *CONF_PACKAGES],
    package_dir={"asr_kd.conf": "conf"},
    package_data={**{p: ["*.yaml"] for p in CONF_PACKAGES}, "asr_kd.data.texts": ["*"]},
)
