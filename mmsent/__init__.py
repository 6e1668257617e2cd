"""mmsent: multi-modal (text + image) sentiment with a BERT + CNN fusion model.

The package is split so that serving needs only the light modules:
``config``, ``imaging``, ``requests`` and ``pipeline`` (no model class code). ``model``,
``encoders``, ``export`` and training live beside them for building the TorchScript file.
"""

__version__ = "0.1.0"
