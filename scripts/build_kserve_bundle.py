"""Build the KServe bundle (build/kserve/: config/config.properties, config/metrics.yaml,
model-store/fusion_sentiment.mar) for KServe's TorchServe runtime. See docs/kubernetes.md.

    python scripts/build_kserve_bundle.py                 # default model
    python scripts/build_kserve_bundle.py --gpu           # GPU model-config, build/kserve-gpu/
    python scripts/build_kserve_bundle.py --archive model_store/fusion_sentiment.mar
"""

from mmsent.packaging.kserve import main

if __name__ == "__main__":
    main()
