// Gram accumulation from bit-packed mask columns: S[i, j] += popcount(col_i & col_j).
//
// Each mask column (one training example across a block of models) is packed
// into `words` 64-bit words. A 0/1 Gram entry is the number of models that
// contain both examples, so AND + popcount computes 64 products per
// instruction on exact integers; it reads 32x less memory than a float32
// GEMM, which is what bounds the pass over masks larger than device memory.
// cols: uint64[n, words]; S: float64[n, n] (accumulated, both triangles).
// NumPy twin: datamodels.kernels.gram.gram_popcount_numpy.

#define TILE 16

extern "C" __global__ void gram_popcount(const unsigned long long* __restrict__ cols, double* S,
                                         int n, int words) {
    __shared__ unsigned long long a[TILE][TILE + 1];
    __shared__ unsigned long long b[TILE][TILE + 1];
    const int i = blockIdx.y * TILE + threadIdx.y;
    const int j = blockIdx.x * TILE + threadIdx.x;
    if (blockIdx.x < blockIdx.y) return;  // upper triangle of tiles; mirrored below
    unsigned long long acc = 0;
    for (int w0 = 0; w0 < words; w0 += TILE) {
        const int wa = w0 + threadIdx.x, wb = w0 + threadIdx.y;
        const int ri = blockIdx.y * TILE + threadIdx.y, rj = blockIdx.x * TILE + threadIdx.x;
        a[threadIdx.y][threadIdx.x] = (ri < n && wa < words) ? cols[(long long)ri * words + wa] : 0ULL;
        b[threadIdx.x][threadIdx.y] = (rj < n && wb < words) ? cols[(long long)rj * words + wb] : 0ULL;
        __syncthreads();
        for (int w = 0; w < TILE; ++w) acc += __popcll(a[threadIdx.y][w] & b[threadIdx.x][w]);
        __syncthreads();
    }
    if (i < n && j < n) {
        S[(long long)i * n + j] += (double)acc;
        if (blockIdx.x != blockIdx.y) S[(long long)j * n + i] += (double)acc;
    }
}
