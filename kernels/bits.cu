// Bit unpacking of masks on the device: masks travel to the GPU packed 8 per
// byte (np.packbits along rows, big-endian bit order), 8x less PCIe traffic
// and host memory than bool, and 32x less than the float32 the Gram GEMM needs.
// packed: uint8[m, nbytes]; out: float[m, n] with out[r, c] = bit c of row r.
// NumPy twin: datamodels.kernels.bits.unpack_bits_numpy.

extern "C" __global__ void unpack_bits_f32(const unsigned char* packed, float* out, long long m,
                                           int n, int nbytes) {
    const long long size = m * n;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < size;
         i += (long long)gridDim.x * blockDim.x) {
        const long long r = i / n;
        const int c = (int)(i - r * n);
        const unsigned char b = packed[r * nbytes + (c >> 3)];
        out[i] = ((b >> (7 - (c & 7))) & 1) ? 1.0f : 0.0f;
    }
}
