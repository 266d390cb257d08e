"""Array and graph kernels written once against the array API (numpy and CuPy).

Kernels know nothing of files, STAC or dask: they take arrays and return arrays.
"""
