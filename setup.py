from setuptools import find_packages, setup

setup(
    name="kiln",
    version="0.1.0",
    description="Build families of container images from Jinja2 Dockerfile templates",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["builder", "builder.*"]),
    install_requires=[
        "Jinja2>=3.1",
        "networkx>=3.0",
        "oslo.config>=9.0",
        "PyYAML>=5.1",
        "docker>=7.0",
        "GitPython>=3.1.30",
        "rich>=13.0",
        "requests>=2.31",
    ],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6", "cryptography>=41", "PyYAML>=6"],
    },
    entry_points={
        "console_scripts": [
            "kiln-build = builder.cli.build:main",
            "kiln-registry = builder.cli.registry:main",
        ],
        "kiln.engines": [
            "docker = builder.engine.docker:DockerEngine",
            "podman = builder.engine.podman:PodmanEngine",
            "buildah = builder.engine.buildah:BuildahEngine",
        ],
        "oslo.config.opts": [
            "kiln-build = builder.config:list_opts",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "License :: OSI Approved :: Apache Software License",
    ],
)
