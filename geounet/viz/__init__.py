"""Every picture: batches, results, training curves and quicklooks.

The pictures take plain arrays and small protocols; nothing here imports ``geounet.data``.
"""
