// One read of a float32 distance tile per query row: the row's squared distances and minimum, the
// running minimum's move, and every sigma's shifted sum, for the torch backend on the CPU.
// ganbench/scoring/fused_rows.py compiles this (g++ -O3 -march=native, no -ffast-math: every
// IEEE rounding below is the one the error analysis counts), checks it and calls it; the same
// arithmetic in eager torch is ganbench.scoring.partials.accumulate, and docs/precision.md gives
// the bound both paths keep.
//
// Per row i of the tile T (T_ij = ||s_j - c||^2 - 2 (x_i - c).(s_j - c), from one GEMM):
//   D_ij = max(T_ij + ||x_i - c||^2, 0)                        float32, as the eager path
//   m_i  = min_j D_ij, first j among ties                      exact
//   mu_i = min(running minimum, m_i); sums *= exp(-(old - mu_i) c_k)
//   sums_k += sum_j exp(-(D_ij - mu_i) c_k) over the terms not below e^-negligible of the largest
// with c_k = 1 / (2 sigma_k^2), widest sigma (smallest c_k) first, and the terms that count for
// it gathered once per row into a buffer in cache: each narrower sigma keeps its own from those,
// so a sigma whose terms are all negligible costs nothing.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

constexpr int kLanes = 8;  // doubles per vector: one AVX-512 register, two AVX2 ones
typedef double Doubles __attribute__((vector_size(kLanes * sizeof(double))));
typedef int64_t Integers __attribute__((vector_size(kLanes * sizeof(int64_t))));
typedef float Floats __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t FloatMask __attribute__((vector_size(kLanes * sizeof(int32_t))));
constexpr int kWide = 16;  // floats per vector in the distance pass
constexpr int kMaxCandidatesK = 16;  // the largest k of top-k's candidates kept in registers
typedef float WideFloats __attribute__((vector_size(kWide * sizeof(float))));

// exp(-x) for x in [0, 87], in float64: x = n ln2 + r with |r| <= ln2 / 2 (Cody and Waite: ln2
// in two parts, the first with 32 trailing zero bits, so n ln2_hi is exact for |n| < 2^20), e^r
// by its Taylor polynomial of degree 10 (remainder below (ln2 / 2)^11 / 11! = 2.2e-13), 2^n
// from the exponent bits. Relative error below 1e-12: far inside the error analysis's two ulps of
// float32 for the exponential (the terms are summed in float64, the sum rounded to float32 once).
inline Doubles exp_negative(Doubles x) {
  const double log2e = 1.4426950408889634;
  const double ln2_hi = 6.93147180369123816490e-01;
  const double ln2_lo = 1.90821492927058770002e-10;
  const double shifter = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer
  const Doubles limit = Doubles{} + 87.0;
  x = x < limit ? x : limit;  // the pass keeps x <= 40; a safety net, never reached
  Doubles t = -x * log2e + shifter;
  Doubles n = t - shifter;  // nearest integer to -x / ln2, exactly
  Doubles r = (-x - n * ln2_hi) - n * ln2_lo;
  Doubles p = Doubles{} + 2.7557319223985893e-07;  // 1/10!
  p = p * r + 2.7557319223985888e-06;   // 1/9!
  p = p * r + 2.4801587301587302e-05;   // 1/8!
  p = p * r + 1.9841269841269841e-04;   // 1/7!
  p = p * r + 1.3888888888888889e-03;   // 1/6!
  p = p * r + 8.3333333333333333e-03;   // 1/5!
  p = p * r + 4.1666666666666664e-02;   // 1/4!
  p = p * r + 1.6666666666666666e-01;   // 1/3!
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  // t's low bits hold n (t = 1.5 * 2^52 + n exactly); 2^n has exponent field n + 1023 > 0 here.
  Integers bits = (Integers)t - static_cast<int64_t>(0x4338000000000000LL);
  Integers power_bits = (bits + 1023) << 52;
  return p * (Doubles)power_bits;
}

// sum_j exp(-values_j * scale) over `count` values (each product rounded to float32 first, as
// the eager path's), accumulated in float64.
double sum_of_terms(const float* values, int64_t count, float scale) {
  Doubles total = Doubles{};
  int64_t j = 0;
  for (; j + kLanes <= count; j += kLanes) {
    Floats chunk;
    std::memcpy(&chunk, values + j, sizeof(chunk));
    Floats exponent = chunk * scale;
    total += exp_negative(__builtin_convertvector(exponent, Doubles));
  }
  if (j < count) {  // the tail: unused lanes contribute exactly 0
    Floats chunk = Floats{};
    std::memcpy(&chunk, values + j, sizeof(float) * (count - j));
    Floats exponent = chunk * scale;
    Doubles terms = exp_negative(__builtin_convertvector(exponent, Doubles));
    for (int lane = 0; lane < kLanes; ++lane) {
      if (j + lane < count) total[lane] += terms[lane];
    }
  }
  double sum = 0.0;
  for (int lane = 0; lane < kLanes; ++lane) sum += total[lane];
  return sum;
}

// D_j = max(T_j + query_norm, 0) in place; returns min_j D_j.
float distances_and_minimum(float* row, int64_t count, float query_norm) {
  const WideFloats zero = WideFloats{};
  WideFloats smallest = zero + INFINITY;
  int64_t j = 0;
  for (; j + kWide <= count; j += kWide) {
    WideFloats chunk;
    std::memcpy(&chunk, row + j, sizeof(chunk));
    chunk = chunk + query_norm;
    chunk = chunk > zero ? chunk : zero;  // -0 to +0, as clamp does (the tile is finite: parzen refuses NaN)
    std::memcpy(row + j, &chunk, sizeof(chunk));
    smallest = chunk < smallest ? chunk : smallest;
  }
  float minimum = INFINITY;
  for (int lane = 0; lane < kWide; ++lane) minimum = smallest[lane] < minimum ? smallest[lane] : minimum;
  for (; j < count; ++j) {
    float value = row[j] + query_norm;
    value = value > 0.0f ? value : 0.0f;
    row[j] = value;
    minimum = value < minimum ? value : minimum;
  }
  return minimum;
}

#if defined(__AVX512F__)
// Sixteen values less the shift, as float32 (an int32 difference is exact, then rounded once).
inline __m512 broadcast(float value) { return _mm512_set1_ps(value); }
inline __m512i broadcast(int32_t value) { return _mm512_set1_epi32(value); }
inline __m512 shifted(const float* values, __m512 shift) { return _mm512_sub_ps(_mm512_loadu_ps(values), shift); }
inline __m512 shifted(const int32_t* values, __m512i shift) {
  return _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_loadu_si512(values), shift));
}
#endif

// Keeps values - shift where <= cutoff, as float32, in order, at the front of `out` (which may be
// `values`: each store ends at or before the next unread value); returns how many. For exact int32
// distances the difference is exact and its conversion to float32 rounds once above 2^24, as the
// eager path's conversion does.
template <typename Value>
int64_t keep_within(const Value* values, int64_t count, Value shift, float cutoff, float* out) {
  int64_t kept = 0;
  int64_t j = 0;
#if defined(__AVX512F__)
  // Compressed in a register, then one full store (the memory form of vcompressps is microcoded
  // and slow on AMD's Zen 4).
  const auto shift_vector = broadcast(shift);
  const __m512 cutoff_vector = _mm512_set1_ps(cutoff);
  for (; j + 16 <= count; j += 16) {
    const __m512 value = shifted(values + j, shift_vector);
    const __mmask16 inside = _mm512_cmp_ps_mask(value, cutoff_vector, _CMP_LE_OQ);
    _mm512_storeu_ps(out + kept, _mm512_maskz_compress_ps(inside, value));
    kept += __builtin_popcount(inside);
  }
#endif
  for (; j < count; ++j) {  // branch-free: the value is written, and kept only if it counts
    const float value = static_cast<float>(values[j] - shift);
    out[kept] = value;
    kept += value <= cutoff;
  }
  return kept;
}

int32_t minimum_of(const int32_t* row, int64_t count) {
  int32_t minimum = INT32_MAX;
  for (int64_t j = 0; j < count; ++j) minimum = row[j] < minimum ? row[j] : minimum;
  return minimum;
}

// Takes a row's minimum into the running one: `block_minimum` is the row's minimum `row_minimum` in
// the running minimum's units (E adds the row's ||a'||^2); the index is the row's first column that
// holds it, and ties keep the earlier block's index. Returns the new running minimum.
template <typename Value, typename Minimum>
Minimum take_minimum(const Value* row, Value row_minimum, Minimum block_minimum, Minimum* running_minimum,
                     int64_t* nearest, int64_t index_offset) {
  if (block_minimum < *running_minimum) {
    int64_t first = 0;
    while (row[first] != row_minimum) ++first;
    *nearest = index_offset + first;
    *running_minimum = block_minimum;
  }
  return *running_minimum;
}

// Moves a row's sums to a new minimum: factor exp(-(old - new) c) <= 1, exactly 0 from +inf. The gap
// and its product with c are float32 on the float path and float64 on the exact one, as each eager path's.
template <typename Gap>
void rescale_sums(float* sums, int64_t sums_stride, const float* scales, const int64_t* sigma_rows,
                  int64_t sigmas, Gap gap) {
  for (int64_t k = 0; k < sigmas; ++k) {
    const Gap exponent = gap * static_cast<Gap>(scales[k]);
    sums[sigma_rows[k] * sums_stride] *= static_cast<float>(std::exp(-static_cast<double>(exponent)));
  }
}

// Every sigma's terms of one row, from `kept` shifted values (those within the widest sigma's
// cutoff) in kept_values: each narrower sigma keeps its own from the wider one's, so every exponent
// is >= -negligible (-40), far from exp_negative's limit.
void add_sigma_sums(float* kept_values, int64_t kept, float* sums, int64_t sums_stride, const float* scales,
                    const int64_t* sigma_rows, int64_t sigmas, float negligible_exponent) {
  for (int64_t k = 0; k < sigmas && kept > 0; ++k) {  // narrower sigmas keep even fewer
    if (k > 0) kept = keep_within(kept_values, kept, 0.0f, negligible_exponent / scales[k], kept_values);
    sums[sigma_rows[k] * sums_stride] += static_cast<float>(sum_of_terms(kept_values, kept, scales[k]));
  }
}

// One row of exact squared distances in units of 255^2 (8-bit data): the tile holds E - ||a'||^2 =
// ||b'||^2 - 2 a'.b' (int32, ganbench.scoring.byte_distances), the running minimum is E's (float64,
// exact integers); the same folding as fold_row.
void fold_byte_row(const int32_t* row, int64_t columns, int32_t query_norm, double* running_minimum,
                   int64_t* nearest, int64_t index_offset, float* sums, int64_t sums_stride, const float* scales,
                   const int64_t* sigma_rows, int64_t sigmas, float negligible_exponent, float* kept_values) {
  const int32_t row_minimum = minimum_of(row, columns);
  const double old_minimum = *running_minimum;
  const double minimum = take_minimum(row, row_minimum, static_cast<double>(row_minimum) + query_norm,  // exact
                                      running_minimum, nearest, index_offset);
  if (sigmas == 0) return;
  if (minimum < old_minimum) rescale_sums(sums, sums_stride, scales, sigma_rows, sigmas, old_minimum - minimum);
  // E - minimum = row - (minimum - ||a'||^2), exact in int32 (0 <= E - minimum <= E < 2^31).
  const int32_t shift = static_cast<int32_t>(minimum - query_norm);
  int64_t kept = keep_within(row, columns, shift, negligible_exponent / scales[0], kept_values);
  add_sigma_sums(kept_values, kept, sums, sums_stride, scales, sigma_rows, sigmas, negligible_exponent);
}

// One row of distances from a bank's digit products (ganbench.scoring.digit_distances), in units of
// E = 255^2 D: E_j = (query_norm + column_terms[j]) - 2 (P_0j + P_1j / 256 + P_2j / 256^2 ...), each P_d
// an exact int32 product (digit d's row is `plane_stride` after P_0's). The powers of two and the sum
// of the P_d are exact in float64 (below 2^47); the two additions round once each. The running
// minimum is E's (float64); E - minimum is rounded to float32 once, as the byte pass's difference.
// values: a buffer of `columns` doubles.
void fold_digit_row(const int32_t* products, int64_t plane_stride, int64_t digits, const double* column_terms,
                    int64_t columns, double query_norm, double* running_minimum, int64_t* nearest,
                    int64_t index_offset, float* sums, int64_t sums_stride, const float* scales,
                    const int64_t* sigma_rows, int64_t sigmas, float negligible_exponent, double* values,
                    float* kept_values) {
  for (int64_t j = 0; j < columns; ++j) values[j] = static_cast<double>(products[j]);
  for (int64_t digit = 1; digit < digits; ++digit) {
    const double weight = std::ldexp(1.0, static_cast<int>(-8 * digit));
    const int32_t* plane = products + digit * plane_stride;
    for (int64_t j = 0; j < columns; ++j) values[j] += weight * static_cast<double>(plane[j]);
  }
  double row_minimum = INFINITY;
  for (int64_t j = 0; j < columns; ++j) {
    const double value = (query_norm + column_terms[j]) - 2.0 * values[j];
    values[j] = value;
    row_minimum = value < row_minimum ? value : row_minimum;
  }
  const double old_minimum = *running_minimum;
  const double minimum = take_minimum(values, row_minimum, row_minimum, running_minimum, nearest, index_offset);
  if (sigmas == 0) return;
  if (minimum < old_minimum) rescale_sums(sums, sums_stride, scales, sigma_rows, sigmas, old_minimum - minimum);
  for (int64_t j = 0; j < columns; ++j) kept_values[j] = static_cast<float>(values[j] - minimum);
  int64_t kept = keep_within(kept_values, columns, 0.0f, negligible_exponent / scales[0], kept_values);
  add_sigma_sums(kept_values, kept, sums, sums_stride, scales, sigma_rows, sigmas, negligible_exponent);
}

// One row: D in place, the running minimum, its index and every sigma's shifted sum.
// kept_values: a buffer of `columns` floats.
void fold_row(float* row, int64_t columns, float query_norm, float* running_minimum, int64_t* nearest,
              int64_t index_offset, float* sums, int64_t sums_stride, const float* scales,
              const int64_t* sigma_rows, int64_t sigmas, float negligible_exponent, float* kept_values) {
  const float row_minimum = distances_and_minimum(row, columns, query_norm);
  const float old_minimum = *running_minimum;
  const float minimum = take_minimum(row, row_minimum, row_minimum, running_minimum, nearest, index_offset);
  if (sigmas == 0) return;  // nearest neighbours only
  if (minimum < old_minimum) rescale_sums(sums, sums_stride, scales, sigma_rows, sigmas, old_minimum - minimum);
  // Terms with (D - mu) c > negligible are left out (ganbench.scoring.partials.add_terms says why
  // that is exact to float32).
  int64_t kept = keep_within(row, columns, minimum, negligible_exponent / scales[0], kept_values);
  add_sigma_sums(kept_values, kept, sums, sums_stride, scales, sigma_rows, sigmas, negligible_exponent);
}

// k-means' bounds (ganbench.paper.kmeans_bounds) in one pass over a row: each bound less its centroid's
// drift (one IEEE float32 subtraction, as torch's sub_), and each group's smallest new bound. `edges`
// holds each group's first column and then `columns`.
void drift_and_group_minima_row(float* row, const float* drift, const int64_t* edges, int64_t groups,
                                float* minima) {
  for (int64_t group = 0; group < groups; ++group) {
    int64_t j = edges[group];
    const int64_t last = edges[group + 1];
    WideFloats smallest = WideFloats{} + INFINITY;
    for (; j + kWide <= last; j += kWide) {
      WideFloats value, moved;
      std::memcpy(&value, row + j, sizeof(value));
      std::memcpy(&moved, drift + j, sizeof(moved));
      value = value - moved;
      std::memcpy(row + j, &value, sizeof(value));
      smallest = value < smallest ? value : smallest;
    }
    float minimum = INFINITY;
    for (int lane = 0; lane < kWide; ++lane) minimum = smallest[lane] < minimum ? smallest[lane] : minimum;
    for (; j < last; ++j) {
      const float value = row[j] - drift[j];
      row[j] = value;
      minimum = value < minimum ? value : minimum;
    }
    minima[group] = minimum;
  }
}

// The k-th smallest value of a row (k <= kMaxCandidatesK; `none` when the row has fewer): an insertion
// into the k kept so far, rarely taken.
template <typename Value>
Value kth_smallest(const Value* row, int64_t count, int k, Value none) {
  Value smallest[kMaxCandidatesK];
  for (int slot = 0; slot < k; ++slot) smallest[slot] = none;
  for (int64_t j = 0; j < count; ++j) {
    const Value value = row[j];
    if (value >= smallest[k - 1]) continue;
    int slot = k - 1;
    while (slot > 0 && smallest[slot - 1] > value) {
      smallest[slot] = smallest[slot - 1];
      --slot;
    }
    smallest[slot] = value;
  }
  return smallest[k - 1];
}

// The columns whose value is <= limit, in order, into `columns` (at most `capacity`); returns how many
// there are (more than `capacity`: the caller takes the eager path).
template <typename Value>
int64_t columns_within(const Value* row, int64_t count, Value limit, int32_t* columns, int64_t capacity) {
  int64_t found = 0;
  for (int64_t j = 0; j < count; ++j) {
    if (row[j] <= limit) {
      if (found < capacity) columns[found] = static_cast<int32_t>(j);
      ++found;
    }
  }
  return found;
}

// Exact top-k's candidates in one row of a float32 tile (ganbench.scoring.neighbours._top_k): D in
// place, as fold_row; unless kth <= 0 (k exact copies kept already), every column with D <= the
// float64 limit min(kth + E, t + 2E), t the row's k-th smallest D, rounded up to float32.
int64_t near_candidates_row(float* row, int64_t count, float query_norm, double kth, double margin, int k,
                            int32_t* columns, int64_t capacity) {
  distances_and_minimum(row, count, query_norm);
  if (!(kth > 0.0)) return 0;
  double limit = kth + margin;
  if (count >= k) limit = std::fmin(limit, static_cast<double>(kth_smallest(row, count, k, INFINITY)) + 2.0 * margin);
  // One float32 step above the rounded limit (as the eager path): no point under the float64 limit is lost.
  return columns_within(row, count, std::nextafter(static_cast<float>(limit), INFINITY), columns, capacity);
}

// The columns of an int32 row of E = 255^2 D_bytes whose D_bytes is at most `limit` (float64, in units
// of D): the limit in units of E, raised by 2^-40 over its few float64 roundings and floored, as the
// eager rules compute it (INT32_MAX for a limit past every E: +inf when nothing is kept yet).
constexpr double kByteScale = 65025.0;  // 255^2

int64_t columns_within_distance(const int32_t* row, int64_t count, double limit, int32_t* columns,
                                int64_t capacity) {
  const double raised = std::floor(limit * (kByteScale * (1.0 + 0x1p-40)));
  const int32_t limit_e = raised >= 2147483647.0 ? INT32_MAX : static_cast<int32_t>(raised);
  return columns_within(row, count, limit_e, columns, capacity);
}

// The same for 8-bit data's exact distances E = 255^2 D_bytes (ganbench.scoring.neighbours._top_k_bytes):
// with r the bytes' relative error, the limit is min(kth / (1 - r), t / 255^2 (1 + r) / (1 - r)), t the
// row's k-th smallest E, in units of E raised by 2^-40 and floored, as the eager rule computes it.
int64_t near_byte_candidates_row(const int32_t* row, int64_t count, double kth, double relative, int k,
                                 int32_t* columns, int64_t capacity) {
  if (!(kth > 0.0)) return 0;
  double limit = kth / (1.0 - relative);
  if (count >= k) {
    const double smallest = static_cast<double>(kth_smallest(row, count, k, INT32_MAX));
    limit = std::fmin(limit, smallest / kByteScale * (1.0 + relative) / (1.0 - relative));
  }
  return columns_within_distance(row, count, limit, columns, capacity);
}

// The same for queries rounded to bytes against 8-bit data (ganbench.scoring.neighbours._top_k_rounded):
// in root space the limit is min(sqrt(kth) w + eps, (sqrt(t) / 255 + eps) w + eps), w = 1 + 2 delta the
// float64 ranking's widening and eps the row's rounding slack, squared into units of E, raised by 2^-40
// and floored, as the eager rule computes it.
int64_t near_rounded_candidates_row(const int32_t* row, int64_t count, double kth, double slack, double widen,
                                    int k, int32_t* columns, int64_t capacity) {
  if (!(kth > 0.0)) return 0;
  double limit = std::sqrt(kth) * widen + slack;
  if (count >= k) {
    const double smallest = static_cast<double>(kth_smallest(row, count, k, INT32_MAX));
    limit = std::fmin(limit, (std::sqrt(smallest) / 255.0 + slack) * widen + slack);
  }
  return columns_within_distance(row, count, limit * limit, columns, capacity);
}

// Rows split over `threads` OpenMP threads, each with a row buffer of `columns` floats (and, with
// `doubles`, one of `columns` doubles). Built against the OpenMP runtime torch has loaded (the same
// libgomp.so.1), this is torch's own thread pool: its workers, still spinning after the tile's GEMM,
// take the rows at once instead of holding the cores.
// Returns 0, or 1 when a row buffer cannot be allocated (the caller raises).
template <typename Fold>
int over_rows(int64_t rows, int64_t columns, int threads, Fold fold, bool doubles = false) {
  int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
  {
    float* kept_values = static_cast<float*>(std::malloc(sizeof(float) * (columns + 1)));
    double* values = doubles ? static_cast<double*>(std::malloc(sizeof(double) * (columns + 1))) : nullptr;
    const bool ready = kept_values != nullptr && (values != nullptr || !doubles);
    if (!ready) failed = 1;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < rows; ++i) {
      if (ready) fold(i, kept_values, values);
    }
    std::free(kept_values);
    std::free(values);
  }
  return failed;
}

}  // namespace

extern "C" {

// Returns 0, or 1 when a row buffer cannot be allocated (the caller raises).
//   tile: (rows, columns) float32 with row stride `tile_stride`, T_ij on entry, D_ij on return
//   query_norms: (rows,) float32; running_minimum, nearest: (rows,) state of the pass
//   sums: (sigmas, rows) float32 with row stride `sums_stride`, shifted by running_minimum
//   scales: (sigmas,) 1 / (2 sigma^2) in float32, ascending (widest sigma first); sigma_rows:
//   (sigmas,) the row of `sums` each belongs to
//   threads: OpenMP threads (over_rows)
int ganbench_fused_rows(float* tile, int64_t tile_stride, int64_t rows, int64_t columns,
                        const float* query_norms, float* running_minimum, int64_t* nearest,
                        int64_t index_offset, float* sums, int64_t sums_stride, const float* scales,
                        const int64_t* sigma_rows, int64_t sigmas, float negligible_exponent,
                        int threads) {
  return over_rows(rows, columns, threads, [&](int64_t i, float* kept_values, double*) {
    fold_row(tile + i * tile_stride, columns, query_norms[i], running_minimum + i, nearest + i, index_offset,
             sums + i, sums_stride, scales, sigma_rows, sigmas, negligible_exponent, kept_values);
  });
}

// The same for 8-bit data's exact distances (fold_byte_row): tile (rows, columns) int32 holding
// ||b'||^2 - 2 a'.b' (left unchanged), query_norms ||a'||^2 (int32), running_minimum in E (float64).
int ganbench_fused_byte_rows(const int32_t* tile, int64_t tile_stride, int64_t rows, int64_t columns,
                             const int32_t* query_norms, double* running_minimum, int64_t* nearest,
                             int64_t index_offset, float* sums, int64_t sums_stride, const float* scales,
                             const int64_t* sigma_rows, int64_t sigmas, float negligible_exponent,
                             int threads) {
  return over_rows(rows, columns, threads, [&](int64_t i, float* kept_values, double*) {
    fold_byte_row(tile + i * tile_stride, columns, query_norms[i], running_minimum + i, nearest + i,
                  index_offset, sums + i, sums_stride, scales, sigma_rows, sigmas, negligible_exponent,
                  kept_values);
  });
}

// The same for digit products (fold_digit_row): products (digits, rows, columns) int32, digit d's tile
// `plane_stride` after digit 0's, each with row stride `tile_stride`; column_terms (columns,) and
// query_norms (rows,) float64; running_minimum in E (float64).
int ganbench_fused_digit_rows(const int32_t* products, int64_t plane_stride, int64_t tile_stride, int64_t rows,
                              int64_t columns, int64_t digits, const double* column_terms,
                              const double* query_norms, double* running_minimum, int64_t* nearest,
                              int64_t index_offset, float* sums, int64_t sums_stride, const float* scales,
                              const int64_t* sigma_rows, int64_t sigmas, float negligible_exponent,
                              int threads) {
  return over_rows(rows, columns, threads, [&](int64_t i, float* kept_values, double* values) {
    fold_digit_row(products + i * tile_stride, plane_stride, digits, column_terms, columns, query_norms[i],
                   running_minimum + i, nearest + i, index_offset, sums + i, sums_stride, scales, sigma_rows,
                   sigmas, negligible_exponent, values, kept_values);
  }, true);
}

// drift_and_group_minima_row over the bounds' rows: lower (rows, columns) float32, row stride `stride`,
// in place; drift (columns,) float32; edges (groups + 1,); minima (rows, groups) float32 out.
int ganbench_drift_and_group_minima(float* lower, int64_t stride, int64_t rows, const float* drift,
                                    const int64_t* edges, int64_t groups, float* minima, int threads) {
  return over_rows(rows, 0, threads, [&](int64_t i, float*, double*) {
    drift_and_group_minima_row(lower + i * stride, drift, edges, groups, minima + i * groups);
  });
}

// near_candidates_row over a tile's rows: tile (rows, columns) float32 T on entry, D on return;
// kth, margins (rows,) float64; columns (rows, capacity) int32 and counts (rows,) int64 out.
// Returns 1 when k is outside 1..kMaxCandidatesK, else 0.
int ganbench_near_candidates(float* tile, int64_t tile_stride, int64_t rows, int64_t columns,
                             const float* query_norms, const double* kth, const double* margins, int k,
                             int32_t* candidates, int64_t capacity, int64_t* counts, int threads) {
  if (k < 1 || k > kMaxCandidatesK) return 1;
  return over_rows(rows, columns, threads, [&](int64_t i, float*, double*) {
    counts[i] = near_candidates_row(tile + i * tile_stride, columns, query_norms[i], kth[i], margins[i], k,
                                    candidates + i * capacity, capacity);
  });
}

// near_byte_candidates_row over an int32 tile of E (left unchanged); kth (rows,) float64.
int ganbench_near_byte_candidates(const int32_t* tile, int64_t tile_stride, int64_t rows, int64_t columns,
                                  const double* kth, double relative, int k, int32_t* candidates,
                                  int64_t capacity, int64_t* counts, int threads) {
  if (k < 1 || k > kMaxCandidatesK) return 1;
  return over_rows(rows, columns, threads, [&](int64_t i, float*, double*) {
    counts[i] = near_byte_candidates_row(tile + i * tile_stride, columns, kth[i], relative, k,
                                         candidates + i * capacity, capacity);
  });
}

// near_rounded_candidates_row over an int32 tile of E (left unchanged); kth, slack (rows,) float64.
int ganbench_near_rounded_candidates(const int32_t* tile, int64_t tile_stride, int64_t rows, int64_t columns,
                                     const double* kth, const double* slack, double widen, int k,
                                     int32_t* candidates, int64_t capacity, int64_t* counts, int threads) {
  if (k < 1 || k > kMaxCandidatesK) return 1;
  return over_rows(rows, columns, threads, [&](int64_t i, float*, double*) {
    counts[i] = near_rounded_candidates_row(tile + i * tile_stride, columns, kth[i], slack[i], widen, k,
                                            candidates + i * capacity, capacity);
  });
}

// sum_j exp(-values_j * scale) as the pass computes it, for the tests' float64 comparison.
double ganbench_sum_of_terms(const float* values, int64_t count, float scale) {
  return sum_of_terms(values, count, scale);
}

}  // extern "C"
