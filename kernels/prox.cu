// Fused proximal block step of the Gram-form lasso solver (datamodels.regress.solver.epoch).
//
// For one block of coordinates, every target at once, in place:
//     z  = w + step * r
//     wn = sign(z) * max(|z| - step * lam[t], 0)
//     d  = wn - w;   w <- wn
// W and R are the block's rows of the C-ordered [n, k] weight and gradient
// arrays (contiguous), lam is [k]. One pass instead of the six elementwise
// array operations of the generic path; `moved` is set when any d != 0 so
// the caller can skip the block's GEMM without another reduction.
// NumPy twin: datamodels.kernels.prox.prox_block_numpy.

template <typename T>
__device__ __forceinline__ void prox_one(T* W, const T* R, const T* lam, T step, T* D,
                                         long long i, int k, int* moved) {
    const int t = (int)(i % k);
    const T w = W[i];
    const T z = w + step * R[i];
    const T a = fabs(z) - step * lam[t];
    const T wn = a > T(0) ? copysign(a, z) : T(0);
    const T d = wn - w;
    W[i] = wn;
    D[i] = d;
    if (d != T(0)) *moved = 1;
}

extern "C" __global__ void prox_block_f32(float* W, const float* R, const float* lam, float step,
                                          float* D, long long size, int k, int* moved) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size;
         i += (long long)gridDim.x * blockDim.x)
        prox_one<float>(W, R, lam, step, D, i, k, moved);
}

extern "C" __global__ void prox_block_f64(double* W, const double* R, const double* lam, double step,
                                          double* D, long long size, int k, int* moved) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size;
         i += (long long)gridDim.x * blockDim.x)
        prox_one<double>(W, R, lam, step, D, i, k, moved);
}
