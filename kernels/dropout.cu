// Kernels of the dropout op family (filled in by its issue work).
#include "common.cuh"
