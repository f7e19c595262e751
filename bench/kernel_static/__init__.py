"""Static kernel report helpers: resources, SASS and occupancy of the compiled CUDA and Triton
kernels, and the modeled H100 cost (bench/kernel_report.py). Import with ``bench/`` on
``sys.path``."""
