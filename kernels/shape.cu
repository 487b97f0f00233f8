// Kernels of the shape op family (filled in by its issue work).
#include "common.cuh"
