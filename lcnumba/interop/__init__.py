"""Weight converters between lcnumba's layouts and other libraries' layers.

``lcnumba.interop.keras``: Keras 2 / tf-keras ``LocallyConnected1D``,
``LocallyConnected2D`` (all three implementations, both data formats),
``Conv1D`` and ``Conv2D``, in NumPy, without importing TensorFlow.
"""
