// Kernels of the norm op family (filled in by its issue work).
#include "common.cuh"
