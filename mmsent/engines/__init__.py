"""Engine adapters other than TorchServe's handler (``handlers/fusion_handler.py``).

Each adapter only translates between its engine and ``mmsent.serving.exchange``: requests in,
one reply per request out. They import the serving core and their engine, nothing above.
"""
