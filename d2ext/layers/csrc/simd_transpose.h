// CPU only: transposes square tiles of floats or doubles in SIMD registers (GCC / Clang vector
// extensions), for launchers that compute across rows of short rows (e.g. DFL's 17 bins) and must
// move them between row-major and column-major layouts. Loops that gather one element per row
// compile to scalar inserts or permutes from many registers; a tile transpose is log2(n) rounds of
// n two-register shuffles.
#pragma once

#include <cstdint>
#include <cstring>
#include <utility>

namespace d2ext {
namespace simd {

// Vector width B (bytes) is a template parameter: each CPU variant (cpu_isa_variants.h) passes its
// own (16 baseline, 32 AVX2, 64 AVX-512); everything here is always inlined, so it is compiled with
// the calling variant's instructions. kTargetVectorBytes: the width the compiler targets.
#if defined(__AVX512F__)
constexpr int kTargetVectorBytes = 64;
#elif defined(__AVX__)
constexpr int kTargetVectorBytes = 32;
#else
constexpr int kTargetVectorBytes = 16;
#endif

#define D2EXT_SIMD_INLINE inline __attribute__((always_inline))

template <typename T, int B>
struct Vector;
template <int B>
struct Vector<float, B> {
  typedef float type __attribute__((vector_size(B)));
  typedef int32_t mask __attribute__((vector_size(B)));
};
template <int B>
struct Vector<double, B> {
  typedef double type __attribute__((vector_size(B)));
  typedef int64_t mask __attribute__((vector_size(B)));
};

// Lanes of a vector of T: the tile side.
template <typename T, int B>
constexpr int kLanes = B / static_cast<int>(sizeof(T));

// Unaligned loads and stores.
template <int B, typename T>
D2EXT_SIMD_INLINE typename Vector<T, B>::type load(const T* p) {
  typename Vector<T, B>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <int B, typename T>
D2EXT_SIMD_INLINE void store(T* p, typename Vector<T, B>::type v) {
  std::memcpy(p, &v, sizeof(v));
}

// One round of the tile transpose: in every 2d x 2d block, swap the upper-right and lower-left
// d x d blocks. Rounds d = n/2, ..., 1 swap every bit in which an element's row and column differ,
// which moves (i, j) to (j, i).
template <typename T, int B, int D, int... L>
D2EXT_SIMD_INLINE void transpose_round(typename Vector<T, B>::type* rows, std::integer_sequence<int, L...>) {
  constexpr int n = sizeof...(L);
#pragma GCC unroll 16
  for (int i = 0; i < n; ++i) {
    if (i & D) {
      continue;
    }
    const auto a = rows[i], b = rows[i + D];
#if defined(__clang__)
    rows[i] = __builtin_shufflevector(a, b, ((L & D) ? n + L - D : L)...);
    rows[i + D] = __builtin_shufflevector(a, b, ((L & D) ? n + L : L + D)...);
#else
    using M = typename Vector<T, B>::mask;
    rows[i] = __builtin_shuffle(a, b, M{((L & D) ? n + L - D : L)...});
    rows[i + D] = __builtin_shuffle(a, b, M{((L & D) ? n + L : L + D)...});
#endif
  }
}

template <typename T, int B, int D>
D2EXT_SIMD_INLINE void transpose_rounds(typename Vector<T, B>::type* rows) {
  if constexpr (D >= 1) {
    transpose_round<T, B, D>(rows, std::make_integer_sequence<int, kLanes<T, B>>());
    transpose_rounds<T, B, D / 2>(rows);
  }
}

// dst[j * dst_stride + i] = src[i * src_stride + j] for i, j < kLanes<T, B>.
template <int B, typename T>
D2EXT_SIMD_INLINE void transpose_tile(const T* src, int64_t src_stride, T* dst, int64_t dst_stride) {
  constexpr int n = kLanes<T, B>;
  typename Vector<T, B>::type rows[n];
#pragma GCC unroll 16
  for (int i = 0; i < n; ++i) {
    rows[i] = load<B>(src + i * src_stride);
  }
  transpose_rounds<T, B, n / 2>(rows);
#pragma GCC unroll 16
  for (int i = 0; i < n; ++i) {
    store<B>(dst + i * dst_stride, rows[i]);
  }
}

// dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols: whole tiles in
// registers, the columns and rows past them element by element.
template <int B, typename T>
D2EXT_SIMD_INLINE void transpose(const T* src, int64_t src_stride, int64_t rows, int64_t cols, T* dst,
                                 int64_t dst_stride) {
  constexpr int n = kLanes<T, B>;
  const int64_t tiled_rows = rows / n * n, tiled_cols = cols / n * n;
  for (int64_t i0 = 0; i0 < tiled_rows; i0 += n) {
    for (int64_t j0 = 0; j0 < tiled_cols; j0 += n) {
      transpose_tile<B>(src + i0 * src_stride + j0, src_stride, dst + j0 * dst_stride + i0, dst_stride);
    }
  }
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = i < tiled_rows ? tiled_cols : 0; j < cols; ++j) {
      dst[j * dst_stride + i] = src[i * src_stride + j];
    }
  }
}

}  // namespace simd
}  // namespace d2ext
