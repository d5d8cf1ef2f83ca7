from setuptools import find_packages, setup

setup(
    name="autouad",
    version="0.1.0",
    description="Self-configuring unsupervised anomaly detection and segmentation for medical images",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["autouad", "autouad.*", "dataset_conversion", "dataset_conversion.*"])
    + ["autouad_plans"],
    # the papers' configurations live in the top-level plans/ folder as data; installed as autouad_plans
    package_dir={"autouad_plans": "plans"},
    # a method package may carry its own plans file (docs/extending.md)
    package_data={"autouad_plans": ["*.json"], "autouad.methods": ["*/*.json"]},
    install_requires=[
        # a range, so that GPU users bring their own torch; the README pins the CPU wheel for this machine
        "torch>=2.1",
        "numpy>=1.24",
        "scipy>=1.10",
        "SimpleITK>=2.2",
        "batchgenerators>=0.25",
        "acvl-utils>=0.2",
        # 0.4 pulls timm and torchvision; 0.3 has the U-Net building blocks without them
        "dynamic-network-architectures>=0.3,<0.4",
        "tqdm>=4.60",
        # reads NIfTI bytes as written: SimpleITK silently zero-fills truncated files and NaN
        "nibabel>=4",
        "matplotlib>=3.6",
        # ships the MNI152 template the demo dataset is built from (read from its package data, no download)
        "nilearn>=0.10",
    ],
    extras_require={"test": ["pytest>=7"]},
    entry_points={
        "console_scripts": [
            "autouad_convert_dataset=dataset_conversion.convert:main",
            "autouad_plan_and_preprocess=autouad.cli.plan_and_preprocess:main_plan_and_preprocess",
            "autouad_extract_fingerprint=autouad.cli.plan_and_preprocess:main_extract_fingerprint",
            "autouad_plan=autouad.cli.plan_and_preprocess:main_plan",
            "autouad_preprocess=autouad.cli.plan_and_preprocess:main_preprocess",
            "autouad_train=autouad.cli.train:main",
            "autouad_predict=autouad.cli.predict:main",
            "autouad_evaluate=autouad.cli.evaluate:main",
            "autouad_summarize=autouad.cli.summarize:main",
            "autouad_baseline=autouad.cli.baseline:main",
            "autouad_find_best_configuration=autouad.cli.find_best_configuration:main",
            "autouad_export_model=autouad.cli.model_archive:main_export",
            "autouad_install_model=autouad.cli.model_archive:main_install",
            "autouad_demo=autouad.cli.demo:main",
        ]
    },
)
