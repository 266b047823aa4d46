// HOST_DEVICE qualifiers: the per-element math in d2ext's headers is compiled once for the CPU
// launcher (plain inline) and once for the CUDA launcher (__host__ __device__).
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define HOST_DEVICE __host__ __device__
#define HOST_DEVICE_INLINE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define HOST_DEVICE
// Forced: a loop over elements vectorises only if the body is inlined into it.
#define HOST_DEVICE_INLINE inline __attribute__((always_inline))
#else
#define HOST_DEVICE
#define HOST_DEVICE_INLINE inline
#endif

// Vectorisation hints for CPU loops (OpenMP SIMD pragmas; setup.py compiles with -fopenmp).
// Nothing on CUDA.
#if defined(__CUDACC__) || !defined(D2EXT_OMP_SIMD)
#define D2EXT_SIMD
#define D2EXT_SIMD_SUM(var)
#define D2EXT_SIMD_MAX(var)
#else
#define D2EXT_PRAGMA(x) _Pragma(#x)
#define D2EXT_SIMD D2EXT_PRAGMA(omp simd)
#define D2EXT_SIMD_SUM(var) D2EXT_PRAGMA(omp simd reduction(+ : var))
#define D2EXT_SIMD_MAX(var) D2EXT_PRAGMA(omp simd reduction(max : var))
#endif

// Whether the CPU launchers are compiled in x86-64 ISA variants (cpu_isa.h): where GCC targets
// x86-64 (per-function `#pragma GCC target`); elsewhere one variant for the compiler's target.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(D2EXT_NO_CPU_VARIANTS)
#define D2EXT_CPU_VARIANTS 1
#else
#define D2EXT_CPU_VARIANTS 0
#endif
