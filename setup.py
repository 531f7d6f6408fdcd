"""Installs JSQA for SpeechBrain: the ``jsqa_sb`` package and the ``jsqa`` command."""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent

setup(
    name="jsqa-sb",
    version="0.1.0",
    description=(
        "JSQA: non-intrusive speech quality (MOS) prediction with JND contrastive "
        "pretraining, as a SpeechBrain plugin"
    ),
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["jsqa_sb", "jsqa_sb.*"]),
    package_data={
        "jsqa_sb": ["samples/*.flac", "samples/README.md"],
        "jsqa_sb.recipe": ["hparams/*.yaml"],
    },
    # Ranges are the ones this project is tested with (see README, "Tested with").
    install_requires=[
        "speechbrain>=1.1.2,<1.2",
        "torch>=2.4,<=2.14.1",
        "torchaudio>=2.4,<2.12",
        "hyperpyyaml>=1.2.2,<2",
        "soundfile>=0.12,<0.15",
        "numpy>=1.24,<3",
        "scipy>=1.10,<2",
        "pandas>=2.0,<3",
        "huggingface_hub>=0.23,<2",
        "matplotlib>=3.7,<4",
        "tqdm>=4.60",
    ],
    extras_require={
        "dev": ["pytest>=7", "ruff>=0.4"],
        # Optional peer of the benchmarks (DNSMOS; bench_inference, bench_invariance).
        "bench": ["speechmos>=0.0.1", "onnxruntime", "librosa"],
    },
    entry_points={"console_scripts": ["jsqa = jsqa_sb.cli:main"]},
)
