// HOST_DEVICE qualifiers: the per-element math in d2ext's headers is compiled once for the CPU
// launcher (plain inline) and once for the CUDA launcher (__host__ __device__).
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define HOST_DEVICE __host__ __device__
#define HOST_DEVICE_INLINE __host__ __device__ __forceinline__
#else
#define HOST_DEVICE
#define HOST_DEVICE_INLINE inline
#endif
