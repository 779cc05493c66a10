"""Packaging for tb-retune. See BUILD.md for how the frontend is built."""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version() -> str:
    scope: dict = {}
    with open(os.path.join(HERE, "tb_retune", "_version.py")) as f:
        exec(f.read(), scope)
    return scope["__version__"]


def read_readme() -> str:
    path = os.path.join(HERE, "README.md")
    if not os.path.exists(path):  # an early checkout without the README
        return ""
    with open(path, encoding="utf-8") as f:
        return f.read()


def tensorflow_requirement() -> str:
    # The CPU wheel is enough on a machine without a GPU; set
    # TB_RETUNE_TENSORFLOW=tensorflow to depend on the full (GPU) build.
    name = os.environ.get("TB_RETUNE_TENSORFLOW", "tensorflow-cpu")
    return f"{name}==2.21.*"


setup(
    name="tb-retune",
    version=read_version(),
    description="Retune a running Keras model from TensorBoard: live hyperparameters, restore from any step, branches as a tree.",
    long_description=read_readme(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["tb_retune", "tb_retune.*"]),
    package_data={"tb_retune": ["py.typed", "static/*"]},
    include_package_data=True,
    install_requires=[
        tensorflow_requirement(),
        "tensorboard==2.21.*",
        "protobuf>=4.21",
        "werkzeug>=2.0",
        "watchdog>=4.0",
        "numpy>=1.24",
        "crc32c>=2.4",  # the checkpoints' checksums (CRC-32C in hardware: 4x zlib.crc32 here)
        "optuna>=4.0",  # search (imported lazily, only when a search runs)
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "ruff>=0.6",
            "mypy>=1.10",
            "playwright>=1.45",
            "scikit-learn>=1.3",
            "types-protobuf",
            # Optuna's RDBStorage on a private PostgreSQL server (tests/test_postgres_storage.py).
            "psycopg2-binary>=2.9",
            # make test runs the trainer tests under every Keras backend. Only
            # torch's CPU build (never the CUDA one, gigabytes): pip takes
            # 2.13.0+cpu from PIP_FIND_LINKS (see BUILD.md).
            "jax==0.10.2",
            "jaxlib==0.10.2",
            "torch==2.13.0+cpu",
        ],
        "demo": ["scikit-learn>=1.3"],
        # The other Keras backends (KERAS_BACKEND=jax or torch); TensorFlow is always installed.
        "jax": ["jax>=0.4.30", "jaxlib>=0.4.30"],
        "torch": ["torch>=2.1"],
    },
    entry_points={
        "tensorboard_plugins": ["retune = tb_retune.plugin.loader:RetuneLoader"],
        "console_scripts": ["tb-retune = tb_retune.cli:main"],
    },
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Framework :: TensorFlow",
        "Framework :: Jax",
        "Framework :: PyTorch",
    ],
)
