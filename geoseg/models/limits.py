"""Sane bounds for values that size a model or its allocations.

A corrupt or hostile checkpoint header, or a wrong argument, must fail with a clear
message naming the value, not with a multi-GB allocation deep inside torch.
"""

#: Input bands of a model.
MAX_BANDS = 1024
#: Classes of a model (class ids fit 16 bits).
MAX_CLASSES = 65535
#: Edge of a model's input window in pixels.
MAX_TILE_SIZE = 8192
