"""The model-free operations of SegFix, on numpy arrays and torch tensors alike.

``directions`` (the 8 direction classes and their offsets), ``targets`` (training targets from a ground-truth
map), ``shift`` and ``refine`` (the exact integer gather), ``vote`` (the direction vote), ``thin`` (thin parts
and thin classes), and ``field`` (a :class:`~segfix.ops.field.RefinementField` and applying it to labels).
Nothing here loads a network; every public function checks its inputs once, at the door.
"""
